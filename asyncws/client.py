"""The client side: ``connect()``, ``unix_connect()`` and the client's handshake protocol.

This module holds ``connect`` (awaitable, and an async context manager that closes the
connection on exit), the parsing of ``ws://`` / ``wss://`` URLs (``parse_uri``), redirects, and
``ClientHandshake``, the ``asyncio.Protocol`` a new connection starts with: it sends the upgrade
request, collects and checks the response with ``handshake`` (subprotocol, permessage-deflate),
then hands the transport to a ``Websocket``. ``connect`` gives only a fully open Websocket or
raises; it never leaves a half-open connection behind. It must not parse frames or HTTP itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Generator, Sequence
from typing import Any, NamedTuple, cast
from urllib.parse import urljoin, urlsplit

from .connection import Settings, Websocket, websocket_class
from .deflate import (
    Deflate,
    PerMessageDeflate,
    client_accept,
    client_offer,
    compression_options,
)
from .exceptions import InvalidHandshake, InvalidURI, OpenTimeout
from .handshake import (
    USER_AGENT,
    HandshakeError,
    HeadersLike,
    HeadReader,
    Response,
    build_request,
    check_response,
    generate_key,
    parse_response,
)
from .protocol import Protocol

__all__ = ["connect", "unix_connect", "Connect", "parse_uri", "WebSocketURI", "ClientHandshake"]

logger = logging.getLogger("asyncws")

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


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


class _Options:
    """What ``connect`` was asked for, kept across redirects."""

    __slots__ = (
        "settings",
        "extra_headers",
        "user_agent",
        "origin",
        "subprotocols",
        "compression",
    )

    def __init__(
        self,
        settings: Settings,
        extra_headers: HeadersLike | None,
        user_agent: str | None,
        origin: str | None,
        subprotocols: Sequence[str] | None,
        compression: Deflate | None,
    ) -> None:
        self.settings = settings
        self.extra_headers = extra_headers
        self.user_agent = user_agent
        self.origin = origin
        self.subprotocols = subprotocols
        self.compression = compression


class _Redirect(Exception):
    def __init__(self, location: str, status: int) -> None:
        self.location = location
        self.status = status


class ClientHandshake(asyncio.Protocol):
    """Sends the upgrade request and checks the answer; then a ``Websocket`` takes over."""

    def __init__(self, uri: WebSocketURI, options: _Options) -> None:
        self._uri = uri
        self._options = options
        self._key = generate_key()
        self._transport: asyncio.Transport | None = None
        self._head = HeadReader()
        self.done: asyncio.Future[Websocket] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)
        uri, options = self._uri, self._options
        offer = client_offer(options.compression) if options.compression is not None else None
        request = build_request(
            uri.host_header,
            uri.resource,
            self._key,
            options.extra_headers,
            user_agent=options.user_agent,
            origin=options.origin,
            subprotocols=options.subprotocols,
            extensions=offer,
        )
        self._transport.write(request)

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        options = self._options
        try:
            got = self._head.feed(data)
            if got is None:
                return
            head, rest = got
            response = parse_response(head)
            location = response.headers.get("Location")
            if response.status in _REDIRECTS and location:
                self._fail(_Redirect(location, response.status))
                return
            subprotocol = check_response(
                response,
                self._key,
                subprotocols=options.subprotocols,
                extensions_offered=options.compression is not None,
            )
            deflate = self._deflate(response)
        except HandshakeError as exc:
            self._fail(InvalidHandshake(f"bad response from server: {exc.message}"))
            return
        except InvalidHandshake as exc:
            self._fail(exc)
            return
        transport = self._transport
        assert transport is not None
        ws = websocket_class(asyncio.get_running_loop())(
            transport,
            Protocol(is_client=True, max_size=options.settings.max_size, deflate=deflate),
            options.settings,
            response=response,
            subprotocol=subprotocol,
        )
        transport.set_protocol(ws)
        self.done.set_result(ws)
        if rest:
            ws.data_received(rest)

    def _deflate(self, response: Response) -> PerMessageDeflate | None:
        compression = self._options.compression
        values = response.headers.get_all("Sec-WebSocket-Extensions")
        if compression is None or not values:
            return None
        return client_accept(values, compression, self._options.settings.max_size)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.done.done():
            self.done.set_exception(
                InvalidHandshake(f"connection closed during the handshake ({exc or 'EOF'})")
            )

    def _fail(self, exc: Exception) -> None:
        self.done.set_exception(exc)
        if self._transport is not None:
            self._transport.abort()


class Connect:
    """What ``connect()`` and ``unix_connect()`` return: ``await`` it for a ``Websocket``, or
    use it as ``async with connect(...) as ws:``, which closes the connection on the way out."""

    def __init__(
        self,
        wsurl: str,
        options: _Options,
        open_timeout: float | None,
        max_redirects: int,
        unix_path: str | None,
        kwds: dict[str, Any],
    ) -> None:
        parse_uri(wsurl)  # a bad URL fails here, at the call, not at the await
        self._url = wsurl
        self._options = options
        self._open_timeout = open_timeout
        self._max_redirects = max_redirects
        self._unix_path = unix_path
        self._kwds = kwds
        self._ws: Websocket | None = None

    def __await__(self) -> Generator[Any, None, Websocket]:
        return self._open().__await__()

    async def __aenter__(self) -> Websocket:
        self._ws = await self._open()
        return self._ws

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()

    async def _open(self) -> Websocket:
        if self._open_timeout is None:
            return await self._follow_redirects()
        try:
            return await asyncio.wait_for(self._follow_redirects(), self._open_timeout)
        except asyncio.TimeoutError:
            raise OpenTimeout(
                f"no WebSocket connection to {self._url} within {self._open_timeout} s"
            ) from None

    async def _follow_redirects(self) -> Websocket:
        url = self._url
        for _ in range(self._max_redirects + 1):
            try:
                return await self._open_one(url)
            except _Redirect as redirect:
                new_url = _redirect_url(url, redirect.location)
                logger.info("following %d redirect from %s to %s", redirect.status, url, new_url)
                url = new_url
        raise InvalidHandshake(f"more than {self._max_redirects} redirects")

    async def _open_one(self, url: str) -> Websocket:
        uri = parse_uri(url)
        kwds = dict(self._kwds)
        if uri.secure:
            kwds.setdefault("ssl", True)
            if self._unix_path is not None:
                kwds.setdefault("server_hostname", uri.host)
        elif kwds.get("ssl"):
            raise InvalidURI(f"ssl= was given for a ws:// URL ({url!r}); use wss://")
        loop = asyncio.get_running_loop()
        transport: asyncio.BaseTransport | None = None
        try:
            if self._unix_path is not None:
                transport, handshake = await loop.create_unix_connection(
                    lambda: ClientHandshake(uri, self._options), self._unix_path, **kwds
                )
            else:
                transport, handshake = await loop.create_connection(
                    lambda: ClientHandshake(uri, self._options), uri.host, uri.port, **kwds
                )
            return await handshake.done
        except BaseException:
            if transport is not None:
                transport.abort()  # type: ignore[attr-defined]
            raise


def _redirect_url(current: str, location: str) -> str:
    """Where a redirect leads: relative locations resolve against the current URL; http(s)
    locations map to ws(s); a redirect from wss:// to ws:// is refused."""
    target = urljoin(current.replace("ws", "http", 1), location)
    if target.startswith("http"):
        target = "ws" + target[4:]
    if current.startswith("wss:") and not target.startswith("wss:"):
        raise InvalidHandshake(f"refusing a redirect from {current} to insecure {target}")
    parse_uri(target)
    return target


def _options(
    *,
    max_size: int | None = 2**20,
    max_queue: int = 32,
    write_limit: int | None = None,
    close_timeout: float = 10.0,
    ping_interval: float | None = 20.0,
    ping_timeout: float | None = 20.0,
    extra_headers: HeadersLike | None = None,
    user_agent_header: str | None = USER_AGENT,
    origin: str | None = None,
    subprotocols: Sequence[str] | None = None,
    compression: str | Deflate | None = None,
) -> _Options:
    """The client's options; the defaults here are the documented ones."""
    settings = Settings(
        max_size, max_queue, write_limit, close_timeout, ping_interval, ping_timeout
    )
    return _Options(
        settings,
        extra_headers,
        user_agent_header,
        origin,
        subprotocols,
        compression_options(compression),
    )


_OPTION_NAMES = (
    "max_size",
    "max_queue",
    "write_limit",
    "close_timeout",
    "ping_interval",
    "ping_timeout",
    "extra_headers",
    "user_agent_header",
    "origin",
    "subprotocols",
    "compression",
)


def connect(
    wsurl: str,
    *,
    max_size: int | None = 2**20,
    max_queue: int = 32,
    write_limit: int | None = None,
    open_timeout: float | None = 10.0,
    close_timeout: float = 10.0,
    ping_interval: float | None = 20.0,
    ping_timeout: float | None = 20.0,
    extra_headers: HeadersLike | None = None,
    user_agent_header: str | None = USER_AGENT,
    origin: str | None = None,
    subprotocols: Sequence[str] | None = None,
    compression: str | Deflate | None = None,
    max_redirects: int = 10,
    **kwds: Any,
) -> Connect:
    """Connect to a WebSocket server and perform the opening handshake.

    ``await connect(url)`` gives a ``Websocket``; ``async with connect(url) as ws:`` also
    closes it at the end. ``wss://`` URLs use TLS: without ``ssl=``, a default,
    certificate-verifying context. ``max_size``, ``max_queue``, ``write_limit``,
    ``close_timeout``, ``ping_interval``, ``ping_timeout`` and ``compression`` are as for
    ``start_server``; ``open_timeout`` bounds the TCP connect and the handshake together,
    redirects included (``TimeoutError``). ``extra_headers`` are added to the request,
    ``user_agent_header`` replaces the User-Agent (None removes it), ``origin`` sets the Origin
    header, ``subprotocols`` are offered in order (the chosen one is ``ws.subprotocol``); up to
    ``max_redirects`` 3xx redirects are followed. Other keywords (``ssl``, ``server_hostname``,
    ``local_addr``, ...) go to ``loop.create_connection``. Raises ``InvalidHandshake`` when the
    server refuses or answers badly (with ``status`` when it sent one), ``InvalidURI`` for a bad
    URL.
    """
    # The keyword parameters above, by name (the signature spells them out for users and mypy).
    arguments = locals()
    options = _options(**{name: arguments[name] for name in _OPTION_NAMES})
    return Connect(wsurl, options, open_timeout, max_redirects, None, kwds)


def unix_connect(path: str, wsurl: str = "ws://localhost/", **kwds: Any) -> Connect:
    """``connect`` over the Unix domain socket at ``path``; ``wsurl`` gives the Host header and
    the resource. Takes the same keywords as ``connect``."""
    options = _options(**{name: kwds.pop(name) for name in _OPTION_NAMES if name in kwds})
    open_timeout = kwds.pop("open_timeout", 10.0)
    max_redirects = kwds.pop("max_redirects", 0)
    return Connect(wsurl, options, open_timeout, max_redirects, path, kwds)
