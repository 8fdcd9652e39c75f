"""Shared pieces of the fuzz targets (and of tests/test_differential.py, which imports them).

* ``Consumer``: turns an arbitrary byte string into choices (a tiny FuzzedDataProvider), so one
  ``one_input(data: bytes)`` serves atheris, hypothesis (``st.binary()``) and a corpus replay.
* ``backends()``: the two kernel modules, imported directly (the Cython one may be missing).
* ``extendable(prefix)`` / ``first_impossible(data)``: the oracle for fail-fast UTF-8
  validation, built on ``bytes.decode`` (CPython's incremental decoder is not one: it keeps
  ``ED A0..BF`` pending although only an encoded surrogate can follow).
* ``feed_all(reader, pieces)``: feed pieces and record, per feed, the items and the state.
* ``frame(...)``: a frame built by hand, valid or not (deterministic masking key).
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Sequence
from typing import Any

# One byte from each range a second/third/fourth UTF-8 byte may have to lie in (RFC 3629):
# [80,BF], [A0,BF], [80,9F], [90,BF], [80,8F] each contain one of these.
_PROBES = (0x80, 0x90, 0xA0, 0xBF)


def extendable(prefix: bytes) -> bool:
    """Whether ``prefix`` is valid UTF-8 or can be completed into valid UTF-8."""
    try:
        prefix.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        # Only an incomplete last character (which starts at most 3 bytes before the end) can
        # be completed; an error before it is final.
        if exc.start < len(prefix) - 3:
            return False
    for k in (1, 2, 3):
        for tail in itertools.product(_PROBES, repeat=k):
            try:
                (prefix + bytes(tail)).decode("utf-8")
                return True
            except UnicodeDecodeError:
                pass
    return False


def first_impossible(data: bytes) -> int | None:
    """Index of the first byte after which ``data[: i + 1]`` cannot become valid UTF-8."""
    # Only the bytes since the last character boundary matter: scan with a small window.
    start = 0
    for i in range(len(data)):
        if not extendable(data[start : i + 1]):
            return i
        try:
            data[start : i + 1].decode("utf-8")
            start = i + 1  # at a character boundary
        except UnicodeDecodeError:
            pass
    return None


def backends() -> tuple[Any, Any | None]:
    """(pure-Python module, Cython module or None when it is not built)."""
    pure = importlib.import_module("asyncws._purepython")
    try:
        fast = importlib.import_module("asyncws._speedups")
    except ImportError:
        fast = None
    return pure, fast


class Consumer:
    """Draw choices from a byte string; past its end every draw returns its smallest value."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def int(self, n: int) -> int:
        """0 <= value < n (n <= 65536)."""
        v = self.byte() << 8 | self.byte()
        return v % n

    def bool(self) -> bool:
        return bool(self.byte() & 1)

    def choice(self, seq: Sequence[Any]) -> Any:
        return seq[self.int(len(seq))]

    def bytes(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out


def naive_mask(data: bytes, key: bytes, offset: int = 0) -> bytes:
    return bytes(b ^ key[(i + offset) % 4] for i, b in enumerate(data))


def frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    key: bytes | None = None,
    length: int | None = None,
    wide: int = 0,
) -> bytes:
    """A frame by hand: ``key`` masks it, ``length`` lies about the size, ``wide`` forces the
    16-bit (1) or 64-bit (2) length encoding even for a small length (legal per RFC? the RFC
    says minimal encoding MUST be used, but asyncws, like most peers, accepts either)."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0x0F)
    mbit = 0x80 if key is not None else 0
    if n < 126 and not wide:
        head = bytes((b0, mbit | n))
    elif n < 65536 and wide != 2:
        head = bytes((b0, mbit | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, mbit | 127)) + n.to_bytes(8, "big")
    if key is not None:
        return head + key + naive_mask(payload, key)
    return head + payload


Record = tuple[list[Any], Any, bool, bool, bool]


def _flag(reader: Any) -> bool:
    """The reader's per-feed "look at this result" flag: ``attention`` (a control frame or the
    end of reading) in current asyncws, ``has_control`` (a control frame) before."""
    flag = getattr(reader, "attention", None)
    return bool(reader.has_control if flag is None else flag)


def feed_all(reader: Any, pieces: Sequence[Any]) -> list[Record]:
    """Feed each piece; record (items, error, closed, flag, peer_closed) after every feed
    (``peer_closed``: after a violation, the reader has read past everything up to a whole
    Close frame)."""
    out: list[Record] = []
    for piece in pieces:
        items = reader.feed(piece)
        peer_closed = bool(getattr(reader, "peer_closed", False))
        out.append((items, reader.error, reader.closed, _flag(reader), peer_closed))
    return out


def check_record(records: list[Record], max_size: int | None) -> None:
    """Invariants every backend must hold whatever it was fed."""
    closed = False
    for items, error, is_closed, has_control, peer_closed in records:
        if closed:
            assert items == [], "items after the reader closed"
        for item in items:
            assert type(item) in (str, bytes, tuple), item
            if type(item) is tuple:
                op, payload = item
                assert op in (0x8, 0x9, 0xA) and type(payload) is bytes and len(payload) <= 125
            elif max_size is not None:
                size = len(item.encode("utf-8")) if type(item) is str else len(item)
                assert size <= max_size
        if any(type(i) is tuple for i in items):
            assert has_control, "a control frame returned without the flag"
        if error is not None:
            assert error[0] in (1002, 1007, 1009) and type(error[1]) is str, error
            assert is_closed
        else:
            assert not peer_closed, "peer_closed without a violation"
        closed = is_closed


def split(data: bytes, cuts: Sequence[int], kinds: Sequence[int]) -> list[Any]:
    """Cut ``data`` at ``cuts``; piece i is bytes, bytearray or memoryview per ``kinds``."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces: list[Any] = []
    prev = 0
    for i, p in enumerate([*points, len(data)]):
        chunk = data[prev:p]
        prev = p
        kind = kinds[i % len(kinds)] % 3 if kinds else 0
        pieces.append(chunk if kind == 0 else bytearray(chunk) if kind == 1 else memoryview(chunk))
    return pieces
