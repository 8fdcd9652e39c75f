"""Load benchmark (not a test: pytest does not collect it): N concurrent WebSocket connections
to an asyncws echo server running in a subprocess, R round trips on each.

Reports the server's RSS per open connection and the round-trip message rate. Usage:

    python tests/load_10k.py [--connections 10000] [--rounds 10] [--size 32]

Needs about N + 100 file descriptors in each process (the soft RLIMIT_NOFILE is raised to the
hard limit in both). The backend follows ASYNCWS_NO_SPEEDUPS like everything else.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _raw  # noqa: E402

import asyncws  # noqa: E402


async def bench(n: int, rounds: int, size: int) -> None:
    with _raw.ServerProcess(mode="echo", nofile=n + 200, backlog=4096) as srv:
        url = f"ws://127.0.0.1:{srv.port}/"
        await asyncio.sleep(0.3)
        base = srv.rss()
        sem = asyncio.Semaphore(500)

        async def connect() -> asyncws.Websocket:
            async with sem:
                return await asyncws.connect(url, open_timeout=60)

        t0 = time.perf_counter()
        conns = await asyncio.gather(*(connect() for _ in range(n)))
        t_connect = time.perf_counter() - t0
        await asyncio.sleep(0.5)
        open_rss = srv.rss()

        payload = "x" * size

        async def talk(ws: asyncws.Websocket) -> int:
            for _ in range(rounds):
                await ws.send(payload)
                assert await ws.recv() == payload
            return rounds

        t0 = time.perf_counter()
        done = sum(await asyncio.gather(*(talk(ws) for ws in conns)))
        t_talk = time.perf_counter() - t0
        peak = srv.rss()

        t0 = time.perf_counter()
        await asyncio.gather(*(ws.close() for ws in conns))
        t_close = time.perf_counter() - t0
        await asyncio.sleep(0.5)
        after = srv.rss()

    print(f"backend            {asyncws._kernels.BACKEND}  (python {sys.version.split()[0]})")
    print(f"connections        {n}  (opened in {t_connect:.2f} s: {n / t_connect:,.0f}/s)")
    print(f"server RSS         idle {base / 1024:.1f} MiB, {n} open {open_rss / 1024:.1f} MiB, "
          f"after traffic {peak / 1024:.1f} MiB, all closed {after / 1024:.1f} MiB")
    print(f"memory/connection  {(open_rss - base) / n:.1f} KiB (open, idle)")
    print(f"round trips        {done} of {n * rounds} in {t_talk:.2f} s: "
          f"{done / t_talk:,.0f} round trips/s = {2 * done / t_talk:,.0f} messages/s")
    print(f"closing            {n} closing handshakes in {t_close:.2f} s")
    if done != n * rounds:
        raise SystemExit("messages were lost")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--size", type=int, default=32, help="message size in bytes")
    args = ap.parse_args()
    got = _raw.raise_nofile(args.connections + 200)
    if got < args.connections + 200:
        raise SystemExit(f"RLIMIT_NOFILE reaches only {got}; need {args.connections + 200}")
    asyncio.run(bench(args.connections, args.rounds, args.size))


if __name__ == "__main__":
    main()
