"""Memory of intercepted keep-alive connections: the gateway's RSS before, with N connections that
each made one request and stay open, and after they close (2 s and 32 s later).

    python3 keepalive_rss.py PROXY_HOST:PORT GATEWAY_PID CA_PEM N AI_HOST

The gateway must intercept AI_HOST and reach an origin for it (`[upstream.resolve]`), with
`[proxy] max_connections_per_client = 0` (every connection comes from one address) and policies
that allow `GET /v1/models`. Loopback only.
"""
import socket, ssl, sys, time, os, threading

proxy_host, proxy_port = sys.argv[1].split(":")
pid = int(sys.argv[2]); ca = sys.argv[3]; n = int(sys.argv[4]); host = sys.argv[5]
def rss():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["http/1.1"])
def one():
    s = socket.create_connection((proxy_host, int(proxy_port)))
    s.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head
    t = ctx.wrap_socket(s, server_hostname=host)
    t.sendall(f"GET /v1/models HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += t.recv(65536)
    h, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in h.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(body) < length:
        body += t.recv(65536)
    return t
before = rss()
conns = [one() for _ in range(n)]
time.sleep(1)
held = rss()
for c in conns:
    c.close()
time.sleep(2)
closed = rss()
time.sleep(30)
later = rss()
print(f"connections {n}: before {before} KiB, held {held} KiB ({(held-before)/n:.1f} KiB each), "
      f"closed+2s {closed} KiB, closed+32s {later} KiB (returned {(held-later)/max(held-before,1)*100:.0f}%)")
