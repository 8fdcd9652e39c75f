"""Load: 2,000 concurrent connections x 10 round trips each, nothing lost, nothing left behind.

The server runs in-process, so each connection costs two file descriptors here: the soft
RLIMIT_NOFILE is raised to the hard limit and the test is skipped (with the reason) if that is
below ~4,200. ``ASYNCWS_STRESS=1`` raises the count (see also ``tests/load_10k.py``, the
10,000-connection benchmark documented in docs/hostile.md). No speed is asserted.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

import asyncws

from . import _raw

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def test_concurrent_connections(caplog):
    caplog.set_level(logging.WARNING)
    n = _raw.scaled(2000, 4000)
    rounds = 10
    needed = 2 * n + 200
    got = _raw.raise_nofile(needed)
    if got < needed:
        pytest.skip(f"RLIMIT_NOFILE soft limit reaches only {got}, {needed} are needed")
    handled = []

    async def echo(ws):
        count = 0
        async for msg in ws:
            await ws.send(msg)
            count += 1
        handled.append(count)

    async def main():
        async with _raw.serving(echo, backlog=min(n, 4096)) as port:
            sem = asyncio.Semaphore(200)  # connect in waves; all stay open together

            async def connect():
                async with sem:
                    return await asyncws.connect(f"ws://127.0.0.1:{port}/", open_timeout=30)

            conns = await asyncio.gather(*(connect() for _ in range(n)))
            assert len(conns) == n and all(ws.open for ws in conns)

            async def talk(i, ws):
                for r in range(rounds):
                    msg = f"{i}:{r}" if r % 2 else f"{i}:{r}".encode() * 10
                    await ws.send(msg)
                    got = await asyncio.wait_for(ws.recv(), 60)
                    assert got == msg
                await ws.close()
                return ws.close_code

            codes = await asyncio.gather(*(talk(i, ws) for i, ws in enumerate(conns)))
            assert codes == [1000] * n
            for _ in range(500):  # handlers finish after the closing handshakes
                if len(handled) == n:
                    break
                await asyncio.sleep(0.01)
            assert sorted(handled) == [rounds] * n
            assert await _raw.wait_no_other_tasks(10) == []

    _raw.run(main(), timeout=90)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors
