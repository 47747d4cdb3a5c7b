#!/usr/bin/env python3
"""RSS of a proxy pair while N idle HTTP/1.1 keep-alive connections are held open through it.

usage: idle_conns.py PORT N [--upstream-port P] GROUP=PID[,PID...] ...

Opens N connections to 127.0.0.1:PORT, sends one `GET /` on each (all N written first, then all
N answers read, so the requests are in flight together), keeps the connections open and idle,
then reads VmRSS of each process group. Prints one JSON object:
  {"port", "conns", "ok" (answers with status 200), "statuses", "upstream_established"
   (ESTABLISHED TCP connections to --upstream-port, i.e. proxy-to-proxy connections, if given),
   "rss_kb": {GROUP: {"idle_before", "open", "after_close"}}}
"""
import json, socket, subprocess, sys, time


def rss_kb(pids):
    tot = 0
    for p in pids:
        with open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    tot += int(line.split()[1])
    return tot


def snap(groups):
    return {name: rss_kb(pids) for name, pids in groups.items()}


def read_response(s):
    """Reads one HTTP/1.1 response (Content-Length or chunked body); returns the status code."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
    if "content-length" in hdrs:
        need = int(hdrs["content-length"]) - len(rest)
        while need > 0:
            chunk = s.recv(min(need, 65536))
            if not chunk:
                raise ConnectionError("closed mid-body")
            need -= len(chunk)
    elif hdrs.get("transfer-encoding", "").lower() == "chunked":
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError("closed mid-body")
            rest += chunk
    return status


def established(port):
    try:
        out = subprocess.run(["ss", "-Htn", "state", "established", f"( dport = :{port} )"], capture_output=True, text=True, check=True).stdout
        return len([l for l in out.splitlines() if l.strip()])
    except (OSError, subprocess.CalledProcessError):
        return None


def main():
    args = sys.argv[1:]
    port, n = int(args.pop(0)), int(args.pop(0))
    upstream = None
    if args and args[0] == "--upstream-port":
        args.pop(0)
        upstream = int(args.pop(0))
    groups = {}
    for g in args:
        name, pids = g.split("=", 1)
        groups[name] = [p for p in pids.split(",") if p]
    before = snap(groups)
    socks, statuses = [], {}
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
    req = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: idle_conns\r\n\r\n".encode()
    for s in socks:
        s.sendall(req)
    for s in socks:
        try:
            st = str(read_response(s))
        except (OSError, ConnectionError, ValueError) as e:
            st = f"error:{type(e).__name__}"
        statuses[st] = statuses.get(st, 0) + 1
    time.sleep(1.0)   # let the proxies settle (buffers, pools) with everything idle and open
    up = established(upstream) if upstream else None
    opened = snap(groups)
    for s in socks:
        s.close()
    time.sleep(1.0)
    after = snap(groups)
    print(json.dumps({
        "port": port, "conns": n, "ok": statuses.get("200", 0), "statuses": statuses, "upstream_established": up,
        "rss_kb": {g: {"idle_before": before[g], "open": opened[g], "after_close": after[g]} for g in groups},
    }))


if __name__ == "__main__":
    main()
