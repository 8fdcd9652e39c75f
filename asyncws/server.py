"""The server side: ``start_server()`` and the protocol that performs the server's handshake.

This module holds ``start_server`` and ``ServerHandshake``, the ``asyncio.Protocol`` each
accepted connection starts with: it collects the upgrade request, validates it with
``handshake``, answers 101 (or the RFC's error status, with a log line), then hands the
transport to a ``Websocket`` and runs the application's handler in a task. It must not parse
frames or HTTP itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, Callable, cast

from .connection import Websocket
from .exceptions import ConnectionClosed
from .handshake import (
    HandshakeError,
    HeadReader,
    Request,
    build_error_response,
    build_response,
    check_request,
    parse_request,
)
from .protocol import Protocol

__all__ = ["start_server", "ServerHandshake", "Handler"]

logger = logging.getLogger("asyncws")

Handler = Callable[[Websocket], Awaitable[Any]]

DEFAULT_MAX_SIZE = 2**20
DEFAULT_MAX_QUEUE = 32


class _ServerConfig:
    """What every connection of one server shares."""

    __slots__ = ("handler", "max_size", "max_queue", "open_timeout", "close_timeout", "tasks")

    def __init__(
        self,
        handler: Handler,
        max_size: int | None,
        max_queue: int,
        open_timeout: float | None,
        close_timeout: float,
    ) -> None:
        self.handler = handler
        self.max_size = max_size
        self.max_queue = max_queue
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        # Strong references: the event loop keeps only weak ones to tasks.
        self.tasks: set[asyncio.Task[None]] = set()


class ServerHandshake(asyncio.Protocol):
    """Reads one upgrade request and answers it; then the ``Websocket`` takes the transport."""

    __slots__ = ("_config", "_transport", "_head", "_timer", "_done", "_peer")

    def __init__(self, config: _ServerConfig) -> None:
        self._config = config
        self._transport: asyncio.Transport | None = None
        self._head = HeadReader()
        self._timer: asyncio.TimerHandle | None = None
        self._done = False
        self._peer: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)
        self._peer = transport.get_extra_info("peername")
        timeout = self._config.open_timeout
        if timeout is not None:
            # A peer that never finishes its request (slowloris) is dropped, not waited on.
            self._timer = asyncio.get_running_loop().call_later(timeout, self._timed_out)

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        request: Request | None = None
        try:
            got = self._head.feed(data)
            if got is None:
                return
            head, rest = got
            request = parse_request(head)
            accept = check_request(request)
        except HandshakeError as exc:
            self._refuse(exc, request)
            return
        self._accept(request, accept, rest)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._done = True
        if self._timer is not None:
            self._timer.cancel()

    def _accept(self, request: Request, accept: str, rest: bytes) -> None:
        transport = self._transport
        assert transport is not None
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
        config = self._config
        transport.write(build_response(accept))
        ws = Websocket(
            transport,
            Protocol(is_client=False, max_size=config.max_size),
            request=request,
            max_queue=config.max_queue,
            close_timeout=config.close_timeout,
        )
        transport.set_protocol(ws)
        logger.debug("accepted WebSocket from %s: %s", self._peer, request.path)
        task = asyncio.get_running_loop().create_task(_run_handler(config.handler, ws))
        config.tasks.add(task)
        task.add_done_callback(config.tasks.discard)
        if rest:
            ws.data_received(rest)

    def _refuse(self, exc: HandshakeError, request: Request | None) -> None:
        transport = self._transport
        assert transport is not None
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
        target = f" {request.method} {request.path}" if request is not None else ""
        logger.info(
            "refused handshake from %s%s: %d %s", self._peer, target, exc.status, exc.message
        )
        transport.write(build_error_response(exc.status, exc.message, exc.headers))
        transport.close()

    def _timed_out(self) -> None:
        if self._done or self._transport is None:
            return
        self._done = True
        logger.info("handshake from %s timed out", self._peer)
        self._transport.abort()


async def _run_handler(handler: Handler, ws: Websocket) -> None:
    """Run the application's handler; close with 1000 after it returns, 1011 if it raises."""
    try:
        await handler(ws)
    except ConnectionClosed:
        pass  # the peer went away while the handler was sending: not an application error
    except Exception:
        logger.exception("connection handler failed for %s", ws.writer.get_extra_info("peername"))
        await _close_quietly(ws, 1011, "internal error")
        return
    await _close_quietly(ws, 1000, "")


async def _close_quietly(ws: Websocket, code: int, reason: str) -> None:
    try:
        await ws.close(code, reason)
    except ConnectionClosed:
        pass


async def start_server(
    handler: Handler,
    host: Any = None,
    port: int | None = None,
    *,
    max_size: int | None = DEFAULT_MAX_SIZE,
    max_queue: int = DEFAULT_MAX_QUEUE,
    open_timeout: float | None = 10.0,
    close_timeout: float = 10.0,
    **kwds: Any,
) -> asyncio.Server:
    """Start a WebSocket server; ``handler(ws)`` is awaited for each connection whose handshake
    succeeds. Returns the ``asyncio.Server``.

    ``max_size``: the largest message accepted, in bytes (default 1 MiB; None for no limit);
    a larger one closes the connection with 1009. ``max_queue``: received messages buffered
    before the transport stops reading. ``open_timeout``: seconds a client has to complete its
    handshake. ``close_timeout``: seconds the closing handshake may take. Other keywords
    (``ssl``, ``reuse_port``, ``backlog``, ...) go to ``loop.create_server``.
    """
    loop = asyncio.get_running_loop()
    config = _ServerConfig(handler, max_size, max_queue, open_timeout, close_timeout)
    return await loop.create_server(lambda: ServerHandshake(config), host, port, **kwds)
