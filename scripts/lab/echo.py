#!/usr/bin/env python3
"""TCP + UDP echo server for scripts/netns-lab.

    echo.py [--port 7] ADDRESS...

Listens on every ADDRESS (IPv4 or IPv6 literal) at --port, for TCP and UDP.
TCP: one thread per connection, echoes every byte back until the client
closes. UDP: every datagram is sent back to its source. Runs in the
foreground until SIGTERM/SIGINT.
"""

import argparse
import signal
import socket
import socketserver
import sys
import threading


class TCPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        sock.settimeout(300)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                sock.sendall(data)
        except OSError:
            pass


class UDPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        try:
            sock.sendto(data, self.client_address)
        except OSError:
            pass


def family_of(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def make_server(base, handler, addr, port):
    cls = type(
        "Echo" + base.__name__,
        (socketserver.ThreadingMixIn, base),
        {
            "address_family": family_of(addr),
            "allow_reuse_address": True,
            "daemon_threads": True,
            "request_queue_size": 1024,
        },
    )
    return cls((addr, port), handler)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=7)
    ap.add_argument("addresses", nargs="+")
    args = ap.parse_args()

    servers = []
    for addr in args.addresses:
        servers.append(make_server(socketserver.TCPServer, TCPHandler, addr, args.port))
        servers.append(make_server(socketserver.UDPServer, UDPHandler, addr, args.port))

    stop = threading.Event()

    def on_signal(_signum, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    for srv in servers:
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
        kind = "tcp" if srv.socket_type == socket.SOCK_STREAM else "udp"
        print(f"echo: {kind} {srv.server_address[0]} port {args.port}", flush=True)

    stop.wait()
    for srv in servers:
        srv.shutdown()
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
