"""``async for ws in connect(url):``: a new connection after each loss, with backoff, against a
real asyncws server that drops connections, restarts on the same port and answers 503 for a
while; the errors that end the loop; and the delays and the retry rule themselves.

Every loop is bounded in count (``MAX_ROUNDS``) and in time (``run``'s limit), and the delays are
made short with ``reconnect_delay`` / ``reconnect_max_delay``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import pytest

import asyncws
from asyncws.client import Reconnect, retryable
from asyncws.server import Refusal

from .conftest import Server, run
from .test_client import redirecting_server

MAX_ROUNDS = 10
FAST = {"reconnect_delay": 0.02, "reconnect_max_delay": 0.1, "open_timeout": 5.0}


async def echo_or_drop(ws: asyncws.Websocket) -> None:
    async for message in ws:
        if message == "drop":
            ws.writer.abort()  # no closing handshake: the client sees 1006
            return
        await ws.send(message)


class Busy:
    """``process_request`` that answers 503 to the next ``left`` handshakes."""

    def __init__(self) -> None:
        self.left = 0
        self.refused = 0

    def __call__(self, request: asyncws.Request) -> Refusal | None:
        if self.left > 0:
            self.left -= 1
            self.refused += 1
            return 503, [("Retry-After", "1")], "busy"
        return None


def test_reconnects_after_drop_restart_and_503(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="asyncws")
    busy = Busy()

    async def start(port: int = 0) -> Any:
        return await asyncws.start_server(
            echo_or_drop, "127.0.0.1", port, process_request=busy
        )

    async def main() -> None:
        server = await start()
        port = server.sockets[0].getsockname()[1]
        restarted: list[Any] = []

        async def restart_later() -> None:
            await asyncio.sleep(0.3)  # the client meets a refused port meanwhile
            busy.left = 3  # and then three 503 answers
            restarted.append(await start(port))

        rounds: list[asyncws.Websocket] = []
        async for ws in asyncws.connect(f"ws://127.0.0.1:{port}/", **FAST):
            assert ws.open
            for earlier in rounds:
                assert earlier.closed.done()  # closed before this one was made
            rounds.append(ws)
            await ws.send(f"round {len(rounds)}")
            assert await ws.recv() == f"round {len(rounds)}"
            if len(rounds) == 1:  # the server drops the connection
                await ws.send("drop")
                assert await ws.recv() is None
                assert ws.close_code == 1006
            elif len(rounds) == 2:  # the server restarts on the same port, busy for a while
                server.close()
                await server.wait_closed()
                assert await ws.recv() is None
                assert ws.close_code == 1001
                restart = asyncio.ensure_future(restart_later())
            elif len(rounds) == 3:  # working again, after the refused port and the 503s
                await restart
                assert busy.refused == 3 and busy.left == 0
                break
            assert len(rounds) < MAX_ROUNDS
        assert len(rounds) == 3
        await rounds[-1].close()
        restarted[0].close()
        await restarted[0].wait_closed()

    run(main())
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("lost (close code 1006); reconnecting in 0.00 s" in line for line in lines), lines
    assert any("lost (close code 1001)" in line for line in lines), lines
    refused = [line for line in lines if "ConnectionRefusedError" in line]
    assert refused and all("retrying in" in line for line in refused), lines
    busy_lines = [line for line in lines if "503" in line and "retrying in" in line]
    assert len(busy_lines) == 3, lines


def test_forbidden_ends_the_loop() -> None:
    def forbid(request: asyncws.Request) -> Refusal:
        return 403, [], "go away"

    async def main() -> int:
        rounds = 0
        async with Server(process_request=forbid) as server:
            with pytest.raises(asyncws.InvalidHandshake) as info:
                async for _ in asyncws.connect(server.url(), **FAST):
                    rounds += 1
                    assert rounds < MAX_ROUNDS
            assert info.value.status == 403
        return rounds

    assert run(main()) == 0


def test_redirect_loop_ends_the_loop() -> None:
    async def main() -> None:
        loop_server = await redirecting_server("/again")
        port = loop_server.sockets[0].getsockname()[1]
        with pytest.raises(asyncws.InvalidHandshake) as info:
            async for _ in asyncws.connect(f"ws://127.0.0.1:{port}/", max_redirects=2, **FAST):
                pytest.fail("a redirect loop never connects")
        assert info.value.status == 302 and not retryable(info.value)
        loop_server.close()

    run(main())


def test_certificate_error_ends_the_loop(contexts: Any) -> None:
    server_ctx, _ = contexts

    async def main() -> None:
        async with Server(ssl=server_ctx) as server:
            with pytest.raises(ssl.SSLCertVerificationError):
                async for _ in asyncws.connect(server.url(scheme="wss"), **FAST):
                    pytest.fail("the default context does not trust the test CA")

    run(main())


def test_normal_closure_ends_the_loop_and_other_codes_raise() -> None:
    codes = iter([1000, 1008])

    async def close_at_once(ws: asyncws.Websocket) -> None:
        await ws.close(next(codes), "bye")

    async def main() -> None:
        async with Server(close_at_once) as server:
            rounds = 0
            async for ws in asyncws.connect(server.url(), **FAST):
                rounds += 1
                assert await ws.recv() is None and ws.close_code == 1000
                assert rounds < MAX_ROUNDS
            assert rounds == 1  # a normal closure: the loop ends without an error
            with pytest.raises(asyncws.ConnectionClosed) as info:
                async for ws in asyncws.connect(server.url(), **FAST):
                    assert await ws.recv() is None and ws.close_code == 1008
            assert info.value.code == 1008  # policy violation: retrying would not help

    run(main())


def test_open_connection_is_closed_before_the_next_and_break_ends() -> None:
    async def main() -> None:
        accepted: list[asyncws.Websocket] = []

        async def handler(ws: asyncws.Websocket) -> None:
            accepted.append(ws)
            async for message in ws:
                await ws.send(message)

        async with Server(handler) as server:
            yielded = []
            async for ws in asyncws.connect(server.url(), **FAST):
                yielded.append(ws)
                await ws.send("x")
                assert await ws.recv() == "x"
                if len(yielded) == 3:
                    break  # ends the loop; this connection is still ours
                # Asking for the next connection closes this one (1000) first.
            assert [ws.close_code for ws in yielded] == [1000, 1000, None]
            assert yielded[-1].open
            await asyncio.sleep(0.1)
            assert len(accepted) == 3  # nothing was opened after the break
            await yielded[-1].close()

    run(main())


def test_delays() -> None:
    reconnect = Reconnect(asyncws.connect("ws://127.0.0.1/"), "ws://127.0.0.1/", 1.0, 5.0)
    for _ in range(20):  # random draws: check each against its bounds
        delays = reconnect._delays()
        assert next(delays) == 0.0  # the first retry at once
        for base in [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]:
            assert base / 2 <= next(delays) <= base


def test_retry_rule() -> None:
    assert retryable(ConnectionRefusedError())
    assert retryable(asyncws.OpenTimeout())
    assert retryable(asyncws.InvalidHandshake("lost during the handshake"))
    for status in (500, 502, 503, 429):
        assert retryable(asyncws.InvalidHandshake("refused", status))
        assert retryable(asyncws.ProxyError("refused", status))
    for status in (101, 301, 400, 401, 403, 404, 407):
        assert not retryable(asyncws.InvalidHandshake("refused", status))
    assert not retryable(asyncws.ProxyError("auth", 407))
    assert not retryable(ssl.SSLCertVerificationError())
    assert not retryable(asyncws.InvalidURI("bad"))
    assert not retryable(TypeError())
