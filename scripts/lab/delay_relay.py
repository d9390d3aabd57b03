#!/usr/bin/env python3
"""A path with a real delay, for round-trip measurements (scripts/bench): every chunk
received on one side is handed to the other side DELAY seconds later, in order, in both
directions. A relay stands in front of a proxy (this kernel has no netem qdisc).

    delay_relay.py --listen ADDR --port P --to ADDR:PORT [--delay 0.025]
"""
import argparse
import socket
import asyncio


async def pump(reader, writer, delay):
    loop = asyncio.get_running_loop()
    # Chunks leave in arrival order: each is due `delay` after it came.
    queue = asyncio.Queue()

    async def sender():
        while True:
            due, chunk = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if chunk is None:
                break
            writer.write(chunk)
            await writer.drain()
        try:
            writer.write_eof()
        except OSError:
            pass

    task = asyncio.create_task(sender())
    try:
        while True:
            chunk = await reader.read(65536)
            queue.put_nowait((loop.time() + delay, chunk or None))
            if not chunk:
                break
        await task
    except (ConnectionError, OSError):
        task.cancel()


async def serve(args):
    host, port = args.to.rsplit(":", 1)

    async def handle(cr, cw):
        try:
            pr, pw = await asyncio.open_connection(host, int(port))
        except OSError:
            cw.close()
            return
        for w in (cw, pw):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(pump(cr, pw, args.delay), pump(pr, cw, args.delay), return_exceptions=True)
        for w in (cw, pw):
            w.close()

    server = await asyncio.start_server(handle, args.listen, args.port, reuse_address=True)
    async with server:
        await server.serve_forever()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--to", required=True)
    p.add_argument("--delay", type=float, default=0.025)
    asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
