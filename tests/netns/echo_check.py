#!/usr/bin/env python3
"""Connects to HOST:PORT, sends a line and prints what comes back within 3 s:
`echo: <text>` when the line came back, `closed` when the peer closed (or reset) without
echoing it, `timeout` when nothing happened, `refused` when the connection was refused.

usage: echo_check.py HOST PORT
"""
import socket
import sys

host, port = sys.argv[1], int(sys.argv[2])
line = b"hello trustmesh\n"
try:
    s = socket.create_connection((host, port), timeout=3)
except ConnectionRefusedError:
    print("refused")
    sys.exit(0)
s.settimeout(3)
try:
    s.sendall(line)
    got = b""
    while len(got) < len(line):
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    print(f"echo: {got.decode(errors='replace').strip()}" if got else "closed")
except (ConnectionResetError, BrokenPipeError):
    print("closed")
except socket.timeout:
    print("timeout")
