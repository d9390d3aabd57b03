#!/usr/bin/env python3
"""A SOCKS5 proxy whose every reply comes late: like a distant proxy, or Tor.

slow_socks.py --listen ADDR --port PORT --delay SECONDS

No authentication, CONNECT only (IPv4, IPv6 and domain names); the method reply and the CONNECT
reply each wait --delay seconds. Test-only: it shows that an event loop under socksify keeps its
connections concurrent while each handshake takes a while.
"""
import argparse
import asyncio
import ipaddress
import socket
import struct


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except OSError:
            pass


async def handle(reader, writer, delay):
    try:
        ver, n = await reader.readexactly(2)
        await reader.readexactly(n)
        await asyncio.sleep(delay)
        writer.write(b"\x05\x00")
        ver, cmd, _, atyp = await reader.readexactly(4)
        if atyp == 1:
            host = socket.inet_ntop(socket.AF_INET, await reader.readexactly(4))
        elif atyp == 4:
            host = socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
        else:
            (length,) = await reader.readexactly(1)
            host = (await reader.readexactly(length)).decode()
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        await asyncio.sleep(delay)
        if cmd != 1:
            writer.write(b"\x05\x07\x00\x01" + bytes(6))
            writer.close()
            return
        try:
            up_r, up_w = await asyncio.open_connection(host, port)
        except OSError:
            writer.write(b"\x05\x05\x00\x01" + bytes(6))
            writer.close()
            return
        bound = up_w.get_extra_info("sockname")
        ip = ipaddress.ip_address(bound[0])
        atyp, raw = (1, ip.packed) if ip.version == 4 else (4, ip.packed)
        writer.write(bytes([5, 0, 0, atyp]) + raw + struct.pack("!H", bound[1]))
        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
    except (asyncio.IncompleteReadError, ConnectionError, OSError):
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", default="0.0.0.0")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--delay", type=float, default=0.2)
    a = ap.parse_args()
    server = await asyncio.start_server(lambda r, w: handle(r, w, a.delay), a.listen, a.port, backlog=512)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
