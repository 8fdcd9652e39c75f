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


def test_large_messages_read_straight_into_the_message_on_uvloop() -> None:
    # On uvloop a connection reads with data_received, and hands the transport a buffered
    # stand-in while a large payload arrives; messages must come out the same, and the
    # transport must be given back to the connection afterwards. (uvloop's own transports:
    # on aiofastnet's a connection always reads into a buffer.)
    import os

    seen: list[object] = []

    async def handler(ws: asyncws.Websocket) -> None:
        async for msg in ws:
            seen.append(type(ws.writer.get_protocol()).__name__)
            await ws.send(msg)

    async def main() -> None:
        async with Server(handler, max_size=None, transport="asyncio") as server:
            ws = await asyncws.connect(server.url(), max_size=None, transport="asyncio")
            blob = os.urandom(3 * 2**20 + 5)
            text = "ü" * 600000
            for payload in [blob, text, b"small", blob[:200000]]:
                await ws.send(payload)
                assert await ws.recv() == payload
            assert ws.writer.get_protocol() is ws
            await ws.close()
        assert seen == ["Websocket"] * 4

    async def bounded() -> None:
        await asyncio.wait_for(main(), 20)

    uvloop.run(bounded())


def test_tls_on_uvloop_reads_into_the_buffer(contexts) -> None:
    # uvloop's TLS transport gives a data_received protocol each TLS record in a fresh 256 KiB
    # bytes object; a connection there hands the transport a buffered stand-in instead. Both
    # sides must switch, messages must come out the same, and reading paused at max_queue must
    # resume with what the transport already decrypted (the peer waits for the answers).
    server_ctx, client_ctx = contexts
    seen: list[str] = []

    async def handler(ws: asyncws.Websocket) -> None:
        async for msg in ws:
            seen.append(type(ws.writer.get_protocol()).__name__)
            await ws.send(msg)

    async def main() -> None:
        # uvloop's own TLS transport, not aiofastnet's (transport="auto" picks that for TLS).
        async with Server(handler, ssl=server_ctx, max_size=None, transport="asyncio") as server:
            ws = await asyncws.connect(
                server.url(scheme="wss"), ssl=client_ctx, max_size=None, max_queue=4,
                transport="asyncio",
            )
            for payload in ["text", b"\x00" * 300000, "é" * 70000, b"small"]:
                await ws.send(payload)
                assert await ws.recv() == payload
            assert type(ws.writer.get_protocol()).__name__ == "_BufferedReads"
            for i in range(200):  # far past max_queue: the client pauses reading
                await ws.send(str(i))
            assert [await ws.recv() for _ in range(200)] == [str(i) for i in range(200)]
            await ws.close()
            assert ws.close_code == 1000 and await ws.recv() is None
        assert seen[1:] == ["_BufferedReads"] * (len(seen) - 1) and len(seen) == 204

    async def bounded() -> None:
        await asyncio.wait_for(main(), 20)

    uvloop.run(bounded())
