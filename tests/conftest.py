"""Shared fixtures: both kernel backends, a running asyncws echo server, and a real Redis.

``kernels`` parametrizes a test over the Cython extension and the pure-Python twin (imported
directly, whatever ``_kernels`` selected); ``run`` runs a coroutine with a hard time limit so a
bug shows up as a failure, not a hung suite. ``redis_server`` is a redis-server on 127.0.0.1
(tests/_redis.py), shared by a module's tests.
"""

from __future__ import annotations

import asyncio
import importlib
import ssl
from collections.abc import Awaitable, Iterator
from typing import Any, Callable

import pytest

import asyncws

from ._redis import RedisServer, redis_server_binary

BACKENDS = ["speedups", "purepython"]


def load_backend(name: str) -> Any:
    try:
        return importlib.import_module(f"asyncws._{name}")
    except ImportError:
        pytest.fail(f"asyncws._{name} is not built: run `python -m pip install -e '.[test]'`")


@pytest.fixture(scope="session")
def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) TLS contexts for 127.0.0.1 and localhost, from a test CA (trustme)."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """redis-server on 127.0.0.1 (skips where it is not installed, fails on CI)."""
    with RedisServer(redis_server_binary(), tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(params=BACKENDS)
def kernels(request: pytest.FixtureRequest) -> Any:
    return load_backend(request.param)


def run(coro: Awaitable[Any], timeout: float = 20.0) -> Any:
    """Run ``coro`` on a fresh event loop, failing (not hanging) after ``timeout`` seconds."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def echo_handler(ws: asyncws.Websocket) -> None:
    while True:
        msg = await ws.recv()
        if msg is None:
            return
        await ws.send(msg)


class Server:
    """An asyncws server on 127.0.0.1 for the length of an ``async with`` block."""

    def __init__(
        self, handler: Callable[[asyncws.Websocket], Awaitable[Any]] = echo_handler, **kwds: Any
    ) -> None:
        self.handler = handler
        self.kwds = kwds
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self.server = await asyncws.start_server(self.handler, "127.0.0.1", 0, **self.kwds)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def url(self, path: str = "/", scheme: str = "ws") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"
