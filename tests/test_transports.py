"""The ``transport`` option: connections and servers on the loop's own transports or on
aiofastnet's, how ``"auto"`` and ``ASYNCWS_TRANSPORT`` choose, and the trap of aiofastnet's TLS
transport (data already decrypted is left unread when reading resumes after a pause) pinned
on both transports."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import pytest

import asyncws
from asyncws import transports

from ._raw import frame
from .conftest import Server, echo_handler, run

TRANSPORTS = ["asyncio", "aiofastnet"]


def needs(transport: str) -> None:
    """Skip where aiofastnet is not installed (CI installs it: there, fail)."""
    if transport == "aiofastnet" and not transports.HAS_AIOFASTNET:
        if os.environ.get("CI"):
            pytest.fail("aiofastnet is not installed: pip install -e '.[test]'")
        pytest.skip("aiofastnet is not installed")


def is_aiofastnet(transport: Any) -> bool:
    return type(transport).__module__.startswith("aiofastnet")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tls_resumes_with_data_already_read(contexts, transport: str) -> None:
    """The peer sends many small messages in one write and then only waits for the echoes,
    while the server reads slowly (max_queue=2, so reading pauses). The burst is sized so that
    aiofastnet 1.2.0 reads it from the socket in one go and decrypts it into asyncws' 256 KiB
    read buffer up to the last byte, leaving a few hundred bytes in OpenSSL when the full queue
    pauses reading: without asyncws' workaround (transports.adopt) those messages were never
    delivered and this test hung until its timeout."""
    needs(transport)
    server_ctx, client_ctx = contexts

    async def main() -> None:
        go = asyncio.Event()

        async def slow_echo(ws: asyncws.Websocket) -> None:
            await go.wait()
            await echo_handler(ws)

        # A receive buffer large enough for the whole burst, inherited by accepted sockets, so
        # that the server's first read after the pause takes it all.
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        listener.bind(("127.0.0.1", 0))
        server = await asyncws.start_server(
            slow_echo, sock=listener, ssl=server_ctx, max_queue=2, transport=transport
        )
        port = listener.getsockname()[1]
        try:
            ws = await asyncws.connect(
                f"wss://127.0.0.1:{port}/", ssl=client_ctx, transport=transport
            )
            assert is_aiofastnet(ws.writer) is (transport == "aiofastnet")
            # Two messages fill the server's queue: it stops reading.
            sent = [b"first", b"second"]
            for payload in sent:
                await ws.send(payload)
            await asyncio.sleep(0.05)
            # Then one write of 262,544 bytes of small frames: 256 KiB and 400 bytes more.
            burst = []
            size = 0
            while size < 262144 + 400:
                payload = bytes([len(burst) % 256]) * min(100, 262144 + 400 - size - 6)
                burst.append(payload)
                size += len(frame(0x2, payload))
            ws.writer.write(b"".join(frame(0x2, payload) for payload in burst))
            sent += burst
            await asyncio.sleep(0.1)  # all of it in the server's socket
            go.set()
            echoes = []
            for _ in sent:
                echoes.append(await asyncio.wait_for(ws.recv(), 5))
            assert echoes == sent
            await ws.close()
            assert ws.close_code == 1000
        finally:
            server.close()
            await server.wait_closed()

    run(main(), timeout=30)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("tls", [False, True])
def test_echo_on_each_transport(contexts, transport: str, tls: bool) -> None:
    """Both sides on the chosen transports, plain and TLS: small and large messages (a large
    one is read straight into the message), the peer's address, the TLS object."""
    needs(transport)
    server_ctx, client_ctx = contexts

    async def main() -> None:
        async with Server(ssl=server_ctx if tls else None, transport=transport) as server:
            kwds: dict[str, Any] = {"ssl": client_ctx} if tls else {}
            ws = await asyncws.connect(
                server.url(scheme="wss" if tls else "ws"), transport=transport, **kwds
            )
            assert is_aiofastnet(ws.writer) is (transport == "aiofastnet")
            assert ws.writer.get_extra_info("peername")[0] == "127.0.0.1"
            assert (ws.writer.get_extra_info("ssl_object") is not None) is tls
            for payload in ["small", b"\x01" * 300_000, "é" * 70_000]:
                await ws.send(payload)
                assert await ws.recv() == payload
            await ws.close()
            assert ws.close_code == 1000

    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unix_socket_on_each_transport(tmp_path, transport: str) -> None:
    needs(transport)
    if not hasattr(socket, "AF_UNIX"):
        pytest.skip("no Unix domain sockets here")
    path = str(tmp_path / "ws.sock")

    async def main() -> None:
        server = await asyncws.start_unix_server(echo_handler, path, transport=transport)
        try:
            ws = await asyncws.unix_connect(path, transport=transport)
            assert is_aiofastnet(ws.writer) is (transport == "aiofastnet")
            await ws.send("over a unix socket")
            assert await ws.recv() == "over a unix socket"
            await ws.close()
        finally:
            server.close()
            await server.wait_closed()

    run(main())


def test_auto_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        monkeypatch.setenv(transports.ENVIRONMENT_VARIABLE, "asyncio")
        assert transports.resolve("auto", loop, True) == "asyncio"
        if transports.HAS_AIOFASTNET:
            monkeypatch.setenv(transports.ENVIRONMENT_VARIABLE, "aiofastnet")
            assert transports.resolve("auto", loop, False) == "aiofastnet"
            # An explicit keyword wins over the environment.
            assert transports.resolve("asyncio", loop, True) == "asyncio"
            monkeypatch.delenv(transports.ENVIRONMENT_VARIABLE)
            # The asyncio loop: aiofastnet, plain and TLS (benchmarks/README.md).
            assert transports.resolve("auto", loop, True) == "aiofastnet"
            assert transports.resolve("auto", loop, False) == "aiofastnet"
        monkeypatch.setenv(transports.ENVIRONMENT_VARIABLE, "bogus")
        with pytest.raises(ValueError, match="ASYNCWS_TRANSPORT='bogus'"):
            transports.resolve("auto", loop, False)

    run(main())


def test_auto_on_uvloop_keeps_its_plain_transports(monkeypatch: pytest.MonkeyPatch) -> None:
    uvloop = pytest.importorskip("uvloop")
    needs("aiofastnet")
    monkeypatch.delenv(transports.ENVIRONMENT_VARIABLE, raising=False)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert transports.resolve("auto", loop, False) == "asyncio"
        assert transports.resolve("auto", loop, True) == "aiofastnet"

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(main(), 10))
    finally:
        loop.close()


def test_bad_transport_fails_at_the_call() -> None:
    with pytest.raises(ValueError, match="transport"):
        asyncws.connect("ws://127.0.0.1:1/", transport="bogus")
    with pytest.raises(ValueError, match="transport"):
        run(asyncws.start_server(echo_handler, "127.0.0.1", 0, transport="bogus"))
