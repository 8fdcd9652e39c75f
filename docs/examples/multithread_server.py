"""An echo server on several threads of one process, one event loop each, sharing one port
(SO_REUSEPORT; Linux, BSD, macOS).

Run: python docs/examples/multithread_server.py [--threads N] HOST PORT

It starts N threads (default: one per CPU). Each runs its own event loop and calls
``asyncws.start_server(..., reuse_port=True)`` on the same HOST and PORT, so each has its own
listening socket on that port and the kernel spreads new connections over them (on Linux, by a
hash of the client's address and port). A connection stays on the thread that accepted it. Each
101 response carries that thread's name in an ``X-Worker-Thread`` header.

On a free-threaded CPython (3.14t and later) the threads run in parallel, one core each; with the
GIL they take turns on one core (use docs/examples/multiprocess_server.py there). The first
line printed says which.

SIGTERM or SIGINT (Ctrl-C) stops it: each thread stops listening, closes its connections with
1001 (going away) and ends; the process exits once they all have, with status 0 (1 when a thread
failed). PORT must not be 0: with port 0 every thread would get a port of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading

import asyncws


async def echo(ws: asyncws.Websocket) -> None:
    async for message in ws:
        await ws.send(message)


def say(line: str) -> None:
    # One write per line, so that the threads' lines do not interleave.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Worker(threading.Thread):
    """One thread, one event loop, one listening socket on the shared port."""

    def __init__(self, index: int, host: str, port: int) -> None:
        super().__init__(name=f"worker-{index}")
        self.host = host
        self.port = port
        self.ready = threading.Event()  # set once serving, or once it failed to
        self.failed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception as exc:
            self.failed = True
            print(f"{self.name} failed: {exc!r}", file=sys.stderr, flush=True)
        finally:
            self.ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        server = await asyncws.start_server(
            echo,
            self.host,
            self.port,
            reuse_port=True,
            extra_headers={"X-Worker-Thread": self.name},
        )
        say(f"{self.name} serving on ws://{self.host}:{self.port}")
        self.ready.set()
        async with server:  # on the way out: close(), then wait_closed()
            await self._stop_requested.wait()
        say(f"{self.name} stopped")

    def stop(self) -> None:
        """Ask the thread's loop to shut its server down (from any thread)."""
        if self._loop is not None and self._stop_requested is not None:
            try:
                # Only this call may cross threads: an event loop and everything on it (servers,
                # connections) are used from the loop's own thread.
                self._loop.call_soon_threadsafe(self._stop_requested.set)
            except RuntimeError:  # its loop is already closed
                pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    args = parser.parse_args()
    if args.port == 0:
        parser.error("give a port number: with 0, every thread would listen on a port of its own")

    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    say("GIL enabled: the threads take turns on one core" if gil
        else "free-threaded: the threads run in parallel")

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stopping.set())

    workers = [Worker(i, args.host, args.port) for i in range(args.threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.ready.wait()
    # Wake up now and then: a signal handler runs in this thread only between two waits.
    while not stopping.wait(0.5):
        if any(not worker.is_alive() for worker in workers):
            break  # one thread failed (e.g. the port is taken): stop the others
    for worker in workers:
        worker.stop()
    for worker in workers:
        worker.join()
    return 1 if any(worker.failed for worker in workers) else 0


if __name__ == "__main__":
    sys.exit(main())
