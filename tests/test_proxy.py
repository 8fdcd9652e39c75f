"""``connect(proxy=...)`` through real proxies: tinyproxy (HTTP CONNECT, with and without Basic
authentication), microsocks (SOCKS5) and Dante (SOCKS4), all started on 127.0.0.1 by
tests/_proxies.py; an https:// proxy is tinyproxy behind a TLS front. Echo for ws:// and wss://,
the choice from the environment (``http_proxy``, ``https_proxy``, ``no_proxy``), proxies that
refuse, wrong passwords, redirects and ``open_timeout`` through a proxy, and no socket left
behind."""

from __future__ import annotations

import asyncio
import gc
import os
import ssl
import sys
from pathlib import Path
from typing import Any

import pytest

import asyncws
from asyncws.handshake import build_connect_request, check_connect_response
from asyncws.proxy import parse_proxy, proxy_from_environment

from ._proxies import dante, free_port, microsocks, tinyproxy
from ._raw import has_proc
from .conftest import Server, echo_handler, run
from .test_client import redirecting_server

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy variable from the machine running the tests."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def open_sockets() -> int:
    """How many sockets this process has open (Linux /proc)."""
    gc.collect()
    fds = os.listdir("/proc/self/fd")
    count = 0
    for fd in fds:
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


async def echo_through(url: str, proxy_port: int, **kwds: Any) -> None:
    """Echo a few messages through the proxy; the transport's peer must be the proxy."""
    async with asyncws.connect(url, **kwds) as ws:
        assert ws.writer.get_extra_info("peername")[1] == proxy_port
        for payload in ["through the proxy", b"\x00\xff" * 40000, "é" * 1000]:
            await ws.send(payload)
            assert await ws.recv() == payload
    assert ws.close_code == 1000


async def refused(url: str, **kwds: Any) -> asyncws.ProxyError:
    """Connect, expecting the proxy to refuse; check that no socket is left open."""
    before = open_sockets() if has_proc() else 0
    with pytest.raises(asyncws.ProxyError) as info:
        await asyncws.connect(url, **kwds)
    await asyncio.sleep(0)  # let the transport's close run
    if has_proc():
        # At most as many as before (a connection of an earlier step may finish closing now).
        assert open_sockets() <= before
    return info.value


# -- sans-I/O: the CONNECT exchange and proxy URLs -----------------------------------------------


def test_connect_request_and_answer() -> None:
    request = build_connect_request("::1", 8443, username="al ice", password="p:w")
    assert request.startswith(b"CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n")
    assert b"Proxy-Authorization: Basic YWwgaWNlOnA6dw==\r\n" in request
    assert request.endswith(b"\r\n\r\n")
    check_connect_response(b"HTTP/1.1 200 Connection established\r\n\r\n", "p", "t")
    with pytest.raises(asyncws.ProxyError) as info:
        check_connect_response(b"HTTP/1.0 407 Proxy Authentication Required\r\n\r\n", "p", "t")
    assert info.value.status == 407 and "407 Proxy Authentication Required" in str(info.value)
    with pytest.raises(asyncws.ProxyError) as info:
        check_connect_response(b"SSH-2.0-OpenSSH\r\n\r\n", "p", "t")
    assert info.value.status is None
    assert isinstance(info.value, asyncws.InvalidHandshake)


def test_proxy_urls() -> None:
    assert parse_proxy("http://u%40x:p%3Aw@proxy:3128") == ("http", "proxy", 3128, "u@x", "p:w")
    assert parse_proxy("proxy.example") == ("http", "proxy.example", 80, None, None)
    assert parse_proxy("socks5h://[::1]").port == 1080
    assert str(parse_proxy("https://u:secret@p:1")) == "https://p:1"  # no password shown
    for bad in ["ftp://proxy:21", "http://:3128", "http://proxy:99999"]:
        with pytest.raises(asyncws.InvalidURI):
            parse_proxy(bad)
    with pytest.raises(asyncws.InvalidURI):  # at the call, not at the await
        asyncws.connect("ws://127.0.0.1/", proxy="gopher://proxy")


def test_environment_rule(clean_environment: pytest.MonkeyPatch) -> None:
    env = clean_environment
    assert proxy_from_environment("example.com", 80, secure=False) is None
    env.setenv("http_proxy", "http://plain:3128")
    env.setenv("https_proxy", "socks5://secure:1080")
    assert proxy_from_environment("example.com", 80, secure=False) == "http://plain:3128"
    assert proxy_from_environment("example.com", 443, secure=True) == "socks5://secure:1080"
    env.setenv("no_proxy", "internal.example,.corp, 10.1.2.3")
    assert proxy_from_environment("internal.example", 80, secure=False) is None
    assert proxy_from_environment("a.b.corp", 443, secure=True) is None
    assert proxy_from_environment("10.1.2.3", 8000, secure=False) is None
    assert proxy_from_environment("example.com", 80, secure=False) == "http://plain:3128"


def test_missing_python_socks_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "python_socks", None)  # import python_socks now fails
    with pytest.raises(ImportError, match=r"asyncws\[socks\]"):
        asyncws.connect("ws://127.0.0.1/", proxy="socks5://127.0.0.1:1080")


# -- HTTP CONNECT: tinyproxy ---------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_echo_through_http_proxy(scheme: str, tmp_path: Path, contexts: Any) -> None:
    server_ctx, client_ctx = contexts
    tls = {"ssl": client_ctx} if scheme == "wss" else {}

    async def main() -> int:
        async with Server(ssl=server_ctx if scheme == "wss" else None) as server:
            await echo_through(server.url("/p", scheme), proxy.port, proxy=proxy.url, **tls)
            return server.port

    with tinyproxy(tmp_path) as proxy:
        port = run(main())
        assert f"CONNECT 127.0.0.1:{port} HTTP/1.1" in proxy.log_text()


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_http_proxy_basic_auth(scheme: str, tmp_path: Path, contexts: Any) -> None:
    server_ctx, client_ctx = contexts
    tls = {"ssl": client_ctx} if scheme == "wss" else {}

    async def main() -> None:
        async with Server(ssl=server_ctx if scheme == "wss" else None) as server:
            url = server.url("/auth", scheme)
            await echo_through(url, proxy.port, proxy=proxy.url, **tls)
            wrong = proxy.url.replace(":s3cret@", ":wrong@")
            # tinyproxy answers a CONNECT without the right credentials with 401 (others: 407).
            error = await refused(url, proxy=wrong, **tls)
            assert error.status in (401, 407) and f"{error.status} " in str(error)
            error = await refused(url, proxy=f"http://127.0.0.1:{proxy.port}", **tls)
            assert error.status in (401, 407)
            assert "s3cret" not in str(error)

    with tinyproxy(tmp_path, user="alice", password="s3cret") as proxy:
        run(main())


def test_refusing_http_proxy(tmp_path: Path) -> None:
    async def main() -> None:
        async with Server() as server:
            error = await refused(server.url(), proxy=proxy.url)
            assert error.status == 403 and "403" in str(error)

    with tinyproxy(tmp_path, connect_ports=[1]) as proxy:  # CONNECT to port 1 only
        run(main())


def test_http_proxy_cannot_reach_the_server(tmp_path: Path) -> None:
    async def main() -> None:
        async with Server() as server:
            url = server.url()
        # The server is gone: the proxy cannot connect to it and says so.
        error = await refused(url, proxy=proxy.url)
        assert error.status is not None and error.status >= 500

    with tinyproxy(tmp_path) as proxy:
        run(main())


def test_redirects_go_through_the_proxy(tmp_path: Path) -> None:
    async def main() -> tuple[int, int]:
        async with Server() as server:
            hop = await redirecting_server(server.url("/final"), 307)
            hop_port = hop.sockets[0].getsockname()[1]
            url = f"ws://127.0.0.1:{hop_port}/first"
            await echo_through(url, proxy.port, proxy=proxy.url)
            hop.close()
            return server.port, hop_port

    with tinyproxy(tmp_path) as proxy:
        server_port, hop_port = run(main())
        log = proxy.log_text()
        assert f"CONNECT 127.0.0.1:{hop_port} " in log, log
        assert f"CONNECT 127.0.0.1:{server_port} " in log, log


def test_open_timeout_bounds_the_proxy() -> None:
    async def main() -> None:
        # A proxy that accepts and never answers its CONNECT.
        accepted: list[asyncio.StreamWriter] = []
        silent = await asyncio.start_server(
            lambda r, w: accepted.append(w), "127.0.0.1", 0
        )
        port = silent.sockets[0].getsockname()[1]
        before = open_sockets() if has_proc() else 0
        with pytest.raises(asyncws.OpenTimeout):
            await asyncws.connect(
                "ws://127.0.0.1:9/", proxy=f"http://127.0.0.1:{port}", open_timeout=0.3
            )
        await asyncio.sleep(0)
        if has_proc():  # our end is closed; the silent proxy's end is still open
            assert len(accepted) == 1
            assert open_sockets() == before + 1
        silent.close()
        for writer in accepted:
            writer.close()

    run(main())


# -- an https:// proxy: tinyproxy behind a TLS front ---------------------------------------------


async def tls_front(server_ctx: ssl.SSLContext, target_port: int) -> asyncio.AbstractServer:
    """A TLS server that pipes each connection to 127.0.0.1:target_port (the real proxy)."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    return await asyncio.start_server(relay, "127.0.0.1", 0, ssl=server_ctx)


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_echo_through_https_proxy(scheme: str, tmp_path: Path, contexts: Any) -> None:
    server_ctx, client_ctx = contexts
    tls = {"ssl": client_ctx} if scheme == "wss" else {}

    async def main() -> None:
        front = await tls_front(server_ctx, proxy.port)
        front_port = front.sockets[0].getsockname()[1]
        https = f"https://127.0.0.1:{front_port}"
        try:
            async with Server(ssl=server_ctx if scheme == "wss" else None) as server:
                url = server.url("/s", scheme)
                # The default proxy_ssl verifies the proxy's certificate: the test CA is unknown.
                with pytest.raises(ssl.SSLCertVerificationError):
                    await asyncws.connect(url, proxy=https, **tls)
                if scheme == "wss" and sys.version_info < (3, 11):
                    with pytest.raises(asyncws.ProxyError, match="TLS inside TLS"):
                        await asyncws.connect(url, proxy=https, proxy_ssl=client_ctx, **tls)
                    return
                await echo_through(url, front_port, proxy=https, proxy_ssl=client_ctx, **tls)
        finally:
            front.close()

    with tinyproxy(tmp_path) as proxy:
        run(main())


# -- SOCKS5: microsocks --------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["ws", "wss"])
@pytest.mark.parametrize("flavour", ["socks5", "socks5h"])
def test_echo_through_socks5(scheme: str, flavour: str, contexts: Any) -> None:
    pytest.importorskip("python_socks")
    server_ctx, client_ctx = contexts
    tls = {"ssl": client_ctx} if scheme == "wss" else {}

    async def main() -> None:
        async with Server(ssl=server_ctx if scheme == "wss" else None) as server:
            # localhost: with socks5h the proxy resolves the name, with socks5 we do.
            url = f"{scheme}://localhost:{server.port}/socks"
            await echo_through(url, proxy.port, proxy=proxy.url.replace("socks5", flavour), **tls)

    with microsocks() as proxy:
        run(main())


def test_socks5_password(contexts: Any) -> None:
    pytest.importorskip("python_socks")

    async def main() -> None:
        async with Server() as server:
            await echo_through(server.url(), proxy.port, proxy=proxy.url)
            error = await refused(server.url(), proxy=proxy.url.replace(":pw@", ":nope@"))
            assert error.status == 407 and "authentication" in str(error).lower()

    with microsocks(user="bob", password="pw") as proxy:
        run(main())


def test_socks5_cannot_reach_the_server() -> None:
    pytest.importorskip("python_socks")

    async def main() -> None:
        async with Server() as server:
            url = server.url()
        error = await refused(url, proxy=proxy.url)
        assert error.status == 502 and str(proxy.port) in str(error)

    with microsocks() as proxy:
        run(main())


# -- SOCKS4: Dante -------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_echo_through_socks4(scheme: str, tmp_path: Path, contexts: Any) -> None:
    pytest.importorskip("python_socks")
    server_ctx, client_ctx = contexts
    tls = {"ssl": client_ctx} if scheme == "wss" else {}

    async def main() -> None:
        async with Server(ssl=server_ctx if scheme == "wss" else None) as server:
            url = f"{scheme}://localhost:{server.port}/socks4"  # SOCKS4: we resolve the name
            await echo_through(url, proxy.port, proxy=proxy.url, **tls)

    with dante(tmp_path) as proxy:
        run(main())


def test_refusing_socks_proxy(tmp_path: Path) -> None:
    pytest.importorskip("python_socks")
    server_port = free_port()

    async def main() -> None:
        server = await asyncws.start_server(echo_handler, "127.0.0.1", server_port)
        async with server:
            url = f"ws://127.0.0.1:{server_port}/"
            for proxy_url in (proxy.url, proxy.url.replace("socks4", "socks5")):
                error = await refused(url, proxy=proxy_url)
                assert str(server_port) in str(error), error
                # SOCKS5 says "not allowed by the ruleset" (403); SOCKS4 has one "rejected or
                # failed" for every refusal (502).
                assert error.status == (502 if proxy_url.startswith("socks4") else 403), error

    with dante(tmp_path, blocked_ports=[server_port]) as proxy:
        run(main())


# -- the proxy from the environment --------------------------------------------------------------


def test_proxy_from_environment(
    clean_environment: pytest.MonkeyPatch, tmp_path: Path, contexts: Any
) -> None:
    pytest.importorskip("python_socks")
    server_ctx, client_ctx = contexts
    env = clean_environment

    async def main() -> None:
        async with Server() as plain, Server(ssl=server_ctx) as secure:
            # ws:// takes http_proxy, wss:// takes https_proxy.
            await echo_through(plain.url(), http_proxy.port)
            await echo_through(secure.url(scheme="wss"), socks.port, ssl=client_ctx)
            # proxy=None: direct, whatever the environment says.
            await echo_through(plain.url(), plain.port, proxy=None)
            # no_proxy exempts the host.
            env.setenv("no_proxy", "localhost,127.0.0.1")
            await echo_through(plain.url(), plain.port)
            await echo_through(secure.url(scheme="wss"), secure.port, ssl=client_ctx)

    with tinyproxy(tmp_path) as http_proxy, microsocks() as socks:
        env.setenv("http_proxy", http_proxy.url)
        env.setenv("https_proxy", socks.url)
        run(main())


# -- uvloop, and reconnection through a proxy ----------------------------------------------------


def test_proxies_on_uvloop(tmp_path: Path, contexts: Any) -> None:
    uvloop = pytest.importorskip("uvloop")
    pytest.importorskip("python_socks")
    server_ctx, client_ctx = contexts

    async def main() -> None:
        assert "uvloop" in type(asyncio.get_running_loop()).__module__
        async with Server() as plain, Server(ssl=server_ctx) as secure:
            for proxy in (http_proxy, socks):
                await echo_through(plain.url(), proxy.port, proxy=proxy.url)
                await echo_through(
                    secure.url(scheme="wss"), proxy.port, proxy=proxy.url, ssl=client_ctx
                )

    async def bounded() -> None:
        await asyncio.wait_for(main(), 20)

    with tinyproxy(tmp_path) as http_proxy, microsocks() as socks:
        uvloop.run(bounded())


def test_reconnects_through_a_proxy(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="asyncws")

    async def main() -> None:
        server = await asyncws.start_server(echo_handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        restarted: list[Any] = []

        async def restart_later() -> None:
            await asyncio.sleep(0.3)  # meanwhile the proxy cannot reach the server: 5xx
            restarted.append(await asyncws.start_server(echo_handler, "127.0.0.1", port))

        rounds = 0
        fast = {"reconnect_delay": 0.02, "reconnect_max_delay": 0.1}
        async for ws in asyncws.connect(f"ws://127.0.0.1:{port}/", proxy=proxy.url, **fast):
            rounds += 1
            assert ws.writer.get_extra_info("peername")[1] == proxy.port
            await ws.send(f"round {rounds}")
            assert await ws.recv() == f"round {rounds}"
            if rounds == 2:
                await ws.close()
                break
            server.close()
            await server.wait_closed()
            assert await ws.recv() is None and ws.close_code == 1001
            restart = asyncio.ensure_future(restart_later())
            assert rounds < 5
        await restart
        restarted[0].close()
        await restarted[0].wait_closed()

    with tinyproxy(tmp_path) as proxy:
        run(main())
    retries = [r.getMessage() for r in caplog.records if "ProxyError" in r.getMessage()]
    assert retries and all("retrying in" in line for line in retries), retries
