"""An echo server on several processes that share one port (SO_REUSEPORT; Linux, BSD, macOS).

Run: python docs/examples/multiprocess_server.py [--workers N] HOST PORT

The parent forks N workers (default: one per CPU). Each worker runs its own event loop and calls
``asyncws.start_server(..., reuse_port=True)`` on the same HOST and PORT, so each has its own
listening socket on that port and the kernel spreads new connections over them (on Linux, by a
hash of the client's address and port). Each 101 response carries the worker's process id in an
``X-Worker-PID`` header, to see which worker took a connection.

SIGTERM or SIGINT (Ctrl-C) to the parent stops the workers: each stops listening, closes its
connections with 1001 (going away) and exits; the parent exits once they all have, with status 0
(1 when a worker failed). A worker whose parent is gone (killed with SIGKILL) stops by itself.
PORT must not be 0: with port 0 every worker would get a port of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

import asyncws


async def echo(ws: asyncws.Websocket) -> None:
    async for message in ws:
        await ws.send(message)


def say(line: str) -> None:
    # One write per line, so that the workers' lines do not interleave on a shared stdout.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def watch_parent(parent: int, stop: asyncio.Event) -> None:
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    stop.set()  # the parent died without stopping us: don't linger as an orphan


async def worker(host: str, port: int, parent: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.ensure_future(watch_parent(parent, stop))
    server = await asyncws.start_server(
        echo,
        host,
        port,
        reuse_port=True,
        extra_headers={"X-Worker-PID": str(os.getpid())},
    )
    say(f"worker {os.getpid()} serving on ws://{host}:{port}")
    async with server:  # on the way out: close(), then wait_closed()
        await stop.wait()
    watcher.cancel()
    say(f"worker {os.getpid()} stopped")


def run_worker(host: str, port: int, parent: int) -> int:
    try:
        asyncio.run(worker(host, port, parent))
    except Exception as exc:
        print(f"worker {os.getpid()} failed: {exc!r}", file=sys.stderr, flush=True)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    args = parser.parse_args()
    if args.port == 0:
        parser.error("give a port number: with 0, every worker would listen on a port of its own")

    # Fork before the parent creates any event loop: a child must not inherit one.
    parent = os.getpid()
    children: list[int] = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                status = run_worker(args.host, args.port, parent)
            finally:
                os._exit(status)  # never return into the parent's code
        children.append(pid)

    def stop_workers(signum: int = signal.SIGTERM, frame: object = None) -> None:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop_workers)
    signal.signal(signal.SIGINT, stop_workers)

    status = 0
    remaining = set(children)
    while remaining:
        pid, wait_status = os.wait()
        remaining.discard(pid)
        if os.waitstatus_to_exitcode(wait_status) != 0 and status == 0:
            status = 1
            stop_workers()  # one worker failed (e.g. the port is taken): stop the others
    return status


if __name__ == "__main__":
    sys.exit(main())
