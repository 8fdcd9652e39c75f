"""asyncws on uvloop: its transports are not asyncio's classes, and must work all the same."""

from __future__ import annotations

import asyncio

import pytest

import asyncws

from .conftest import Server

uvloop = pytest.importorskip("uvloop")


def test_echo_and_close_on_uvloop() -> None:
    async def main() -> None:
        assert "uvloop" in type(asyncio.get_running_loop()).__module__
        async with Server() as server:
            ws = await asyncws.connect(server.url())
            for payload in ["text", b"\x00" * 70000, "é" * 1000]:
                await ws.send(payload)
                assert await ws.recv() == payload
            for i in range(100):  # pipelined
                await ws.send(str(i))
            assert [await ws.recv() for _ in range(100)] == [str(i) for i in range(100)]
            await ws.close()
            assert ws.close_code == 1000 and await ws.recv() is None

    async def bounded() -> None:
        await asyncio.wait_for(main(), 20)

    uvloop.run(bounded())
