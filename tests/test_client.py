"""Client features: connect() as an async context manager, redirects, request headers."""

from __future__ import annotations

import asyncio

import pytest

import asyncws

from .conftest import Server, run


def test_connect_as_context_manager_closes() -> None:
    async def main() -> None:
        async with Server() as server:
            async with asyncws.connect(server.url()) as ws:
                await ws.send("inside")
                assert await ws.recv() == "inside"
            assert ws.close_code == 1000 and ws.closed.done()

    run(main())


def test_connect_rejects_bad_url_at_call_time() -> None:
    with pytest.raises(asyncws.InvalidURI):
        asyncws.connect("http://not-a-websocket/")


async def redirecting_server(location: str, status: int = 302) -> asyncio.AbstractServer:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            f"HTTP/1.1 {status} Moved\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()
        )
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


def test_redirects_are_followed() -> None:
    async def main() -> None:
        async with Server() as server:
            hop2 = await redirecting_server(server.url("/final"), 307)
            port2 = hop2.sockets[0].getsockname()[1]
            hop1 = await redirecting_server(f"http://127.0.0.1:{port2}/second", 301)
            port1 = hop1.sockets[0].getsockname()[1]
            async with asyncws.connect(f"ws://127.0.0.1:{port1}/first") as ws:
                await ws.send("arrived")
                assert await ws.recv() == "arrived"
            with pytest.raises(asyncws.InvalidHandshake) as info:
                await asyncws.connect(f"ws://127.0.0.1:{port1}/first", max_redirects=1)
            assert "redirects" in str(info.value)
            hop1.close()
            hop2.close()

    run(main())


def test_redirect_loop_is_bounded() -> None:
    async def main() -> None:
        loop_server = await redirecting_server("/again")
        port = loop_server.sockets[0].getsockname()[1]
        with pytest.raises(asyncws.InvalidHandshake):
            await asyncws.connect(f"ws://127.0.0.1:{port}/", max_redirects=3)
        loop_server.close()

    run(main())


def test_redirect_from_wss_to_ws_is_refused() -> None:
    from asyncws.client import _redirect_url

    assert _redirect_url("ws://a/x", "/y") == "ws://a/y"
    assert _redirect_url("ws://a/x", "https://b/z") == "wss://b/z"
    with pytest.raises(asyncws.InvalidHandshake):
        _redirect_url("wss://a/x", "http://b/z")
