#!/usr/bin/env python3
"""Time to the first echoed byte of a new TCP connection: connect, send one byte, read it
back; N times, one after another. Prints `ok=K median_ms=M min_ms=M`.

    first_byte.py HOST PORT -n N                       # plain connect (socksified from outside)
    first_byte.py HOST PORT -n N --hop IP:PORT [...]   # the floor: a hand-written SOCKS5 chain

With --hop (in chain order) this program is its own SOCKS5 client, as a careful hand-written
one is: each hop gets its greeting and its CONNECT (to the next hop, or to HOST:PORT) in one
write — one round trip a hop — and each reply is read whole before the next hop's request.
"""
import argparse
import ipaddress
import socket
import statistics
import struct
import time


def request(host, port):
    ip = ipaddress.ip_address(host)
    atyp = b"\x01" if ip.version == 4 else b"\x04"
    return b"\x05\x01\x00" + atyp + ip.packed + struct.pack(">H", port)


def read_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed by the proxy")
        buf += chunk
    return buf


def once(host, port, hops):
    if not hops:
        s = socket.create_connection((host, port))
    else:
        first = hops[0]
        s = socket.create_connection(first)
        nexts = hops[1:] + [(host, port)]
        for h, p in nexts:
            s.sendall(b"\x05\x01\x00" + request(h, p))
            choice = read_exact(s, 2)
            if choice != b"\x05\x00":
                raise ConnectionError("method selection %r" % choice)
            head = read_exact(s, 5)
            if head[1] != 0:
                raise ConnectionError("reply code %d" % head[1])
            rest = {1: 5, 4: 17, 3: head[4] + 2}[head[3]]
            read_exact(s, rest)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(b"x")
    if read_exact(s, 1) != b"x":
        raise ConnectionError("wrong echo")
    s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("-n", type=int, default=5)
    ap.add_argument("--hop", action="append", default=[])
    a = ap.parse_args()
    hops = [(h.rsplit(":", 1)[0], int(h.rsplit(":", 1)[1])) for h in a.hop]
    times = []
    for _ in range(a.n):
        t = time.monotonic()
        try:
            once(a.host, a.port, hops)
        except OSError as e:
            print("error=%s" % e)
            continue
        times.append((time.monotonic() - t) * 1000)
    if times:
        print("ok=%d median_ms=%.1f min_ms=%.1f" % (len(times), statistics.median(times), min(times)))
    else:
        print("ok=0")


if __name__ == "__main__":
    main()
