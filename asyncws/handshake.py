"""The HTTP/1.1 opening handshake of RFC 6455 section 4, and the CONNECT that opens a tunnel
through an HTTP proxy before it, sans I/O.

This module holds the parsing and building of the upgrade request and response: ``Headers``,
``Request``, ``Response``, ``HeadReader`` (collects an HTTP head from a byte stream within size
limits), ``check_request`` / ``check_response`` (the validation rules of sections 4.1 and 4.2),
``accept_key``, and ``build_connect_request`` / ``check_connect_response`` (RFC 9110 section
9.3.6, with Basic proxy authentication). It works on bytes and returns values or raises
``HandshakeError`` / ``InvalidHandshake``; it must not do I/O, import asyncio, or know about
frames.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from http import HTTPStatus
from typing import Union

from .exceptions import InvalidHandshake, ProxyError
from .options import SERVER_HEADER, USER_AGENT_HEADER

__all__ = [
    "GUID",
    "Headers",
    "Request",
    "Response",
    "HeadReader",
    "HandshakeError",
    "accept_key",
    "generate_key",
    "build_request",
    "parse_request",
    "check_request",
    "build_response",
    "build_error_response",
    "parse_response",
    "check_response",
    "select_subprotocol",
    "check_origin",
    "build_connect_request",
    "check_connect_response",
]

# Section 1.3: the GUID concatenated with the key before hashing.
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# Limits on what a peer may make us buffer before the handshake is done.
MAX_LINE = 8192
MAX_HEAD = 16384
MAX_HEADERS = 128

# Default product tokens (defined in options); connect(user_agent_header=...) and
# start_server(server_header=...) change them, None removes them.
USER_AGENT = USER_AGENT_HEADER
SERVER = SERVER_HEADER

HeadersLike = Union[Mapping[str, str], Iterable[tuple[str, str]]]


# Current phrases (RFC 9110) for the statuses asyncws sends itself; HTTPStatus, used for the
# others, still has some older ones (414 "Request-URI Too Long" before Python 3.13).
_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    405: "Method Not Allowed",
    414: "URI Too Long",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    505: "HTTP Version Not Supported",
}

# RFC 7230 section 3.2.6: the characters of a token (header names, methods).
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


class HandshakeError(Exception):
    """A request the server must refuse: ``status`` is the HTTP status to answer with, and
    ``headers`` any headers the answer must carry (426 carries ``Sec-WebSocket-Version``)."""

    def __init__(
        self, status: int, message: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        self.status = status
        self.message = message
        self.headers = headers or []
        super().__init__(f"{status} {message}")


class Headers:
    """HTTP header fields: case-insensitive lookup, repeated fields kept in order."""

    __slots__ = ("_items",)

    def __init__(self, items: HeadersLike | None = None) -> None:
        self._items: list[tuple[str, str]] = []
        if items is not None:
            pairs = items.items() if isinstance(items, (Mapping, Headers)) else items
            for name, value in pairs:
                self._items.append((str(name), str(value)))

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        key = name.lower()
        for k, v in self._items:
            if k.lower() == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order."""
        key = name.lower()
        return [v for k, v in self._items if k.lower() == key]

    def items(self) -> list[tuple[str, str]]:
        """Every ``(name, value)`` pair, in order (a copy)."""
        return list(self._items)

    def add(self, name: str, value: str) -> None:
        """Append a field (an existing one of the same name is kept)."""
        self._items.append((name, value))

    def tokens(self, name: str) -> list[str]:
        """The comma-separated tokens of every ``name`` field, lowercased (RFC 7230 section 7)."""
        out: list[str] = []
        for value in self.get_all(name):
            out.extend(t.strip().lower() for t in value.split(",") if t.strip())
        return out


class Request:
    """A parsed upgrade request: ``method``, ``path`` (with the query), ``version``, ``headers``."""

    __slots__ = ("method", "path", "version", "headers")

    def __init__(self, method: str, path: str, version: str, headers: Headers) -> None:
        self.method = method
        self.path = path
        self.version = version
        self.headers = headers

    def __repr__(self) -> str:
        return f"Request({self.method!r}, {self.path!r})"


class Response:
    """A parsed handshake response: ``status``, ``reason``, ``version``, ``headers``, ``body``."""

    __slots__ = ("status", "reason", "version", "headers", "body")

    def __init__(
        self, status: int, reason: str, version: str, headers: Headers, body: bytes = b""
    ) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"Response({self.status!r}, {self.reason!r})"


class HeadReader:
    """Collects an HTTP head (start line and header fields, up to the empty line) from a stream.

    ``feed(data)`` returns ``(head, rest)`` once the head is complete (``rest`` is what followed
    it: the first WebSocket frames), or None while more is needed. A head over ``MAX_HEAD``
    bytes raises ``HandshakeError(431)``, so that a peer cannot make us buffer without bound.
    """

    __slots__ = ("_buf", "_scanned")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._scanned = 0

    def feed(self, data: bytes) -> tuple[bytes, bytes] | None:
        buf = self._buf
        buf += data
        # Search only the new bytes (and 3 before, for a split CRLFCRLF): linear overall.
        end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
        if end < 0:
            self._scanned = len(buf)
            if len(buf) > MAX_HEAD:
                first = buf.find(b"\r\n")
                if first < 0 or first > MAX_LINE:
                    raise HandshakeError(414, "request line too long")
                raise HandshakeError(431, f"header block over {MAX_HEAD} bytes")
            return None
        if end + 4 > MAX_HEAD:
            raise HandshakeError(431, f"header block over {MAX_HEAD} bytes")
        head = bytes(buf[: end + 4])
        rest = bytes(buf[end + 4 :])
        self._buf = bytearray()
        return head, rest


def _split_head(head: bytes) -> tuple[str, Headers]:
    """Split a head into its start line and header fields (RFC 7230 section 3)."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise HandshakeError(400, "undecodable head") from None
    lines = text[:-4].split("\r\n") if text.endswith("\r\n\r\n") else text.split("\r\n")
    start = lines[0]
    if len(start) > MAX_LINE:
        raise HandshakeError(414, "request line too long")
    if len(lines) - 1 > MAX_HEADERS:
        raise HandshakeError(431, f"more than {MAX_HEADERS} header fields")
    headers = Headers()
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or not all(ord(c) in _TCHAR for c in name):
            raise HandshakeError(400, f"malformed header line {line[:80]!r}")
        value = value.strip(" \t")
        if any(c in value for c in "\r\n\x00"):
            raise HandshakeError(400, f"invalid character in header {name!r}")
        headers.add(name, value)
    return start, headers


def accept_key(key: str) -> str:
    """Section 4.2.2: base64(SHA-1(key + GUID))."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def generate_key() -> str:
    """Section 4.1: a fresh random 16-byte nonce, base64-encoded."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def _format_headers(headers: Iterable[tuple[str, str]]) -> str:
    out = []
    for name, value in headers:
        if any(c in name or c in value for c in "\r\n"):
            raise ValueError(f"invalid header {name!r}")
        out.append(f"{name}: {value}\r\n")
    return "".join(out)


def build_request(
    host: str,
    path: str,
    key: str,
    extra_headers: HeadersLike | None = None,
    *,
    user_agent: str | None = USER_AGENT,
    origin: str | None = None,
    subprotocols: Sequence[str] | None = None,
    extensions: str | None = None,
) -> bytes:
    """The client's upgrade request (section 4.1)."""
    headers: list[tuple[str, str]] = [
        ("Host", host),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
    ]
    if origin is not None:
        headers.append(("Origin", origin))
    if subprotocols:
        headers.append(("Sec-WebSocket-Protocol", ", ".join(subprotocols)))
    if extensions:
        headers.append(("Sec-WebSocket-Extensions", extensions))
    if user_agent is not None:
        headers.append(("User-Agent", user_agent))
    if extra_headers is not None:
        headers.extend(Headers(extra_headers).items())
    return f"GET {path} HTTP/1.1\r\n{_format_headers(headers)}\r\n".encode("latin-1")


def parse_request(head: bytes) -> Request:
    """Parse a request head; raises ``HandshakeError`` with the status to answer."""
    start, headers = _split_head(head)
    parts = start.split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise HandshakeError(400, f"malformed request line {start[:80]!r}")
    method, path, version = parts
    if not version.startswith("HTTP/"):
        raise HandshakeError(400, f"malformed request line {start[:80]!r}")
    return Request(method, path, version, headers)


def check_request(request: Request) -> str:
    """Validate an upgrade request (section 4.2.1); return the Sec-WebSocket-Accept value."""
    if request.version not in ("HTTP/1.1",):
        if request.version in ("HTTP/1.0", "HTTP/0.9"):
            raise HandshakeError(400, f"{request.version} cannot upgrade to WebSocket")
        raise HandshakeError(505, f"unsupported {request.version}")
    if not all(ord(c) in _TCHAR for c in request.method):
        raise HandshakeError(400, "malformed method")
    if request.method != "GET":
        raise HandshakeError(405, f"method {request.method} not allowed", [("Allow", "GET")])
    if not request.path.startswith("/") and request.path != "*":
        # Absolute-form targets (RFC 7230 section 5.3.2) are for proxies; take the path.
        if "://" not in request.path:
            raise HandshakeError(400, "malformed request target")
    headers = request.headers
    if len(headers.get_all("Host")) != 1:
        raise HandshakeError(400, "missing or repeated Host header")
    if "websocket" not in headers.tokens("Upgrade"):
        raise HandshakeError(
            426,
            "not a WebSocket upgrade request (Upgrade: websocket missing)",
            [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13")],
        )
    if "upgrade" not in headers.tokens("Connection"):
        raise HandshakeError(400, "Connection header does not contain 'upgrade'")
    versions = headers.get_all("Sec-WebSocket-Version")
    if versions != ["13"]:
        raise HandshakeError(
            426, "unsupported Sec-WebSocket-Version", [("Sec-WebSocket-Version", "13")]
        )
    keys = headers.get_all("Sec-WebSocket-Key")
    if len(keys) != 1:
        raise HandshakeError(400, "missing or repeated Sec-WebSocket-Key")
    key = keys[0]
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise HandshakeError(400, "Sec-WebSocket-Key is not base64") from None
    if len(raw) != 16:
        raise HandshakeError(400, "Sec-WebSocket-Key is not a 16-byte nonce")
    return accept_key(key)


def build_response(
    accept: str,
    extra_headers: HeadersLike | None = None,
    *,
    server: str | None = SERVER,
    subprotocol: str | None = None,
    extensions: str | None = None,
) -> bytes:
    """The server's 101 response (section 4.2.2)."""
    headers: list[tuple[str, str]] = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept),
    ]
    if subprotocol is not None:
        headers.append(("Sec-WebSocket-Protocol", subprotocol))
    if extensions:
        headers.append(("Sec-WebSocket-Extensions", extensions))
    if server is not None:
        headers.append(("Server", server))
    if extra_headers is not None:
        headers.extend(Headers(extra_headers).items())
    return f"HTTP/1.1 101 Switching Protocols\r\n{_format_headers(headers)}\r\n".encode("latin-1")


def build_error_response(
    status: int,
    message: str,
    headers: HeadersLike | None = None,
    *,
    server: str | None = SERVER,
    body: bytes | None = None,
) -> bytes:
    """A plain-text HTTP error answer that closes the connection (``body`` replaces the
    default text, which is ``message``)."""
    if body is None:
        body = (message + "\n").encode("utf-8", "replace")
    fields: list[tuple[str, str]] = Headers(headers).items() if headers is not None else []
    if server is not None:
        fields.append(("Server", server))
    fields += [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    reason = _REASONS.get(status)
    if reason is None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Error"
    return f"HTTP/1.1 {status} {reason}\r\n{_format_headers(fields)}\r\n".encode("latin-1") + body


def parse_response(head: bytes) -> Response:
    """Parse a response head; raises ``InvalidHandshake`` when it is not HTTP."""
    try:
        start, headers = _split_head(head)
    except HandshakeError as exc:
        raise InvalidHandshake(f"malformed response: {exc.message}") from None
    version, _, rest = start.partition(" ")
    code, _, reason = rest.partition(" ")
    # isascii(): str.isdigit() also accepts digits like '\xb2' that int() refuses.
    if not version.startswith("HTTP/") or len(code) != 3 or not (code.isascii() and code.isdigit()):
        raise InvalidHandshake(f"malformed status line {start[:80]!r}")
    return Response(int(code), reason, version, headers)


def check_response(
    response: Response,
    key: str,
    *,
    subprotocols: Sequence[str] | None = None,
    extensions_offered: bool = False,
) -> str | None:
    """Validate the server's answer to our request (section 4.1, the client's checks); return
    the subprotocol it selected. The extensions it selected, when we offered any, are for the
    caller to check (``deflate.client_accept``)."""
    if response.status != 101:
        raise InvalidHandshake(
            f"server refused the upgrade: {response.status} {response.reason}", response.status
        )
    headers = response.headers
    if "websocket" not in headers.tokens("Upgrade"):
        raise InvalidHandshake("response lacks 'Upgrade: websocket'", 101)
    if "upgrade" not in headers.tokens("Connection"):
        raise InvalidHandshake("response lacks 'Connection: Upgrade'", 101)
    accepts = headers.get_all("Sec-WebSocket-Accept")
    if accepts != [accept_key(key)]:
        raise InvalidHandshake("wrong or missing Sec-WebSocket-Accept", 101)
    if not extensions_offered and headers.get_all("Sec-WebSocket-Extensions"):
        raise InvalidHandshake("server selected an extension that was not offered", 101)
    selected = headers.get_all("Sec-WebSocket-Protocol")
    if not selected:
        return None
    if len(selected) != 1 or not subprotocols or selected[0] not in subprotocols:
        raise InvalidHandshake(f"server selected a subprotocol not offered: {selected}", 101)
    return selected[0]


def select_subprotocol(request: Request, supported: Sequence[str]) -> str | None:
    """Section 4.2.2: the first of the server's ``supported`` subprotocols that the client
    offered (the server's preference wins), or None."""
    offered = [p.strip() for v in request.headers.get_all("Sec-WebSocket-Protocol")
               for p in v.split(",") if p.strip()]
    for protocol in supported:
        if protocol in offered:
            return protocol
    return None


def check_origin(request: Request, origins: Sequence[str | None]) -> None:
    """Section 10.2: refuse (403) a request whose Origin is not in ``origins``; None in the
    list admits requests without an Origin header (non-browser clients)."""
    values = request.headers.get_all("Origin")
    if len(values) > 1:
        raise HandshakeError(400, "more than one Origin header")
    origin = values[0] if values else None
    if origin not in origins:
        raise HandshakeError(403, f"origin {origin!r} is not allowed")



def build_connect_request(
    host: str,
    port: int,
    *,
    username: str | None = None,
    password: str | None = None,
    user_agent: str | None = USER_AGENT,
) -> bytes:
    """The request that asks an HTTP proxy for a tunnel to ``host:port`` (RFC 9110 section
    9.3.6), with Basic authentication (RFC 7617) when a ``username`` is given."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    headers: list[tuple[str, str]] = [("Host", authority)]
    if username is not None:
        credentials = f"{username}:{password or ''}".encode()
        headers.append(("Proxy-Authorization", "Basic " + base64.b64encode(credentials).decode()))
    if user_agent is not None:
        headers.append(("User-Agent", user_agent))
    return f"CONNECT {authority} HTTP/1.1\r\n{_format_headers(headers)}\r\n".encode("latin-1")


def check_connect_response(head: bytes, proxy: str, target: str) -> None:
    """Check a proxy's answer to CONNECT: a 2xx opens the tunnel, anything else raises
    ``ProxyError`` with what the proxy said (``proxy`` and ``target`` name both ends)."""
    try:
        response = parse_response(head)
    except InvalidHandshake as exc:
        raise ProxyError(f"proxy {proxy} sent a bad answer to CONNECT {target}: {exc}") from None
    if not 200 <= response.status < 300:
        raise ProxyError(
            f"proxy {proxy} refused CONNECT {target}: {response.status} {response.reason}",
            response.status,
        )
