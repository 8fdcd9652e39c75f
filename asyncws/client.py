"""The client side: ``connect()``, ``unix_connect()`` and the client's handshake protocol.

This module holds ``connect`` (awaitable; an async context manager that closes the connection on
exit; and an async iterator that reconnects, with backoff, after the connection is lost), the
parsing of ``ws://`` / ``wss://`` URLs (``parse_uri``), redirects, the choice of a proxy for each
URL (the tunnel itself is ``proxy``'s), and ``ClientHandshake``, the ``asyncio.Protocol`` a new
connection starts with: it sends the upgrade request, collects and checks the response with
``handshake`` (subprotocol, permessage-deflate), then hands the transport to a ``Websocket``.
``connect`` gives only a fully open Websocket or raises; it never leaves a half-open connection
behind. It must not parse frames or HTTP itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import ssl as ssl_module
from collections.abc import Generator, Iterator, Sequence
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
from .exceptions import ConnectionClosed, InvalidHandshake, InvalidURI, OpenTimeout
from .handshake import (
    HandshakeError,
    HeadersLike,
    HeadReader,
    Response,
    build_request,
    check_response,
    generate_key,
    parse_response,
)
from .options import (
    CLOSE_TIMEOUT,
    MAX_QUEUE,
    MAX_REDIRECTS,
    MAX_SIZE,
    OPEN_TIMEOUT,
    PING_INTERVAL,
    PING_TIMEOUT,
    PROXY,
    RECONNECT_DELAY,
    RECONNECT_MAX_DELAY,
    TRANSPORT,
    USER_AGENT_HEADER,
)
from .protocol import Protocol
from .proxy import ProxyURL, open_through_proxy, parse_proxy, proxy_from_environment
from .transports import adopt, check_transport, create_connection, create_unix_connection

__all__ = [
    "connect",
    "unix_connect",
    "Connect",
    "Reconnect",
    "parse_uri",
    "WebSocketURI",
    "ClientHandshake",
]

logger = logging.getLogger("asyncws")

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Close codes after which ``async for ws in connect(...)`` reconnects: the connection was lost
# (1006), the server failed (1011), is restarting (1012), overloaded (1013), or its upstream
# failed (1014); and 1001, going away, which is what a server that shuts down to restart sends.
RECONNECT_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 1014})


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
        *,
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
        adopt(transport)
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
        ws = websocket_class(asyncio.get_running_loop(), transport)(
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
    """What ``connect()`` and ``unix_connect()`` return: ``await`` it for a ``Websocket``; use
    it as ``async with connect(...) as ws:``, which closes the connection on the way out; or
    iterate over it, ``async for ws in connect(...):``, for a new connection each time the
    previous one is lost (see ``Reconnect``)."""

    def __init__(
        self,
        wsurl: str,
        options: _Options,
        *,
        open_timeout: float | None,
        max_redirects: int,
        unix_path: str | None,
        proxy: str | bool | None,
        proxy_ssl: ssl_module.SSLContext | None,
        reconnect_delay: float,
        reconnect_max_delay: float,
        transport: str,
        kwds: dict[str, Any],
    ) -> None:
        # A bad URL (or proxy URL, or a missing SOCKS library) fails here, at the call.
        parse_uri(wsurl)
        check_transport(transport)
        self._transport_kind = transport
        if isinstance(proxy, str):
            _check_proxy(parse_proxy(proxy))
        self._url = wsurl
        self._options = options
        self._open_timeout = open_timeout
        self._max_redirects = max_redirects
        self._unix_path = unix_path
        self._proxy = proxy
        self._proxy_ssl = proxy_ssl
        self._reconnect_delay = reconnect_delay
        self._reconnect_max_delay = reconnect_max_delay
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

    def __aiter__(self) -> Reconnect:
        return Reconnect(self, self._url, self._reconnect_delay, self._reconnect_max_delay)

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
        status = None
        for _ in range(self._max_redirects + 1):
            try:
                return await self._open_one(url)
            except _Redirect as redirect:
                status = redirect.status
                new_url = _redirect_url(url, redirect.location, status)
                logger.info("following %d redirect from %s to %s", status, url, new_url)
                url = new_url
        # The status of the last redirect: a 3xx, which reconnecting does not retry.
        raise InvalidHandshake(f"more than {self._max_redirects} redirects", status)

    def _proxy_for(self, uri: WebSocketURI) -> ProxyURL | None:
        """The proxy for this URL: the one given, or the environment's (rule in ``proxy``)."""
        if self._unix_path is not None or self._proxy is None or self._proxy is False:
            return None
        if self._proxy is True:
            url = proxy_from_environment(uri.host, uri.port, uri.secure)
            if url is None:
                return None
            return _check_proxy(parse_proxy(url))
        return parse_proxy(self._proxy)

    async def _open_one(self, url: str) -> Websocket:
        uri = parse_uri(url)
        kwds = dict(self._kwds)
        if uri.secure:
            kwds.setdefault("ssl", True)
            if self._unix_path is not None:
                kwds.setdefault("server_hostname", uri.host)
        elif kwds.get("ssl"):
            raise InvalidURI(f"ssl= was given for a ws:// URL ({url!r}); use wss://")
        proxy = self._proxy_for(uri)
        handshake = ClientHandshake(uri, self._options)
        transport: asyncio.BaseTransport | None = None
        try:
            if self._unix_path is not None:
                transport = await create_unix_connection(
                    self._transport_kind, lambda: handshake, self._unix_path, **kwds
                )
            elif proxy is None:
                transport = await create_connection(
                    self._transport_kind, lambda: handshake, uri.host, uri.port, **kwds
                )
            else:
                transport = await open_through_proxy(
                    proxy,
                    uri.host,
                    uri.port,
                    lambda: handshake,
                    proxy_ssl=self._proxy_ssl,
                    user_agent=self._options.user_agent,
                    open_timeout=self._open_timeout,
                    kwds=kwds,
                )
            return await handshake.done
        except BaseException:
            if transport is not None:
                transport.abort()  # type: ignore[attr-defined]
            raise


def _check_proxy(proxy: ProxyURL) -> ProxyURL:
    """Fail early, with the fix, when a SOCKS proxy is asked for without python-socks."""
    if proxy.scheme.startswith("socks"):
        try:
            import python_socks  # noqa: F401
        except ImportError:
            raise ImportError(
                f"a {proxy.scheme}:// proxy needs python-socks: pip install 'asyncws[socks]'"
            ) from None
    return proxy


class Reconnect:
    """``async for ws in connect(url):``, an async iterator of connections.

    Each ``ws`` it gives is open. When the loop asks for the next one, the previous one is
    closed first (with 1000 if it is still open); then, if it ended with a normal closure
    (1000, or 1005: no code), the loop ends; if it was lost (a code in ``RECONNECT_CODES``),
    or was still open, a new connection is made. Another close code ends the loop with
    ``ConnectionClosed``. Failed attempts are retried with exponential backoff: the first retry
    at once, the next after about ``reconnect_delay`` seconds, then twice as long each time, up
    to ``reconnect_max_delay`` (each delay is drawn between half and all of that value, so that
    clients do not come back in step). Only errors that retrying may fix are retried: network
    errors, ``OpenTimeout``, a connection lost during the handshake, a 5xx or 429 answer (from
    the server or the proxy); anything else (another 4xx, a TLS certificate error, a bad URL)
    is raised. Breaking out of the loop ends it and leaves the current connection to the caller.
    """

    def __init__(
        self, connect: Connect, url: str, reconnect_delay: float, reconnect_max_delay: float
    ) -> None:
        self._connect = connect
        self._url = url
        self._reconnect_delay = reconnect_delay
        self._reconnect_max_delay = reconnect_max_delay
        self._current: Websocket | None = None

    def __aiter__(self) -> Reconnect:
        return self

    async def __anext__(self) -> Websocket:
        delays = self._delays()
        previous, self._current = self._current, None
        if previous is not None:
            if previous.open:
                await previous.close()
            else:
                await previous.closed
                code = previous.close_code
                if code not in RECONNECT_CODES:
                    if code in (1000, 1005):
                        raise StopAsyncIteration
                    raise ConnectionClosed(code, previous.close_reason)
                delay = next(delays)
                logger.info(
                    "connection to %s lost (close code %s); reconnecting in %.2f s",
                    self._url,
                    code,
                    delay,
                )
                await asyncio.sleep(delay)
        while True:
            try:
                self._current = await self._connect._open()
                return self._current
            except Exception as exc:
                if not retryable(exc):
                    raise
                delay = next(delays)
                logger.info(
                    "cannot connect to %s (%s: %s); retrying in %.2f s",
                    self._url,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    def _delays(self) -> Iterator[float]:
        """The waits before each retry: 0, then about reconnect_delay, doubling to the cap."""
        yield 0.0
        delay = self._reconnect_delay
        while True:
            yield random.uniform(delay / 2, delay)
            delay = min(delay * 2, self._reconnect_max_delay)


def retryable(exc: BaseException) -> bool:
    """Whether connecting again may succeed where ``exc`` stopped ``connect()``."""
    if isinstance(exc, InvalidURI):
        return False
    if isinstance(exc, InvalidHandshake):
        status = exc.status
        # None: the connection was lost during the handshake (or the proxy's); 101: the server
        # accepted, but wrongly; 3xx: too many redirects; 4xx but 429: refused for good.
        return status is None or status == 429 or status >= 500
    if isinstance(exc, ssl_module.SSLCertVerificationError):
        return False
    return isinstance(exc, (OSError, asyncio.TimeoutError))


def _redirect_url(current: str, location: str, status: int | None = None) -> str:
    """Where a redirect leads: relative locations resolve against the current URL; http(s)
    locations map to ws(s); a redirect from wss:// to ws:// is refused (with its ``status``)."""
    target = urljoin(current.replace("ws", "http", 1), location)
    if target.startswith("http"):
        target = "ws" + target[4:]
    if current.startswith("wss:") and not target.startswith("wss:"):
        raise InvalidHandshake(f"refusing a redirect from {current} to insecure {target}", status)
    parse_uri(target)
    return target


def _options(
    *,
    max_size: int | None,
    max_queue: int,
    write_limit: int | None,
    close_timeout: float,
    ping_interval: float | None,
    ping_timeout: float | None,
    extra_headers: HeadersLike | None,
    user_agent_header: str | None,
    origin: str | None,
    subprotocols: Sequence[str] | None,
    compression: str | Deflate | None,
) -> _Options:
    """The client's options, from the keywords of ``connect`` (no defaults here: they are in
    the signatures, from ``options``)."""
    settings = Settings(
        max_size=max_size,
        max_queue=max_queue,
        write_limit=write_limit,
        close_timeout=close_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
    )
    return _Options(
        settings,
        extra_headers=extra_headers,
        user_agent=user_agent_header,
        origin=origin,
        subprotocols=subprotocols,
        compression=compression_options(compression),
    )


def connect(
    wsurl: str,
    *,
    max_size: int | None = MAX_SIZE,
    max_queue: int = MAX_QUEUE,
    write_limit: int | None = None,
    open_timeout: float | None = OPEN_TIMEOUT,
    close_timeout: float = CLOSE_TIMEOUT,
    ping_interval: float | None = PING_INTERVAL,
    ping_timeout: float | None = PING_TIMEOUT,
    extra_headers: HeadersLike | None = None,
    user_agent_header: str | None = USER_AGENT_HEADER,
    origin: str | None = None,
    subprotocols: Sequence[str] | None = None,
    compression: str | Deflate | None = None,
    max_redirects: int = MAX_REDIRECTS,
    proxy: str | bool | None = PROXY,
    proxy_ssl: ssl_module.SSLContext | None = None,
    reconnect_delay: float = RECONNECT_DELAY,
    reconnect_max_delay: float = RECONNECT_MAX_DELAY,
    transport: str = TRANSPORT,
    **kwds: Any,
) -> Connect:
    """Connect to a WebSocket server and perform the opening handshake.

    ``await connect(url)`` gives a ``Websocket``; ``async with connect(url) as ws:`` also
    closes it at the end; ``async for ws in connect(url):`` gives a new connection each time
    the previous one is lost, retrying with backoff (``reconnect_delay``, ``reconnect_max_delay``;
    see ``Reconnect``). ``wss://`` URLs use TLS: without ``ssl=``, a default,
    certificate-verifying context. ``max_size``, ``max_queue``, ``write_limit``,
    ``close_timeout``, ``ping_interval``, ``ping_timeout`` and ``compression`` are as for
    ``start_server``; ``open_timeout`` bounds everything ``connect`` does: proxy, TCP, TLS,
    handshake and redirects (``OpenTimeout``). ``extra_headers`` are added to the request,
    ``user_agent_header`` replaces the User-Agent (None removes it), ``origin`` sets the Origin
    header, ``subprotocols`` are offered in order (the chosen one is ``ws.subprotocol``); up to
    ``max_redirects`` 3xx redirects are followed. ``proxy``: a proxy URL (``http://``,
    ``https://``, with ``user:password@`` for Basic authentication; ``socks5://``,
    ``socks5h://``, ``socks4://`` with ``asyncws[socks]``), None for a direct connection, or
    True (the default) for the environment's: ``https_proxy`` for ``wss://``, ``http_proxy``
    for ``ws://``, unless ``no_proxy`` exempts the host; ``proxy_ssl`` is the TLS context for an
    ``https://`` proxy. Other keywords (``ssl``, ``server_hostname``, ``local_addr``, ...) go
    to ``loop.create_connection``. Raises ``InvalidHandshake`` when the server refuses or
    answers badly (with ``status`` when it sent one), ``ProxyError`` when the proxy refuses,
    ``InvalidURI`` for a bad URL. The defaults are those of ``asyncws.options``.
    """
    options = _options(
        max_size=max_size,
        max_queue=max_queue,
        write_limit=write_limit,
        close_timeout=close_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        extra_headers=extra_headers,
        user_agent_header=user_agent_header,
        origin=origin,
        subprotocols=subprotocols,
        compression=compression,
    )
    return Connect(
        wsurl,
        options,
        open_timeout=open_timeout,
        max_redirects=max_redirects,
        unix_path=None,
        proxy=proxy,
        proxy_ssl=proxy_ssl,
        reconnect_delay=reconnect_delay,
        reconnect_max_delay=reconnect_max_delay,
        transport=transport,
        kwds=kwds,
    )


def unix_connect(
    path: str,
    wsurl: str = "ws://localhost/",
    *,
    max_size: int | None = MAX_SIZE,
    max_queue: int = MAX_QUEUE,
    write_limit: int | None = None,
    open_timeout: float | None = OPEN_TIMEOUT,
    close_timeout: float = CLOSE_TIMEOUT,
    ping_interval: float | None = PING_INTERVAL,
    ping_timeout: float | None = PING_TIMEOUT,
    extra_headers: HeadersLike | None = None,
    user_agent_header: str | None = USER_AGENT_HEADER,
    origin: str | None = None,
    subprotocols: Sequence[str] | None = None,
    compression: str | Deflate | None = None,
    max_redirects: int = MAX_REDIRECTS,
    reconnect_delay: float = RECONNECT_DELAY,
    reconnect_max_delay: float = RECONNECT_MAX_DELAY,
    transport: str = TRANSPORT,
    **kwds: Any,
) -> Connect:
    """``connect`` over the Unix domain socket at ``path``; ``wsurl`` gives the Host header and
    the resource (redirects stay on the same socket). Takes the same keywords as ``connect``
    but the proxy ones; the rest go to ``loop.create_unix_connection``."""
    options = _options(
        max_size=max_size,
        max_queue=max_queue,
        write_limit=write_limit,
        close_timeout=close_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        extra_headers=extra_headers,
        user_agent_header=user_agent_header,
        origin=origin,
        subprotocols=subprotocols,
        compression=compression,
    )
    return Connect(
        wsurl,
        options,
        open_timeout=open_timeout,
        max_redirects=max_redirects,
        unix_path=path,
        proxy=None,
        proxy_ssl=None,
        reconnect_delay=reconnect_delay,
        reconnect_max_delay=reconnect_max_delay,
        transport=transport,
        kwds=kwds,
    )
