"""permessage-deflate (RFC 7692): negotiation and per-message (de)compression, sans I/O.

This module holds ``Deflate`` (the options an application chooses), the parsing and building of
``Sec-WebSocket-Extensions`` offers and responses for both sides, and ``PerMessageDeflate``,
one connection's compressor and decompressor with the negotiated parameters. Decompression is
bounded by ``max_size``: a compressed bomb fails with 1009 before it inflates past the limit.
It must not do I/O, import asyncio or know about frames beyond the RSV1 bit's meaning.
"""

from __future__ import annotations

import zlib
from typing import Any, Optional

from .exceptions import InvalidHandshake

__all__ = [
    "Deflate",
    "DeflateError",
    "compression_options",
    "PerMessageDeflate",
    "parse_extensions",
    "client_offer",
    "server_accept",
    "client_accept",
]

EXTENSION = "permessage-deflate"
# Section 7.2.1: the four octets a sender removes from the end of each compressed message.
_TAIL = b"\x00\x00\xff\xff"
# zlib cannot produce a raw deflate stream with a 256-byte window (it silently uses 512), so
# 8 is not offered or accepted (the same choice as zlib-based peers).
_MIN_BITS = 9
_MAX_BITS = 15
_TOKEN_EXTRA = "!#$%&'*+-.^_`|~"

Params = list[tuple[str, Optional[str]]]


class DeflateError(Exception):
    """A compressed message that cannot be inflated (``code`` 1007) or is too large (1009)."""

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(reason)


class Deflate:
    """permessage-deflate options: what a client asks for, or what a server insists on.

    ``server_no_context_takeover`` / ``client_no_context_takeover``: that side compresses each
    message on its own (less memory kept between messages, worse ratio).
    ``server_max_window_bits`` / ``client_max_window_bits``: that side's LZ77 window, 9 to 15.
    ``level`` and ``mem_level`` tune zlib for what this side sends.
    """

    __slots__ = (
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
        "level",
        "mem_level",
    )

    def __init__(
        self,
        *,
        server_no_context_takeover: bool = False,
        client_no_context_takeover: bool = False,
        server_max_window_bits: int | None = None,
        client_max_window_bits: int | None = None,
        level: int = 6,
        mem_level: int = 8,
    ) -> None:
        for bits in (server_max_window_bits, client_max_window_bits):
            if bits is not None and not _MIN_BITS <= bits <= _MAX_BITS:
                raise ValueError(f"window bits must be {_MIN_BITS} to {_MAX_BITS}, not {bits}")
        self.server_no_context_takeover = server_no_context_takeover
        self.client_no_context_takeover = client_no_context_takeover
        self.server_max_window_bits = server_max_window_bits
        self.client_max_window_bits = client_max_window_bits
        self.level = level
        self.mem_level = mem_level


def compression_options(value: str | Deflate | None) -> Deflate | None:
    """The ``compression=`` keyword of connect/start_server: None, "deflate" or a Deflate."""
    if value is None or isinstance(value, Deflate):
        return value
    if value == "deflate":
        return Deflate()
    raise ValueError(f"compression must be 'deflate', a Deflate() or None, not {value!r}")


def parse_extensions(values: list[str]) -> list[tuple[str, Params]]:
    """Parse ``Sec-WebSocket-Extensions`` field values (RFC 6455 section 9.1) into
    ``[(name, [(param, value or None), ...]), ...]``; raises ValueError when malformed."""
    out: list[tuple[str, Params]] = []
    for value in values:
        for item in _split(value, ","):
            parts = _split(item, ";")
            if not parts or not _is_token(parts[0]):
                raise ValueError(f"malformed extension {item!r}")
            params: Params = []
            for part in parts[1:]:
                name, eq, val = part.partition("=")
                name = name.strip()
                val = val.strip()
                if eq:
                    if len(val) >= 2 and val[0] == val[-1] == '"':
                        val = val[1:-1]
                    if not _is_token(val):
                        raise ValueError(f"malformed extension parameter {part!r}")
                if not _is_token(name):
                    raise ValueError(f"malformed extension parameter {part!r}")
                params.append((name.lower(), val if eq else None))
            out.append((parts[0].lower(), params))
    return out


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside quoted strings; drop empty items."""
    items: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            items.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    items.append("".join(current).strip())
    return [i for i in items if i]


def _is_token(text: str) -> bool:
    return text.isascii() and bool(text) and all(c.isalnum() or c in _TOKEN_EXTRA for c in text)


def _bits(value: str | None) -> int:
    if value is None or not value.isdigit() or value[0] == "0":
        raise ValueError("window bits must be a decimal number")
    bits = int(value)
    if not _MIN_BITS <= bits <= _MAX_BITS:
        raise ValueError(f"window bits {bits} out of range")
    return bits


def client_offer(options: Deflate) -> str:
    """The client's offer (section 7.1): what ``options`` asks of the server, and
    ``client_max_window_bits`` to let the server limit our window."""
    parts = [EXTENSION]
    if options.server_no_context_takeover:
        parts.append("server_no_context_takeover")
    if options.client_no_context_takeover:
        parts.append("client_no_context_takeover")
    if options.server_max_window_bits is not None:
        parts.append(f"server_max_window_bits={options.server_max_window_bits}")
    if options.client_max_window_bits is not None:
        parts.append(f"client_max_window_bits={options.client_max_window_bits}")
    else:
        parts.append("client_max_window_bits")
    return "; ".join(parts)


def server_accept(
    values: list[str], options: Deflate, max_size: int | None
) -> tuple[str, PerMessageDeflate] | None:
    """Pick the first acceptable permessage-deflate offer (section 5 and 7.1); return the
    response's extension value and the connection's compressor, or None to decline."""
    try:
        offers = parse_extensions(values)
    except ValueError:
        return None
    for name, params in offers:
        if name != EXTENSION:
            continue
        accepted = _server_try(params, options, max_size)
        if accepted is not None:
            return accepted
    return None


def _server_try(
    params: Params, options: Deflate, max_size: int | None
) -> tuple[str, PerMessageDeflate] | None:
    seen: set[str] = set()
    server_nct = options.server_no_context_takeover
    client_nct = options.client_no_context_takeover
    server_bits = options.server_max_window_bits
    client_bits: int | None = None
    client_bits_offered = False
    try:
        for key, value in params:
            if key in seen:
                return None  # section 7: a parameter may appear once
            seen.add(key)
            if key == "server_no_context_takeover":
                if value is not None:
                    return None
                server_nct = True
            elif key == "client_no_context_takeover":
                if value is not None:
                    return None
                client_nct = True
            elif key == "server_max_window_bits":
                limit = _bits(value)
                server_bits = limit if server_bits is None else min(server_bits, limit)
            elif key == "client_max_window_bits":
                client_bits_offered = True
                if value is not None:
                    client_bits = _bits(value)
            else:
                return None  # an unknown parameter: decline this offer
    except ValueError:
        return None
    if options.client_max_window_bits is not None:
        if not client_bits_offered:
            return None  # we need to limit the client's window and it cannot be told
        wanted = options.client_max_window_bits
        client_bits = wanted if client_bits is None else min(client_bits, wanted)
    parts = [EXTENSION]
    if server_nct:
        parts.append("server_no_context_takeover")
    if client_nct:
        parts.append("client_no_context_takeover")
    if server_bits is not None:
        parts.append(f"server_max_window_bits={server_bits}")
    if client_bits is not None:
        parts.append(f"client_max_window_bits={client_bits}")
    pmd = PerMessageDeflate(
        is_client=False,
        local_no_context_takeover=server_nct,
        remote_no_context_takeover=client_nct,
        local_max_window_bits=server_bits or _MAX_BITS,
        remote_max_window_bits=client_bits or _MAX_BITS,
        options=options,
        max_size=max_size,
    )
    return "; ".join(parts), pmd


def client_accept(values: list[str], options: Deflate, max_size: int | None) -> PerMessageDeflate:
    """Check the server's answer to our offer (section 7.1); raises ``InvalidHandshake``."""
    try:
        extensions = parse_extensions(values)
    except ValueError as exc:
        raise InvalidHandshake(f"malformed Sec-WebSocket-Extensions: {exc}", 101) from None
    if len(extensions) != 1 or extensions[0][0] != EXTENSION:
        raise InvalidHandshake("server selected an extension that was not offered", 101)
    seen: set[str] = set()
    server_nct = client_nct = False
    server_bits: int | None = None
    client_bits: int | None = None
    try:
        for key, value in extensions[0][1]:
            if key in seen:
                raise ValueError(f"repeated parameter {key}")
            seen.add(key)
            if key == "server_no_context_takeover" and value is None:
                server_nct = True
            elif key == "client_no_context_takeover" and value is None:
                client_nct = True
            elif key == "server_max_window_bits":
                server_bits = _bits(value)
                wanted = options.server_max_window_bits
                if wanted is not None and server_bits > wanted:
                    raise ValueError("server_max_window_bits above what was asked")
            elif key == "client_max_window_bits":
                client_bits = _bits(value)
                wanted = options.client_max_window_bits
                if wanted is not None and client_bits > wanted:
                    raise ValueError("client_max_window_bits above what was offered")
            else:
                raise ValueError(f"unexpected parameter {key}")
    except ValueError as exc:
        raise InvalidHandshake(f"unacceptable permessage-deflate response: {exc}", 101) from None
    if options.server_no_context_takeover and not server_nct:
        raise InvalidHandshake("server ignored server_no_context_takeover", 101)
    if options.server_max_window_bits is not None and server_bits is None:
        raise InvalidHandshake("server ignored server_max_window_bits", 101)
    return PerMessageDeflate(
        is_client=True,
        local_no_context_takeover=client_nct or options.client_no_context_takeover,
        remote_no_context_takeover=server_nct,
        local_max_window_bits=client_bits or options.client_max_window_bits or _MAX_BITS,
        remote_max_window_bits=server_bits or _MAX_BITS,
        options=options,
        max_size=max_size,
    )


class PerMessageDeflate:
    """One connection's permessage-deflate state (section 7.2): compress what we send, inflate
    what we receive, with context takeover and window sizes as negotiated."""

    __slots__ = (
        "is_client",
        "local_no_context_takeover",
        "remote_no_context_takeover",
        "local_max_window_bits",
        "remote_max_window_bits",
        "_level",
        "_mem_level",
        "_max_size",
        "_compressor",
        "_decompressor",
    )

    def __init__(
        self,
        *,
        is_client: bool,
        local_no_context_takeover: bool,
        remote_no_context_takeover: bool,
        local_max_window_bits: int,
        remote_max_window_bits: int,
        options: Deflate,
        max_size: int | None,
    ) -> None:
        self.is_client = is_client
        self.local_no_context_takeover = local_no_context_takeover
        self.remote_no_context_takeover = remote_no_context_takeover
        self.local_max_window_bits = local_max_window_bits
        self.remote_max_window_bits = remote_max_window_bits
        self._level = options.level
        self._mem_level = options.mem_level
        self._max_size = max_size
        # Created on first use: an idle connection holds no zlib state.
        self._compressor: Any = None
        self._decompressor: Any = None

    def compress(self, data: bytes, final: bool = True) -> bytes:
        """Compress one message, or with ``final=False`` one piece of a fragmented message
        (section 7.2.1)."""
        c = self._compressor
        if c is None:
            c = self._compressor = zlib.compressobj(
                self._level, zlib.DEFLATED, -self.local_max_window_bits, self._mem_level
            )
        # A full flush resets the window, which is what no_context_takeover requires, without
        # allocating a new compressor for each message.
        mode = zlib.Z_FULL_FLUSH if final and self.local_no_context_takeover else zlib.Z_SYNC_FLUSH
        out: bytes = c.compress(data) + c.flush(mode)
        if final and out.endswith(_TAIL):
            out = out[:-4]
        return out

    def decompress(self, payload: bytes) -> bytes:
        """Inflate one received message (section 7.2.2), never past ``max_size`` bytes."""
        d = self._decompressor
        if d is None or self.remote_no_context_takeover:
            d = self._decompressor = zlib.decompressobj(-self.remote_max_window_bits)
        limit = self._max_size
        try:
            if limit is None:
                return d.decompress(payload + _TAIL)  # type: ignore[no-any-return]
            out = d.decompress(payload + _TAIL, limit + 1)
        except zlib.error as exc:
            raise DeflateError(1007, f"invalid compressed data: {exc}") from None
        if len(out) > limit or d.unconsumed_tail:
            raise DeflateError(1009, f"decompressed message larger than max_size ({limit} bytes)")
        return out  # type: ignore[no-any-return]

