"""Fuzz target: the frame parser (``FrameReader``) of both kernel backends, side by side.

``one_input(data)`` turns ``data`` into a frame stream (either the raw bytes, or frames built
from choices drawn from ``data`` and then corrupted), cuts it into pieces fed as bytes /
bytearray / memoryview, and checks that:

* neither backend raises (every input is either parsed or refused with ``error`` set);
* the invariants of ``_common.check_record`` hold (no item after close, control payloads at most
  125 bytes, messages at most max_size, error codes 1002/1007/1009 only);
* the Cython and pure-Python readers return identical items, ``error``, ``closed`` and
  ``has_control`` after every single feed.


Run: ``python fuzz/fuzz_frames.py [atheris/libFuzzer options]`` (see fuzz/README.md).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402
    Consumer,
    backends,
    check_record,
    feed_all,
    frame,
    split,
)

PURE, FAST = backends()

MAX_SIZES = (None, 0, 1, 125, 126, 1000, 65536)
OPCODES = (0x0, 0x1, 0x2, 0x8, 0x9, 0xA, 0x0, 0x1, 0x2, 0x1, 0x3, 0xB, 0xF)
INTERESTING_LENGTHS = (126, 127, 65535, 65536, 2**31, 2**32, 2**62, 2**63 - 1, 2**63, 2**64 - 1)
UTF8_PIECES = (b"a", b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80", b"\xed\x9f\xbf",
               b"\xf4\x8f\xbf\xbf", b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
               b"\xe0\x80", b"\x80", b"\xc3", b"\xf0\x9f")


def build_stream(c: Consumer, expect_masked: bool) -> bytes:
    """Frames from choices: mostly valid, with some lies and corruption."""
    out = bytearray()
    for _ in range(c.int(12) + 1):
        opcode = c.choice(OPCODES)
        kind = c.int(4)
        if kind == 0:
            payload = b"".join(c.choice(UTF8_PIECES) for _ in range(c.int(20)))
        elif kind == 1:
            payload = c.bytes(c.int(300))
        elif kind == 2:
            payload = bytes(c.int(256)) * (c.int(300) + 1)  # up to ~77 KB, crosses limits
        else:
            payload = b""
        fin = c.byte() % 4 != 0
        rsv = c.int(8) if c.byte() % 16 == 0 else 0
        masked = expect_masked if c.byte() % 16 else not expect_masked
        key = c.bytes(4).ljust(4, b"\0") if masked else None
        length = c.choice(INTERESTING_LENGTHS) if c.byte() % 32 == 0 else None
        wide = c.int(3) if c.byte() % 8 == 0 else 0
        out += frame(opcode, payload, fin=fin, rsv=rsv, key=key, length=length, wide=wide)
    # Corruption: flip some bytes, truncate, or append garbage.
    for _ in range(c.int(4) if c.byte() % 4 == 0 else 0):
        if out:
            out[c.int(len(out))] ^= c.byte() or 1
    if c.byte() % 8 == 0:
        del out[c.int(len(out) + 1) :]
    if c.byte() % 8 == 0:
        out += c.bytes(c.int(64))
    return bytes(out)


def run(
    stream: bytes, cuts: list[int], kinds: list[int], expect_masked: bool, max_size: int | None
) -> tuple[list, list | None]:
    """Feed ``stream`` to both backends; return their records (the Cython one None if absent)."""
    pieces = split(stream, cuts, kinds)
    pure = feed_all(PURE.FrameReader(expect_masked, max_size), pieces)
    fast = feed_all(FAST.FrameReader(expect_masked, max_size), pieces) if FAST else None
    return pure, fast


def one_input(data: bytes) -> None:
    c = Consumer(data)
    expect_masked = c.bool()
    max_size = c.choice(MAX_SIZES)
    raw = c.byte() % 8 == 0
    stream = c.rest() if raw else build_stream(c, expect_masked)
    cuts = [c.int(len(stream) + 1) for _ in range(c.int(8))]
    kinds = [c.byte() for _ in range(3)]
    pure, fast = run(stream, cuts, kinds, expect_masked, max_size)
    check_record(pure, max_size)
    if fast is None:
        return
    check_record(fast, max_size)
    assert pure == fast, (stream, cuts, expect_masked, max_size, pure, fast)


def main() -> None:
    try:
        import atheris
    except ImportError:
        atheris = None
    if atheris is not None:
        # Coverage feedback from the pure-Python twin (the Cython module is not instrumented).
        atheris.instrument_all()
        atheris.Setup(sys.argv, one_input)
        atheris.Fuzz()
        return
    # Fallback without atheris: hypothesis, as many examples as FUZZ_EXAMPLES (default 100k).
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "100000")), deadline=None,
              suppress_health_check=list(HealthCheck), database=None)
    @given(st.binary(max_size=4096))
    def fuzz(data: bytes) -> None:
        one_input(data)

    fuzz()


if __name__ == "__main__":
    main()
