#!/usr/bin/env python3
"""The server pod's apps for tests/tests/netns_mesh.rs.

HTTP on 0.0.0.0:HTTP_PORT: answers 200 to every method with a body naming what it received:
    METHOD PATH
    peer=<x-trustmesh-peer header, or "none">
TCP echo on 0.0.0.0:TCP_PORT: sends back every byte it reads.

usage: app.py HTTP_PORT TCP_PORT
"""
import http.server
import socketserver
import sys
import threading


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = f"{self.command} {self.path}\npeer={self.headers.get('x-trustmesh-peer', 'none')}\n".encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = answer

    def log_message(self, fmt, *args):
        sys.stderr.write("app: " + (fmt % args) + "\n")


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(4096)
            if not data:
                return
            self.request.sendall(data)


class TcpServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


if __name__ == "__main__":
    http_port, tcp_port = int(sys.argv[1]), int(sys.argv[2])
    echo = TcpServer(("0.0.0.0", tcp_port), Echo)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    web = http.server.ThreadingHTTPServer(("0.0.0.0", http_port), Handler)
    web.daemon_threads = True
    print(f"app: http on {http_port}, echo on {tcp_port}", file=sys.stderr, flush=True)
    web.serve_forever()
