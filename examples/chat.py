"""A chat server: the request path is the room, and every message sent in a room reaches every
connection in it, on every worker process and every machine that uses the same Redis.

Run one worker:               python examples/chat.py 127.0.0.1 8000
Run any number of workers:    python examples/chat.py --redis redis://127.0.0.1:6379 127.0.0.1 8000
                              (start it as many times as you like: the workers share the port
                              with reuse_port, and rooms span them through Redis)
Chat:                         python -m asyncws ws://127.0.0.1:8000/lobby

Without --redis the rooms are this process's only (asyncws.fanout.LocalFanout). SIGTERM or
SIGINT (Ctrl-C) stops a worker: it closes its connections with 1001 (going away) and exits 0.
``python -m asyncws serve --chat --workers N --redis URL HOST PORT`` forks N such workers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

import asyncws
from asyncws.fanout import FanoutUnavailable, LocalFanout, RedisFanout


async def chat(hub: LocalFanout | RedisFanout, ws: asyncws.Websocket) -> None:
    assert ws.request is not None
    room = ws.request.path  # e.g. "/lobby"
    # The subscription ends by itself when ws closes. Awaiting it (Redis confirms) before
    # reading means a sender always gets its own messages back.
    await hub.subscribe(ws, room)
    async for message in ws:  # str or bytes: it reaches the room as text or binary
        try:
            await hub.publish(room, message)
        except FanoutUnavailable as exc:  # Redis is down for now: drop this message
            print(exc, file=sys.stderr, flush=True)


async def main(host: str, port: int, redis_url: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    hub = RedisFanout(redis_url) if redis_url else LocalFanout()
    async with hub:
        server = await asyncws.start_server(
            lambda ws: chat(hub, ws), host, port, reuse_port=True
        )
        # One write per line: several workers may share this output.
        sys.stdout.write(f"chat worker {os.getpid()} on ws://{host}:{port}\n")
        sys.stdout.flush()
        async with server:  # on the way out: every connection closed with 1001
            await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A chat server: rooms by path.")
    parser.add_argument("--redis", metavar="URL", help="share the rooms through this Redis")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port, args.redis))
