"""Server features: the Server wrapper (asyncio.Server behaviour, graceful 1001 shutdown),
origins, subprotocols, process_request, headers, Unix sockets, broadcast."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile

import pytest

import asyncws

from .conftest import Server, echo_handler, run


def test_server_behaves_as_asyncio_server() -> None:
    async def main() -> None:
        server = await asyncws.start_server(echo_handler, "127.0.0.1", 0)
        assert isinstance(server, asyncio.AbstractServer)
        assert server.is_serving()
        assert server.get_loop() is asyncio.get_running_loop()
        port = server.sockets[0].getsockname()[1]
        async with server:
            ws = await asyncws.connect(f"ws://127.0.0.1:{port}/")
            await ws.send("x")
            assert await ws.recv() == "x"
            assert len(server.connections) == 1
        assert not server.is_serving()
        assert await ws.recv() is None
        assert ws.close_code == 1001 and ws.close_reason == "server shutting down"

    run(main())


def test_graceful_shutdown_waits_for_handlers() -> None:
    finished = []

    async def handler(ws: asyncws.Websocket) -> None:
        assert await ws.recv() is None  # the shutdown's close ends the loop
        finished.append(ws.close_code)

    async def main() -> None:
        server = await asyncws.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        clients = [await asyncws.connect(f"ws://127.0.0.1:{port}/") for _ in range(5)]
        await asyncio.sleep(0.05)
        server.close()
        await server.wait_closed()
        assert finished == [1001] * 5
        for ws in clients:
            assert await ws.recv() is None and ws.close_code == 1001

    run(main())


def test_shutdown_cancels_handlers_that_ignore_the_close() -> None:
    cancelled = []

    async def stubborn(ws: asyncws.Websocket) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main() -> None:
        server = await asyncws.start_server(stubborn, "127.0.0.1", 0, close_timeout=0.2)
        port = server.sockets[0].getsockname()[1]
        await asyncws.connect(f"ws://127.0.0.1:{port}/")
        await asyncio.sleep(0.05)
        server.close()
        await server.wait_closed()
        assert cancelled == [True]

    run(main())


def test_origins() -> None:
    async def main() -> None:
        async with Server(origins=["https://good.example", None]) as server:
            ws = await asyncws.connect(server.url(), origin="https://good.example")
            await ws.close()
            ws = await asyncws.connect(server.url())  # no Origin: admitted by None
            await ws.close()
            with pytest.raises(asyncws.InvalidHandshake) as info:
                await asyncws.connect(server.url(), origin="https://evil.example")
            assert info.value.status == 403

    run(main())


def test_subprotocols() -> None:
    seen = []

    async def handler(ws: asyncws.Websocket) -> None:
        seen.append(ws.subprotocol)

    async def main() -> None:
        async with Server(handler, subprotocols=["v2.chat", "v1.chat"]) as server:
            ws = await asyncws.connect(server.url(), subprotocols=["v1.chat", "v2.chat"])
            assert ws.subprotocol == "v2.chat"  # the server's preference
            await ws.close()
            ws = await asyncws.connect(server.url(), subprotocols=["other"])
            assert ws.subprotocol is None
            await ws.close()
            ws = await asyncws.connect(server.url())
            assert ws.subprotocol is None
            await ws.close()

    run(main())
    assert seen == ["v2.chat", None, None]


@pytest.mark.parametrize("asynchronous", [False, True])
def test_process_request_can_refuse(asynchronous: bool) -> None:
    def decide(request: asyncws.Request):  # type: ignore[no-untyped-def]
        if request.headers.get("Authorization") != "Bearer secret":
            return 401, [("WWW-Authenticate", "Bearer")], b"who are you?\n"
        return None

    async def decide_async(request: asyncws.Request):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.01)
        return decide(request)

    async def main() -> None:
        hook = decide_async if asynchronous else decide
        async with Server(process_request=hook) as server:
            with pytest.raises(asyncws.InvalidHandshake) as info:
                await asyncws.connect(server.url())
            assert info.value.status == 401
            ws = await asyncws.connect(
                server.url(), extra_headers={"Authorization": "Bearer secret"}
            )
            await ws.send("authorized")
            assert await ws.recv() == "authorized"
            await ws.close()

    run(main())


def test_process_request_failure_is_500() -> None:
    def broken(request: asyncws.Request) -> None:
        raise ValueError("bug in the hook")

    async def main() -> None:
        async with Server(process_request=broken) as server:
            with pytest.raises(asyncws.InvalidHandshake) as info:
                await asyncws.connect(server.url())
            assert info.value.status == 500

    run(main())


def test_headers_can_be_added_changed_and_removed() -> None:
    async def main() -> None:
        async with Server(extra_headers=[("X-Served-By", "test")]) as server:
            ws = await asyncws.connect(server.url())
            assert ws.response.headers["X-Served-By"] == "test"
            assert ws.response.headers["Server"].startswith("asyncws/")
            await ws.close()
        seen = {}

        async def handler(ws: asyncws.Websocket) -> None:
            seen["ua"] = ws.request.headers.get("User-Agent")

        async with Server(
            handler, server_header=None, extra_headers=lambda req: {"X-Path": req.path}
        ) as server:
            ws = await asyncws.connect(server.url("/p"), user_agent_header=None)
            assert "Server" not in ws.response.headers
            assert ws.response.headers["X-Path"] == "/p"
            assert await ws.recv() is None
        assert seen == {"ua": None}

    run(main())


@pytest.mark.skipif(sys.platform == "win32", reason="Unix domain sockets")
def test_unix_socket_server_and_client() -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "ws.sock")
            server = await asyncws.start_unix_server(echo_handler, path, max_size=100)
            async with server:
                async with asyncws.unix_connect(path, "ws://localhost/unix") as ws:
                    await ws.send("over a unix socket")
                    assert await ws.recv() == "over a unix socket"
                    await ws.send(b"x" * 101)  # the server's max_size applies
                    assert await ws.recv() is None
                    assert ws.close_code == 1009

    run(main())


def test_broadcast_skips_closed_and_slow_connections() -> None:
    async def main() -> None:
        received: list = []

        async def handler(ws: asyncws.Websocket) -> None:
            await ws.recv()

        async with Server(handler) as server:
            clients = [await asyncws.connect(server.url()) for _ in range(3)]
            await asyncio.sleep(0.05)
            conns = list(server.server.connections)  # type: ignore[union-attr]
            assert len(conns) == 3
            await clients[0].close()
            # One of the two open ones plays the slow reader (the closed one may still be in
            # the set while its handler finishes).
            slow = next(c for c in conns if c.open)
            slow.pause_writing()  # as the transport would for a peer that does not read
            sent = asyncws.broadcast(conns, "to everyone")
            assert sent == 1
            for ws in clients[1:]:
                try:
                    received.append(await asyncio.wait_for(ws.recv(), 0.3))
                except asyncio.TimeoutError:
                    received.append(None)  # the connection broadcast skipped
            assert sorted(received, key=str) == [None, "to everyone"]

    run(main())


def test_broadcast_logs_a_slow_connection_once_per_slow_spell(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        async with Server() as server:
            ws = await asyncws.connect(server.url())
            await asyncio.sleep(0.05)
            [conn] = list(server.server.connections)  # type: ignore[union-attr]
            conn.pause_writing()  # as the transport would for a peer that does not read
            for _ in range(50):
                assert asyncws.broadcast([conn], "busy channel") == 0
            conn.resume_writing()
            assert asyncws.broadcast([conn], "drained") == 1
            conn.pause_writing()
            assert asyncws.broadcast([conn], "slow again") == 0
            conn.resume_writing()
            await ws.close()

    with caplog.at_level("WARNING", logger="asyncws"):
        run(main())
    skips = [r for r in caplog.records if "broadcast skips" in r.getMessage()]
    assert len(skips) == 2  # one per slow spell, not one per message


def test_broadcast_skips_a_connection_sending_fragments() -> None:
    async def main() -> None:
        async with Server() as server:
            ws = await asyncws.connect(server.url())
            await asyncio.sleep(0.05)
            [conn] = list(server.server.connections)  # type: ignore[union-attr]
            conn._core.send_fragment("half a message", True, False)  # pieces on their way
            assert asyncws.broadcast([conn], "interleaved?") == 0
            await ws.close()

    run(main())
