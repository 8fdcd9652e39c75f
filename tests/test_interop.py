"""Interoperability with a real foreign implementation, the ``websockets`` package: its client
against our server and our client against its server, for text and binary from 0 bytes to
1 MiB, fragmented messages, ping/pong, close codes and reasons."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("websockets")
from websockets.asyncio.client import connect as ws_connect  # noqa: E402
from websockets.asyncio.server import serve as ws_serve  # noqa: E402
from websockets.exceptions import ConnectionClosed as WsClosed  # noqa: E402

import asyncws  # noqa: E402

from .conftest import Server, run  # noqa: E402

PAYLOADS = [b"", "", b"\x00\xff" * 3, "héllo ☃", b"b" * 125, "t" * 126, b"x" * 65536,
            "é" * (2**19), bytes(range(256)) * 4096]


def test_websockets_client_against_asyncws_server() -> None:
    async def main() -> None:
        async with Server(max_size=2**21) as server:
            async with ws_connect(server.url("/interop"), max_size=2**21, compression=None) as c:
                for payload in PAYLOADS:
                    await c.send(payload)
                    assert await c.recv() == payload
                # A fragmented message (websockets sends an iterable as fragments).
                await c.send(["frag", "ment", "ed ☃"])
                assert await c.recv() == "fragmented ☃"
                await c.send([b"a", b"", b"bc"])
                assert await c.recv() == b"abc"
                # Our server answers pings.
                latency = await asyncio.wait_for(await c.ping(b"p"), 5)
                assert latency >= 0
                await c.close(4321, "interop bye")
                assert c.close_code == 4321 and c.close_reason == "interop bye"

    run(main())


def test_websockets_client_sees_our_close_code() -> None:
    async def handler(ws: asyncws.Websocket) -> None:
        await ws.recv()
        await ws.close(4003, "policy")

    async def main() -> None:
        async with Server(handler) as server:
            async with ws_connect(server.url()) as c:
                await c.send("x")
                with pytest.raises(WsClosed):
                    await c.recv()
                assert c.close_code == 4003 and c.close_reason == "policy"

    run(main())


def test_asyncws_client_against_websockets_server() -> None:
    received_close = {}

    async def handler(conn) -> None:  # websockets' connection
        try:
            async for msg in conn:
                if msg == "fragments please":
                    await conn.send(["one ", "two ", "three"])
                    await conn.send([b"\x01", b"\x02"])
                else:
                    await conn.send(msg)
        finally:
            received_close["code"] = conn.close_code
            received_close["reason"] = conn.close_reason

    async def main() -> None:
        async with ws_serve(handler, "127.0.0.1", 0, max_size=2**21, compression=None) as server:
            port = list(server.sockets)[0].getsockname()[1]
            ws = await asyncws.connect(f"ws://127.0.0.1:{port}/", max_size=2**21)
            for payload in PAYLOADS:
                await ws.send(payload)
                assert await ws.recv() == payload
            await ws.send("fragments please")
            assert await ws.recv() == "one two three"
            assert await ws.recv() == b"\x01\x02"
            rtt = await asyncio.wait_for(await ws.ping(b"ours"), 5)
            assert rtt >= 0
            await ws.close(4000, "asyncws bye")
            assert ws.close_code == 4000 and ws.close_reason == "asyncws bye"
            assert await ws.recv() is None

    run(main())
    assert received_close == {"code": 4000, "reason": "asyncws bye"}


def test_websockets_server_closing_first() -> None:
    async def handler(conn) -> None:
        await conn.recv()
        await conn.close(1001, "server going away")

    async def main() -> None:
        async with ws_serve(handler, "127.0.0.1", 0) as server:
            port = list(server.sockets)[0].getsockname()[1]
            ws = await asyncws.connect(f"ws://127.0.0.1:{port}/")
            await ws.send("hi")
            assert await ws.recv() is None
            assert ws.close_code == 1001 and ws.close_reason == "server going away"
            await asyncio.wait_for(ws.closed, 5)

    run(main())
