"""The way from a client to the server's host and port through a proxy: HTTP(S) CONNECT tunnels
and SOCKS proxies, and the choice of proxy from the environment.

This module holds ``ProxyURL`` and ``parse_proxy`` (a proxy URL and its checks),
``proxy_from_environment`` (the standard library's reading of ``http_proxy``, ``https_proxy``
and ``no_proxy``: ``ws://`` takes the ``http`` entry, ``wss://`` the ``https`` one) and
``open_through_proxy``, which opens the tunnel, layers TLS to the server on it for ``wss://``,
and hands the transport to the client's handshake protocol. SOCKS goes through python-socks, an
optional dependency (``asyncws[socks]``). The bytes of the CONNECT exchange are built and checked
by ``handshake``; this module must not parse HTTP itself, nor know about the WebSocket
handshake or frames. On failure it leaves no socket open.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import urllib.request
from typing import Any, Callable, NamedTuple
from urllib.parse import unquote, urlsplit

from .exceptions import InvalidURI, OpenTimeout, ProxyError
from .handshake import HandshakeError, HeadReader, build_connect_request, check_connect_response

__all__ = ["ProxyURL", "parse_proxy", "proxy_from_environment", "open_through_proxy"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080, "socks4": 1080}
_SOCKS = frozenset({"socks5", "socks5h", "socks4"})
# The ssl-related keywords of loop.create_connection: they apply to the TLS layered over the
# tunnel to the server, the others to the connection to the proxy.
_SERVER_TLS_KEYWORDS = ("ssl", "server_hostname", "ssl_handshake_timeout", "ssl_shutdown_timeout")
# python-socks has no "no timeout" (None means 60 s); connect()'s open_timeout bounds it instead.
_UNBOUNDED = 365 * 86400.0
# SOCKS replies, as the HTTP status of the same meaning (ProxyError.status): SOCKS5 (RFC 1928
# section 6) 2 = not allowed by the ruleset, 1 and 3-6 = could not reach the server; SOCKS4 91
# = rejected or failed.
_SOCKS_STATUS = {1: 502, 2: 403, 3: 502, 4: 502, 5: 502, 6: 502, 7: 501, 8: 501, 91: 502}


class ProxyURL(NamedTuple):
    """A parsed proxy URL: ``scheme`` is http, https, socks5, socks5h or socks4."""

    scheme: str
    host: str
    port: int
    username: str | None
    password: str | None

    def __str__(self) -> str:  # never shows the password
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_proxy(url: str) -> ProxyURL:
    """Parse a proxy URL (``scheme://[user:password@]host[:port]``; no scheme means http);
    raises ``InvalidURI``."""
    text = url if "://" in url else "http://" + url
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InvalidURI(f"{url!r} is not a valid proxy URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise InvalidURI(
            f"{url!r}: a proxy URL starts with http://, https://, socks5://, socks5h:// or "
            "socks4://"
        )
    if not parts.hostname:
        raise InvalidURI(f"proxy URL {url!r} has no host")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return ProxyURL(scheme, parts.hostname, port or _DEFAULT_PORTS[scheme], username, password)


def proxy_from_environment(host: str, port: int, secure: bool) -> str | None:
    """The proxy the environment names for a WebSocket server: the ``https`` entry of
    ``urllib.request.getproxies()`` for ``wss://`` and the ``http`` one for ``ws://`` (from
    ``https_proxy`` / ``http_proxy``, or the system's settings on macOS and Windows), unless
    ``urllib.request.proxy_bypass`` says the host is exempt (``no_proxy``); None otherwise."""
    url = urllib.request.getproxies().get("https" if secure else "http")
    if not url:
        return None
    # proxy_bypass matches the host with and without the port; an IPv6 address must go bare.
    if urllib.request.proxy_bypass(host if ":" in host else f"{host}:{port}"):
        return None
    return url


async def open_through_proxy(
    proxy: ProxyURL,
    host: str,
    port: int,
    protocol_factory: Callable[[], asyncio.Protocol],
    *,
    proxy_ssl: ssl_module.SSLContext | None,
    user_agent: str | None,
    open_timeout: float | None,
    kwds: dict[str, Any],
) -> asyncio.BaseTransport:
    """Reach ``host:port`` through ``proxy`` and connect a new protocol to it; return its
    transport. ``kwds`` are ``connect()``'s keywords for ``loop.create_connection``: the TLS
    ones (``ssl``, ``server_hostname``, ...) apply to the server, layered over the tunnel; the
    others to the connection to the proxy."""
    server_tls = {name: kwds[name] for name in _SERVER_TLS_KEYWORDS if name in kwds}
    to_proxy = {name: value for name, value in kwds.items() if name not in server_tls}
    if server_tls.get("ssl"):
        server_tls.setdefault("server_hostname", host)
    if proxy.scheme in _SOCKS:
        return await _through_socks(
            proxy, host, port, protocol_factory, open_timeout, server_tls, to_proxy
        )
    return await _through_http(proxy, host, port, protocol_factory, proxy_ssl, user_agent,
                               server_tls, to_proxy)


class _Tunnel(asyncio.Protocol):
    """Sends CONNECT to an HTTP proxy and waits for its answer."""

    def __init__(self, request: bytes, proxy: ProxyURL, target: str) -> None:
        self._request = request
        self._proxy = proxy
        self._target = target
        self._head = HeadReader()
        self.established: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self._request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.established.done():
            return
        try:
            got = self._head.feed(data)
            if got is None:
                return
            head, rest = got
            check_connect_response(head, str(self._proxy), self._target)
            if rest:  # a WebSocket server never speaks first: this is not a tunnel
                raise ProxyError(f"proxy {self._proxy} sent data after its answer to CONNECT")
        except HandshakeError as exc:
            self.established.set_exception(
                ProxyError(f"proxy {self._proxy} sent a bad answer to CONNECT: {exc.message}")
            )
        except ProxyError as exc:
            self.established.set_exception(exc)
        else:
            self.established.set_result(None)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.established.done():
            self.established.set_exception(
                ProxyError(
                    f"proxy {self._proxy} closed the connection before answering CONNECT "
                    f"{self._target} ({exc or 'EOF'})"
                )
            )


async def _through_http(
    proxy: ProxyURL,
    host: str,
    port: int,
    protocol_factory: Callable[[], asyncio.Protocol],
    proxy_ssl: ssl_module.SSLContext | None,
    user_agent: str | None,
    server_tls: dict[str, Any],
    to_proxy: dict[str, Any],
) -> asyncio.BaseTransport:
    loop = asyncio.get_running_loop()
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    request = build_connect_request(
        host, port, username=proxy.username, password=proxy.password, user_agent=user_agent
    )
    if proxy.scheme == "https":
        to_proxy["ssl"] = proxy_ssl or ssl_module.create_default_context()
        to_proxy["server_hostname"] = proxy.host
    raw, tunnel = await loop.create_connection(
        lambda: _Tunnel(request, proxy, target), proxy.host, proxy.port, **to_proxy
    )
    try:
        await tunnel.established
        protocol = protocol_factory()
        context = server_tls.get("ssl")
        if not context:
            raw.set_protocol(protocol)
            protocol.connection_made(raw)
            return raw
        if not isinstance(context, ssl_module.SSLContext):
            context = ssl_module.create_default_context()
        if proxy.scheme == "https" and not getattr(raw, "_start_tls_compatible", False):
            raise ProxyError(
                "wss:// through an https:// proxy needs TLS inside TLS, which this event loop "
                "does not support (asyncio does from Python 3.11); use an http:// proxy"
            )
        tls = await loop.start_tls(
            raw,
            protocol,
            context,
            server_hostname=server_tls["server_hostname"],
            ssl_handshake_timeout=server_tls.get("ssl_handshake_timeout"),
        )
        if tls is None:  # the proxy closed the connection during the TLS handshake
            raise ProxyError(f"proxy {proxy} closed the tunnel during the TLS handshake")
        protocol.connection_made(tls)
        return tls
    except BaseException:
        raw.abort()
        raise


async def _through_socks(
    proxy: ProxyURL,
    host: str,
    port: int,
    protocol_factory: Callable[[], asyncio.Protocol],
    open_timeout: float | None,
    server_tls: dict[str, Any],
    to_proxy: dict[str, Any],
) -> asyncio.BaseTransport:
    try:
        from python_socks import ProxyError as SocksError
        from python_socks import ProxyTimeoutError, ProxyType
        from python_socks.async_.asyncio import Proxy
    except ImportError:
        raise ImportError(
            f"a {proxy.scheme}:// proxy needs python-socks: pip install 'asyncws[socks]'"
        ) from None
    local_addr = to_proxy.pop("local_addr", None)
    if to_proxy:
        raise TypeError(f"{', '.join(sorted(to_proxy))} cannot be used with a SOCKS proxy")
    kind = ProxyType.SOCKS4 if proxy.scheme == "socks4" else ProxyType.SOCKS5
    # socks5h: the proxy resolves the server's name; socks5 and socks4: we do (curl's rule).
    socks = Proxy(
        kind,
        proxy.host,
        proxy.port,
        username=proxy.username,
        password=proxy.password,
        rdns=proxy.scheme == "socks5h",
        loop=asyncio.get_running_loop(),
    )
    try:
        sock = await socks.connect(
            host,
            port,
            timeout=open_timeout if open_timeout is not None else _UNBOUNDED,
            local_addr=local_addr,
        )
    except ProxyTimeoutError:
        raise OpenTimeout(f"no answer from proxy {proxy} within {open_timeout} s") from None
    except SocksError as exc:
        code = exc.error_code
        status = _SOCKS_STATUS.get(code) if code is not None else None
        if status is None and "authentication" in str(exc).lower():
            status = 407
        raise ProxyError(
            f"proxy {proxy} refused the connection to {host}:{port}: {exc}", status
        ) from None
    try:
        transport, _ = await asyncio.get_running_loop().create_connection(
            protocol_factory, sock=sock, **server_tls
        )
    except BaseException:
        sock.close()  # asyncio closes it itself once it made a transport; twice is harmless
        raise
    return transport
