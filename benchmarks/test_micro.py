"""Micro benchmarks of the framing kernels, both asyncws backends and peers in the same run.

Run:  python -m pytest benchmarks/ --benchmark-only
      (add e.g. ``-k mask`` for one family, ``--benchmark-columns=min,median,ops``)

Groups (one table each in pytest-benchmark's output):

* ``mask-<size>``        apply_mask(data, mask) -> bytes, memcpy ceiling, websockets' C kernel;
* ``mask-inplace-<size>`` apply_mask_inplace(bytearray, mask) vs aiohttp's in-place Cython kernel;
* ``utf8-<kind>-<size>`` Utf8Validator().validate(data) (fresh validator per round) vs
  ``data.decode('utf-8')``;
* ``parse-<kind>-<size>`` FrameReader(expect_masked=True).feed(1,000 masked frames) -> messages,
  vs websockets' and aiohttp's parsers on the same bytes; ``extra_info['frames']`` gives the
  frame count, divide by the mean time for frames/s (also printed as ``frames_per_s`` in
  ``--benchmark-json`` output, computed from the first measured round set);
* ``build-<size>-<masked|unmasked>`` build_frame(opcode, payload, mask) vs websockets' Frame.

Every timed callable is bounded (pytest-benchmark's default max-time of 1 s per benchmark).
There are no timing assertions: only the ratios inside one run mean anything on a shared machine.
"""

from __future__ import annotations

import asyncio
import random

import pytest

KiB = 1024
MiB = 1024 * 1024

MASK = b"\x37\xfa\x21\x3d"

# ---------------------------------------------------------------------------------------------
# Peer kernels, where importable.
try:
    from websockets.speedups import apply_mask as ws_apply_mask  # type: ignore
except ImportError:  # pragma: no cover - depends on the environment
    ws_apply_mask = None

try:
    from aiohttp._websocket.mask import _websocket_mask_cython as aiohttp_mask  # type: ignore
except ImportError:  # pragma: no cover
    aiohttp_mask = None

try:
    from aiohttp._websocket import reader_c as aiohttp_reader  # type: ignore
except ImportError:  # pragma: no cover
    aiohttp_reader = None

try:
    from websockets.frames import Frame as WsFrame  # type: ignore
    from websockets.frames import Opcode as WsOpcode
    from websockets.protocol import Protocol as WsProtocol
    from websockets.protocol import Side as WsSide
    from websockets.protocol import State as WsState
except ImportError:  # pragma: no cover
    WsFrame = None

# picows (2.x) keeps its masking and parsing in cdef (C-level) functions with no Python entry
# point, so it cannot be timed here; it appears in the end-to-end benchmark (echo.py) instead.


def _payload(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


# ---------------------------------------------------------------------------------------------
# Masking
MASK_SIZES = [125, 4 * KiB, 64 * KiB, 1 * MiB, 16 * MiB]
MASK_IDS = ["125B", "4KiB", "64KiB", "1MiB", "16MiB"]


@pytest.fixture(scope="module", params=MASK_SIZES, ids=MASK_IDS)
def mask_data(request):
    return _payload(request.param)


def _mask_setup(benchmark, data, group):
    benchmark.group = f"{group}-{len(data)}B"
    benchmark.extra_info["bytes"] = len(data)


def test_mask_asyncws(benchmark, kernels, mask_data):
    _mask_setup(benchmark, mask_data, "mask")
    out = benchmark(kernels.apply_mask, mask_data, MASK)
    assert len(out) == len(mask_data)


def test_mask_memcpy_ceiling(benchmark, mask_data):
    """One allocation plus one copy: what a kernel that returns new bytes cannot beat."""
    _mask_setup(benchmark, mask_data, "mask")
    out = benchmark(bytes, memoryview(mask_data))
    assert len(out) == len(mask_data)


@pytest.mark.skipif(ws_apply_mask is None, reason="websockets.speedups not importable")
def test_mask_websockets(benchmark, pure_kernels, mask_data):
    _mask_setup(benchmark, mask_data, "mask")
    out = benchmark(ws_apply_mask, mask_data, MASK)
    assert out == pure_kernels.apply_mask(mask_data, MASK)


def test_mask_inplace_asyncws(benchmark, kernels, mask_data):
    _mask_setup(benchmark, mask_data, "mask-inplace")
    buf = bytearray(mask_data)
    benchmark(kernels.apply_mask_inplace, buf, MASK)


@pytest.mark.skipif(aiohttp_mask is None, reason="aiohttp mask extension not importable")
def test_mask_inplace_aiohttp(benchmark, mask_data):
    _mask_setup(benchmark, mask_data, "mask-inplace")
    buf = bytearray(mask_data)
    benchmark(aiohttp_mask, MASK, buf)


def test_mask_inplace_memcpy_ceiling(benchmark, mask_data):
    """Copying the bytes over themselves: one read and one write pass, no allocation."""
    _mask_setup(benchmark, mask_data, "mask-inplace")
    buf = bytearray(mask_data)
    src = memoryview(bytes(mask_data))

    def copy():
        buf[:] = src

    benchmark(copy)


# ---------------------------------------------------------------------------------------------
# UTF-8 validation
def _utf8_text(kind: str, size: int) -> bytes:
    if kind == "ascii":
        unit = "The quick brown fox jumps over the lazy dog 0123456789. "
    else:  # 2-, 3- and 4-byte sequences mixed with ASCII
        unit = "Grüße, κόσμε! Привет мир — 你好世界 🎉🚀 ñandú "
    raw = (unit * (size // len(unit.encode()) + 2)).encode("utf-8")
    # Cut on a character boundary at or below ``size``.
    raw = raw[:size]
    while True:
        try:
            raw.decode("utf-8")
            return raw
        except UnicodeDecodeError:
            raw = raw[:-1]


UTF8_CASES = [("ascii", KiB), ("ascii", MiB), ("multibyte", KiB), ("multibyte", MiB)]
UTF8_IDS = [f"{k}-{'1KiB' if s == KiB else '1MiB'}" for k, s in UTF8_CASES]


@pytest.fixture(scope="module", params=UTF8_CASES, ids=UTF8_IDS)
def utf8_case(request):
    kind, size = request.param
    return kind, _utf8_text(kind, size)


def test_utf8_validator(benchmark, kernels, utf8_case):
    kind, data = utf8_case
    benchmark.group = f"utf8-{kind}-{len(data)}B"
    benchmark.extra_info["bytes"] = len(data)
    validator_cls = kernels.Utf8Validator

    def run():
        return validator_cls().validate(data)

    assert benchmark(run) is True


def test_utf8_decode_reference(benchmark, utf8_case):
    kind, data = utf8_case
    benchmark.group = f"utf8-{kind}-{len(data)}B"
    benchmark.extra_info["bytes"] = len(data)
    benchmark(data.decode, "utf-8")


# ---------------------------------------------------------------------------------------------
# Parsing a stream of many small masked frames (as a server receives from a client)
N_FRAMES = 1000
PARSE_CASES = [("binary", 32), ("binary", 256), ("text", 32), ("text", 256)]
PARSE_IDS = [f"{k}-{s}B" for k, s in PARSE_CASES]


@pytest.fixture(scope="module", params=PARSE_CASES, ids=PARSE_IDS)
def frame_stream(request, pure_kernels):
    kind, size = request.param
    if kind == "text":
        payload = _utf8_text("multibyte", size)
        opcode = 0x1
    else:
        payload = _payload(size)
        opcode = 0x2
    stream = b"".join(pure_kernels.build_frame(opcode, payload, True) for _ in range(N_FRAMES))
    return kind, size, payload, stream


def _parse_setup(benchmark, kind, size, stream):
    benchmark.group = f"parse-{kind}-{size}B-x{N_FRAMES}"
    benchmark.extra_info["frames"] = N_FRAMES
    benchmark.extra_info["stream_bytes"] = len(stream)


def _frames_per_s(benchmark):
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        mean = stats.stats.mean
        if mean:
            benchmark.extra_info["frames_per_s"] = round(N_FRAMES / mean)


def test_parse_asyncws(benchmark, kernels, frame_stream):
    kind, size, payload, stream = frame_stream
    _parse_setup(benchmark, kind, size, stream)
    reader_cls = kernels.FrameReader

    def run():
        return reader_cls(expect_masked=True, max_size=2**20).feed(stream)

    out = benchmark(run)
    _frames_per_s(benchmark)
    assert len(out) == N_FRAMES
    expected = payload.decode("utf-8") if kind == "text" else payload
    assert out[0] == expected and out[-1] == expected


@pytest.mark.skipif(WsFrame is None, reason="websockets not importable")
def test_parse_websockets(benchmark, frame_stream):
    """websockets' Sans-I/O protocol (generator-based parser, C mask) on the same bytes."""
    kind, size, payload, stream = frame_stream
    _parse_setup(benchmark, kind, size, stream)

    def run():
        proto = WsProtocol(WsSide.SERVER, state=WsState.OPEN, max_size=2**20)
        proto.receive_data(stream)
        return proto.events_received()

    out = benchmark(run)
    _frames_per_s(benchmark)
    assert len(out) == N_FRAMES


class _StubProtocol:
    _reading_paused = False

    def pause_reading(self):  # pragma: no cover - limit is never reached
        self._reading_paused = True

    def resume_reading(self):  # pragma: no cover
        self._reading_paused = False


@pytest.mark.skipif(aiohttp_reader is None, reason="aiohttp reader_c not importable")
def test_parse_aiohttp(benchmark, frame_stream):
    """aiohttp's Cython WebSocketReader (decode_text=True, no compression) on the same bytes."""
    kind, size, payload, stream = frame_stream
    _parse_setup(benchmark, kind, size, stream)
    loop = asyncio.new_event_loop()
    proto = _StubProtocol()

    def run():
        queue = aiohttp_reader.WebSocketDataQueue(proto, 2**30, loop=loop)
        reader = aiohttp_reader.WebSocketReader(queue, 2**20, compress=False, decode_text=True)
        reader.feed_data(stream)
        return queue

    try:
        queue = benchmark(run)
        _frames_per_s(benchmark)
        assert len(queue._buffer) == N_FRAMES
    finally:
        loop.close()


# ---------------------------------------------------------------------------------------------
# Building frames
BUILD_SIZES = [32, 256, 8 * KiB]


@pytest.mark.parametrize("masked", [True, False], ids=["masked", "unmasked"])
@pytest.mark.parametrize("size", BUILD_SIZES, ids=["32B", "256B", "8KiB"])
def test_build_asyncws(benchmark, kernels, size, masked):
    benchmark.group = f"build-{size}B-{'masked' if masked else 'unmasked'}"
    payload = _payload(size)
    out = benchmark(kernels.build_frame, 0x2, payload, masked)
    assert len(out) >= size + 2


@pytest.mark.skipif(WsFrame is None, reason="websockets not importable")
@pytest.mark.parametrize("masked", [True, False], ids=["masked", "unmasked"])
@pytest.mark.parametrize("size", BUILD_SIZES, ids=["32B", "256B", "8KiB"])
def test_build_websockets(benchmark, size, masked):
    benchmark.group = f"build-{size}B-{'masked' if masked else 'unmasked'}"
    payload = _payload(size)

    def run():
        return WsFrame(WsOpcode.BINARY, payload).serialize(mask=masked, extensions=[])

    out = benchmark(run)
    assert len(out) >= size + 2


def test_build_concat_ceiling(benchmark, pure_kernels):
    """Not a builder: the cost of concatenating a 2-byte header with 256 B (a floor)."""
    benchmark.group = "build-256B-unmasked"
    payload = _payload(256)
    head = b"\x82\x7e"
    benchmark(bytes.__add__, head, payload)
