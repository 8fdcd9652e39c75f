"""The client side: ``connect()`` and the protocol that performs the client's handshake.

This module holds ``connect``, the parsing of ``ws://`` / ``wss://`` URLs (``parse_uri``) and
``ClientHandshake``, the ``asyncio.Protocol`` a new connection starts with: it sends the upgrade
request, collects and checks the response with ``handshake``, then hands the transport to a
``Websocket``. ``connect`` returns only a fully open Websocket or raises; it never leaves a
half-open connection behind. It must not parse frames or HTTP itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any, NamedTuple, cast
from urllib.parse import urlsplit

from .connection import Websocket
from .exceptions import InvalidHandshake, InvalidURI
from .handshake import (
    HandshakeError,
    HeadersLike,
    HeadReader,
    build_request,
    check_response,
    generate_key,
    parse_response,
)
from .protocol import Protocol

__all__ = ["connect", "parse_uri", "WebSocketURI", "ClientHandshake"]

DEFAULT_MAX_SIZE = 2**20
DEFAULT_MAX_QUEUE = 32


class WebSocketURI(NamedTuple):
    """A parsed ``ws://`` or ``wss://`` URL (RFC 6455 section 3)."""

    secure: bool
    host: str
    port: int
    resource: str  # path and query, as sent in the request line
    host_header: str


def parse_uri(url: str) -> WebSocketURI:
    """Parse a WebSocket URL; raises ``InvalidURI``. Section 3: fragments are not allowed."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURI(f"{url!r} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise InvalidURI(f"{url!r} is not a ws:// or wss:// URL")
    if parts.fragment:
        raise InvalidURI(f"{url!r} has a fragment, which WebSocket URLs may not have")
    host = parts.hostname
    if not host:
        raise InvalidURI(f"{url!r} has no host")
    secure = scheme == "wss"
    default_port = 443 if secure else 80
    if port is None:
        port = default_port
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    try:
        is_v6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        is_v6 = False
    authority = f"[{host}]" if is_v6 else host
    if port != default_port:
        authority += f":{port}"
    return WebSocketURI(secure, host, port, resource, authority)


class ClientHandshake(asyncio.Protocol):
    """Sends the upgrade request and checks the answer; then a ``Websocket`` takes over."""

    def __init__(
        self,
        uri: WebSocketURI,
        key: str,
        extra_headers: HeadersLike | None,
        max_size: int | None,
        max_queue: int,
        close_timeout: float,
    ) -> None:
        self._uri = uri
        self._key = key
        self._extra_headers = extra_headers
        self._max_size = max_size
        self._max_queue = max_queue
        self._close_timeout = close_timeout
        self._transport: asyncio.Transport | None = None
        self._head = HeadReader()
        self.done: asyncio.Future[Websocket] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)
        uri = self._uri
        request = build_request(uri.host_header, uri.resource, self._key, self._extra_headers)
        self._transport.write(request)

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        try:
            got = self._head.feed(data)
            if got is None:
                return
            head, rest = got
            response = parse_response(head)
            check_response(response, self._key)
        except HandshakeError as exc:
            self._fail(InvalidHandshake(f"bad response from server: {exc.message}"))
            return
        except InvalidHandshake as exc:
            self._fail(exc)
            return
        transport = self._transport
        assert transport is not None
        ws = Websocket(
            transport,
            Protocol(is_client=True, max_size=self._max_size),
            response=response,
            max_queue=self._max_queue,
            close_timeout=self._close_timeout,
        )
        transport.set_protocol(ws)
        self.done.set_result(ws)
        if rest:
            ws.data_received(rest)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.done.done():
            self.done.set_exception(
                InvalidHandshake(f"connection closed during the handshake ({exc or 'EOF'})")
            )

    def _fail(self, exc: InvalidHandshake) -> None:
        self.done.set_exception(exc)
        if self._transport is not None:
            self._transport.abort()


async def connect(
    wsurl: str,
    *,
    max_size: int | None = DEFAULT_MAX_SIZE,
    max_queue: int = DEFAULT_MAX_QUEUE,
    open_timeout: float | None = 10.0,
    close_timeout: float = 10.0,
    extra_headers: HeadersLike | None = None,
    **kwds: Any,
) -> Websocket:
    """Connect to a WebSocket server and perform the opening handshake; return a ``Websocket``.

    ``wss://`` URLs use TLS: without ``ssl=``, a default, certificate-verifying context.
    ``max_size``, ``max_queue`` and ``close_timeout`` are as for ``start_server``;
    ``open_timeout`` bounds the TCP connect and the handshake together (``TimeoutError``).
    Other keywords (``ssl``, ``server_hostname``, ``local_addr``, ...) go to
    ``loop.create_connection``. Raises ``InvalidHandshake`` when the server refuses or answers
    badly (with ``status`` when it sent one), ``InvalidURI`` for a bad URL.
    """
    uri = parse_uri(wsurl)
    if uri.secure:
        kwds.setdefault("ssl", True)
    elif kwds.get("ssl"):
        raise InvalidURI(f"ssl= was given for a ws:// URL ({wsurl!r}); use wss://")
    loop = asyncio.get_running_loop()
    key = generate_key()
    transport: asyncio.BaseTransport | None = None

    async def open_connection() -> Websocket:
        nonlocal transport
        transport, handshake = await loop.create_connection(
            lambda: ClientHandshake(
                uri, key, extra_headers, max_size, max_queue, close_timeout
            ),
            uri.host,
            uri.port,
            **kwds,
        )
        return await handshake.done

    try:
        return await asyncio.wait_for(open_connection(), open_timeout)
    except BaseException:
        if transport is not None:
            transport.abort()  # type: ignore[attr-defined]
        raise
