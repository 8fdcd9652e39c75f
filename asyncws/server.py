"""The server side: ``start_server()``, ``start_unix_server()``, the ``Server`` they return, and
the protocol that performs the server's handshake.

This module holds ``ServerHandshake``, the ``asyncio.Protocol`` each accepted connection starts
with: it collects the upgrade request, validates it with ``handshake`` (and the application's
``origins``, ``subprotocols``, ``process_request`` and ``compression`` choices), answers 101 or
the RFC's error status (with a log line), then hands the transport to a ``Websocket`` and runs
the application's handler in a task. ``Server`` wraps the ``asyncio.Server`` to close every
connection with 1001 on shutdown. It must not parse frames or HTTP itself.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Sequence
from typing import Any, Callable, Union, cast

from .connection import Settings, Websocket, websocket_class
from .deflate import Deflate, compression_options, server_accept
from .exceptions import ConnectionClosed
from .handshake import (
    HandshakeError,
    HeadersLike,
    HeadReader,
    Request,
    build_error_response,
    build_response,
    check_origin,
    check_request,
    parse_request,
    select_subprotocol,
)
from .options import (
    CLOSE_TIMEOUT,
    MAX_QUEUE,
    MAX_SIZE,
    OPEN_TIMEOUT,
    PING_INTERVAL,
    PING_TIMEOUT,
    SERVER_HEADER,
    TRANSPORT,
)
from .protocol import Protocol
from .transports import adopt, check_transport, create_server, create_unix_server

__all__ = ["start_server", "start_unix_server", "Server", "ServerHandshake", "Handler"]

logger = logging.getLogger("asyncws")

Handler = Callable[[Websocket], Awaitable[Any]]
# What process_request may return to refuse a handshake: (status, headers, body).
Refusal = tuple[int, HeadersLike, Union[bytes, str]]
ProcessRequest = Callable[[Request], Union[Refusal, None, Awaitable[Union[Refusal, None]]]]
ExtraHeaders = Union[HeadersLike, Callable[[Request], HeadersLike]]


class _ServerConfig:
    """What every connection of one server shares."""

    __slots__ = (
        "handler",
        "settings",
        "open_timeout",
        "origins",
        "subprotocols",
        "process_request",
        "extra_headers",
        "server_header",
        "compression",
        "connections",
        "tasks",
        "handshakes",
    )

    def __init__(
        self,
        handler: Handler,
        settings: Settings,
        *,
        open_timeout: float | None,
        origins: Sequence[str | None] | None,
        subprotocols: Sequence[str] | None,
        process_request: ProcessRequest | None,
        extra_headers: ExtraHeaders | None,
        server_header: str | None,
        compression: Deflate | None,
    ) -> None:
        self.handler = handler
        self.settings = settings
        self.open_timeout = open_timeout
        self.origins = origins
        self.subprotocols = subprotocols
        self.process_request = process_request
        self.extra_headers = extra_headers
        self.server_header = server_header
        self.compression = compression
        self.connections: set[Websocket] = set()
        # Strong references: the event loop keeps only weak ones to tasks.
        self.tasks: set[asyncio.Future[Any]] = set()
        self.handshakes: set[ServerHandshake] = set()


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
        adopt(transport)
        self._peer = transport.get_extra_info("peername")
        self._config.handshakes.add(self)
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
            if self._config.origins is not None:
                check_origin(request, self._config.origins)
        except HandshakeError as exc:
            self._refuse(exc.status, exc.message, exc.headers, None, request)
            return
        hook = self._config.process_request
        if hook is None:
            self._accept(request, accept, rest)
            return
        try:
            verdict = hook(request)
        except Exception:
            logger.exception("process_request failed for %s", self._peer)
            self._refuse(500, "internal error", None, None, request)
            return
        if inspect.isawaitable(verdict):
            assert self._transport is not None
            self._transport.pause_reading()
            task = asyncio.ensure_future(verdict)
            self._config.tasks.add(task)
            task.add_done_callback(lambda t: self._decided(t, request, accept, rest))
        else:
            self._verdict(verdict, request, accept, rest)

    def _decided(
        self, task: asyncio.Future[Refusal | None], request: Request, accept: str, rest: bytes
    ) -> None:
        self._config.tasks.discard(task)
        if self._done or self._transport is None or self._transport.is_closing():
            return
        if task.cancelled() or task.exception() is not None:
            if not task.cancelled():
                logger.error("process_request failed for %s", self._peer, exc_info=task.exception())
            self._refuse(500, "internal error", None, None, request)
            return
        self._transport.resume_reading()
        self._verdict(task.result(), request, accept, rest)

    def _verdict(self, verdict: Refusal | None, request: Request, accept: str, rest: bytes) -> None:
        if verdict is None:
            self._accept(request, accept, rest)
            return
        status, headers, body = verdict
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        self._refuse(int(status), "refused by process_request", headers, data, request)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._done = True
        self._config.handshakes.discard(self)
        if self._timer is not None:
            self._timer.cancel()

    def _accept(self, request: Request, accept: str, rest: bytes) -> None:
        transport = self._transport
        assert transport is not None
        self._done = True
        self._config.handshakes.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        config = self._config
        subprotocol = None
        if config.subprotocols:
            subprotocol = select_subprotocol(request, config.subprotocols)
        extensions = None
        deflate = None
        offers = request.headers.get_all("Sec-WebSocket-Extensions")
        if config.compression is not None and offers:
            accepted = server_accept(offers, config.compression, config.settings.max_size)
            if accepted is not None:
                extensions, deflate = accepted
        extra = config.extra_headers
        if callable(extra):
            extra = extra(request)
        transport.write(
            build_response(
                accept,
                extra,
                server=config.server_header,
                subprotocol=subprotocol,
                extensions=extensions,
            )
        )
        ws = websocket_class(asyncio.get_running_loop(), transport)(
            transport,
            Protocol(is_client=False, max_size=config.settings.max_size, deflate=deflate),
            config.settings,
            request=request,
            subprotocol=subprotocol,
        )
        transport.set_protocol(ws)
        logger.debug("accepted WebSocket from %s: %s", self._peer, request.path)
        task = asyncio.get_running_loop().create_task(_run_handler(config, ws))
        config.tasks.add(task)
        task.add_done_callback(config.tasks.discard)
        if rest:
            ws.data_received(rest)

    def _refuse(
        self,
        status: int,
        message: str,
        headers: HeadersLike | None,
        body: bytes | None,
        request: Request | None,
    ) -> None:
        transport = self._transport
        assert transport is not None
        self._done = True
        self._config.handshakes.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        target = f" {request.method} {request.path}" if request is not None else ""
        logger.info("refused handshake from %s%s: %d %s", self._peer, target, status, message)
        transport.write(
            build_error_response(
                status, message, headers, server=self._config.server_header, body=body
            )
        )
        transport.close()

    def _timed_out(self) -> None:
        if self._done or self._transport is None:
            return
        self._done = True
        logger.info("handshake from %s timed out", self._peer)
        self._transport.abort()

    def abort(self) -> None:
        """Drop a connection whose handshake is not finished (server shutdown)."""
        if not self._done and self._transport is not None:
            self._done = True
            self._transport.abort()


async def _run_handler(config: _ServerConfig, ws: Websocket) -> None:
    """Run the application's handler; close with 1000 after it returns, 1011 if it raises."""
    config.connections.add(ws)
    try:
        try:
            await config.handler(ws)
        except ConnectionClosed:
            pass  # the peer went away while the handler was sending: not an application error
        except Exception:
            peer = ws.writer.get_extra_info("peername")
            logger.exception("connection handler failed for %s", peer)
            await _close_quietly(ws, 1011, "internal error")
            return
        await _close_quietly(ws, 1000, "")
    finally:
        config.connections.discard(ws)


async def _close_quietly(ws: Websocket, code: int, reason: str) -> None:
    try:
        await ws.close(code, reason)
    except ConnectionClosed:
        pass


class Server(asyncio.AbstractServer):
    """An ``asyncio.Server`` that knows its WebSocket connections.

    Everything an ``asyncio.Server`` does is here (``sockets``, ``serve_forever``,
    ``async with``, ...). ``close()`` stops listening and closes every open connection with
    1001 (going away); ``wait_closed()`` then waits for them and for their handlers, at most
    the close timeout before it cancels what is left. ``connections`` is the set of open
    ``Websocket`` objects, e.g. for ``broadcast``.
    """

    def __init__(self, server: asyncio.AbstractServer, config: _ServerConfig) -> None:
        self._server = server
        self._config = config
        self._closing: asyncio.Task[None] | None = None

    @property
    def connections(self) -> set[Websocket]:
        """The open connections (their handlers are running): e.g. for ``broadcast``."""
        return self._config.connections

    @property
    def sockets(self) -> Any:
        return getattr(self._server, "sockets", ())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)

    def close(self) -> None:
        """Stop listening, drop unfinished handshakes and close every open connection with
        1001 (going away). Unlike a bare ``asyncio.Server``, existing connections end too."""
        self._server.close()
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close_connections())

    async def _close_connections(self) -> None:
        config = self._config
        for handshake in list(config.handshakes):
            handshake.abort()
        going_away = "server shutting down"
        closing = [_close_quietly(ws, 1001, going_away) for ws in list(config.connections)]
        if closing:
            await asyncio.gather(*closing, return_exceptions=True)
        tasks = [t for t in config.tasks if not t.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=config.settings.close_timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)

    async def wait_closed(self) -> None:
        """Wait until ``close()`` is done: the connections closed and their handlers returned
        (handlers still running after the close timeout are cancelled)."""
        if self._closing is not None:
            await asyncio.shield(self._closing)
        await self._server.wait_closed()

    def is_serving(self) -> bool:
        return self._server.is_serving()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._server.get_loop()

    async def start_serving(self) -> None:
        await self._server.start_serving()

    async def serve_forever(self) -> None:
        """Serve until cancelled; then ``close()`` (1001 to every connection) and
        ``wait_closed()``. Not the wrapped server's own: once cancelled, it waits for its
        connections to end (aiofastnet's, and asyncio's since 3.12.1) before asyncws' close
        could end them."""
        await self._server.start_serving()
        try:
            await asyncio.get_running_loop().create_future()  # never resolved: until cancelled
        finally:
            self.close()
            await self.wait_closed()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


def _config(
    handler: Handler,
    *,
    max_size: int | None,
    max_queue: int,
    write_limit: int | None,
    open_timeout: float | None,
    close_timeout: float,
    ping_interval: float | None,
    ping_timeout: float | None,
    origins: Sequence[str | None] | None,
    subprotocols: Sequence[str] | None,
    process_request: ProcessRequest | None,
    extra_headers: ExtraHeaders | None,
    server_header: str | None,
    compression: str | Deflate | None,
) -> _ServerConfig:
    """The server's shared configuration, from the options of ``start_server`` (no defaults
    here: they are in the signatures, from ``options``)."""
    settings = Settings(
        max_size=max_size,
        max_queue=max_queue,
        write_limit=write_limit,
        close_timeout=close_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
    )
    return _ServerConfig(
        handler,
        settings,
        open_timeout=open_timeout,
        origins=origins,
        subprotocols=subprotocols,
        process_request=process_request,
        extra_headers=extra_headers,
        server_header=server_header,
        compression=compression_options(compression),
    )


async def start_server(
    handler: Handler,
    host: str | Sequence[str] | None = None,
    port: int | None = None,
    *,
    max_size: int | None = MAX_SIZE,
    max_queue: int = MAX_QUEUE,
    write_limit: int | None = None,
    open_timeout: float | None = OPEN_TIMEOUT,
    close_timeout: float = CLOSE_TIMEOUT,
    ping_interval: float | None = PING_INTERVAL,
    ping_timeout: float | None = PING_TIMEOUT,
    origins: Sequence[str | None] | None = None,
    subprotocols: Sequence[str] | None = None,
    process_request: ProcessRequest | None = None,
    extra_headers: ExtraHeaders | None = None,
    server_header: str | None = SERVER_HEADER,
    compression: str | Deflate | None = None,
    transport: str = TRANSPORT,
    **kwds: Any,
) -> Server:
    """Start a WebSocket server; ``handler(ws)`` is awaited for each connection whose handshake
    succeeds. Returns a ``Server``, which behaves as the ``asyncio.Server`` it wraps.

    Limits: ``max_size`` (largest message, default 1 MiB, None for none; larger closes with
    1009), ``max_queue`` (received messages buffered before reading stops), ``write_limit``
    (write-buffer high-water mark), ``open_timeout`` (seconds to complete the handshake),
    ``close_timeout``; keepalive: ``ping_interval`` / ``ping_timeout`` (None disables).
    Handshake: ``origins`` (allowed Origin values; None in the list admits requests without
    one; others get 403), ``subprotocols`` (in order of preference), ``process_request``
    (``f(request)``, sync or async, returns None to accept or ``(status, headers, body)`` to
    refuse), ``extra_headers`` (added to the 101 response, or ``f(request)`` returning them),
    ``server_header`` (None removes it), ``compression`` ("deflate" or a ``Deflate`` for
    permessage-deflate, off by default). Other keywords (``ssl``, ``reuse_port``, ``backlog``,
    ...) go to ``loop.create_server``. The defaults are those of ``asyncws.options``.
    """
    config = _config(
        handler,
        max_size=max_size,
        max_queue=max_queue,
        write_limit=write_limit,
        open_timeout=open_timeout,
        close_timeout=close_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        origins=origins,
        subprotocols=subprotocols,
        process_request=process_request,
        extra_headers=extra_headers,
        server_header=server_header,
        compression=compression,
    )
    check_transport(transport)
    server = await create_server(transport, lambda: ServerHandshake(config), host, port, **kwds)
    return Server(server, config)


async def start_unix_server(
    handler: Handler,
    path: str | None = None,
    *,
    max_size: int | None = MAX_SIZE,
    max_queue: int = MAX_QUEUE,
    write_limit: int | None = None,
    open_timeout: float | None = OPEN_TIMEOUT,
    close_timeout: float = CLOSE_TIMEOUT,
    ping_interval: float | None = PING_INTERVAL,
    ping_timeout: float | None = PING_TIMEOUT,
    origins: Sequence[str | None] | None = None,
    subprotocols: Sequence[str] | None = None,
    process_request: ProcessRequest | None = None,
    extra_headers: ExtraHeaders | None = None,
    server_header: str | None = SERVER_HEADER,
    compression: str | Deflate | None = None,
    transport: str = TRANSPORT,
    **kwds: Any,
) -> Server:
    """``start_server`` on a Unix domain socket at ``path``: the same keywords, the rest going
    to ``loop.create_unix_server``."""
    config = _config(
        handler,
        max_size=max_size,
        max_queue=max_queue,
        write_limit=write_limit,
        open_timeout=open_timeout,
        close_timeout=close_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        origins=origins,
        subprotocols=subprotocols,
        process_request=process_request,
        extra_headers=extra_headers,
        server_header=server_header,
        compression=compression,
    )
    check_transport(transport)
    server = await create_unix_server(transport, lambda: ServerHandshake(config), path, **kwds)
    return Server(server, config)
