"""The framing kernels (masking, UTF-8 validation, frame reading and building), each test run
against both backends, plus the backend selection itself."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import asyncws
from asyncws import _kernels

from ._raw import frame
from .conftest import load_backend

MASK = b"\x37\xfa\x21\x3d"


def naive_mask(data: bytes, mask: bytes, offset: int = 0) -> bytes:
    return bytes(b ^ mask[(i + offset) % 4] for i, b in enumerate(data))


# -- backend selection ---------------------------------------------------------------------


def test_active_backend_matches_environment() -> None:
    forced_off = os.environ.get("ASYNCWS_NO_SPEEDUPS") == "1"
    assert asyncws.HAS_SPEEDUPS is (not forced_off)
    expected = "purepython" if forced_off else "speedups"
    assert _kernels.BACKEND == expected
    assert _kernels.FrameReader.__module__ == f"asyncws._{expected}"


def test_environment_switch_forces_fallback() -> None:
    code = (
        "import asyncws, asyncws._kernels as k;"
        "print(asyncws.HAS_SPEEDUPS, k.FrameReader.__module__)"
    )
    env = dict(os.environ, ASYNCWS_NO_SPEEDUPS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["False", "asyncws._purepython"]
    env.pop("ASYNCWS_NO_SPEEDUPS")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["True", "asyncws._speedups"]


def test_the_pump_is_one_source_compiled_or_not() -> None:
    """The per-message pump exists once, in _pump.py: the compiled backend uses _pump_c, built
    from that file, and the pure-Python backend runs the file itself on the pure kernels."""
    from asyncws import _pump, _purepython

    assert _pump.__file__.endswith("_pump.py")
    assert _pump._frame_of is _purepython.build_frame  # uncompiled: the pure kernels
    if asyncws.HAS_SPEEDUPS:
        from asyncws import _pump_c

        assert not _pump_c.__file__.endswith(".py")  # an extension module
        assert _kernels.MessagePump is _pump_c.MessagePump
        # (3.13 strips docstrings' indentation when it compiles Python; Cython keeps it.)
        compiled_doc = inspect.cleandoc(_pump_c.MessagePump.send.__doc__ or "")
        assert compiled_doc == inspect.cleandoc(_pump.MessagePump.send.__doc__ or "")
    else:
        assert _kernels.MessagePump is _pump.MessagePump


def test_kernel_backends_export_the_same_interface() -> None:
    speedups, pure = load_backend("speedups"), load_backend("purepython")
    assert speedups.__all__ == pure.__all__
    for name in pure.__all__:
        assert hasattr(speedups, name) and hasattr(pure, name), name


# -- masking -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 3, 4, 7, 8, 15, 16, 17, 31, 125, 4096, 65537])
def test_apply_mask_matches_naive(kernels, size: int) -> None:
    data = os.urandom(size)
    assert kernels.apply_mask(data, MASK) == naive_mask(data, MASK)
    assert kernels.apply_mask(kernels.apply_mask(data, MASK), MASK) == data


@pytest.mark.parametrize("offset", [0, 1, 2, 3, 5])
def test_apply_mask_inplace_with_offset(kernels, offset: int) -> None:
    data = os.urandom(37)
    buf = bytearray(data)
    kernels.apply_mask_inplace(buf, MASK, offset)
    assert bytes(buf) == naive_mask(data, MASK, offset)


def test_apply_mask_accepts_buffers_and_rejects_bad_keys(kernels) -> None:
    data = os.urandom(20)
    assert kernels.apply_mask(memoryview(data), MASK) == naive_mask(data, MASK)
    assert kernels.apply_mask(bytearray(data), bytearray(MASK)) == naive_mask(data, MASK)
    with pytest.raises(ValueError):
        kernels.apply_mask(data, b"abc")
    with pytest.raises((TypeError, BufferError)):
        kernels.apply_mask_inplace(b"read-only", MASK)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300), mask=st.binary(min_size=4, max_size=4))
def test_apply_mask_backends_agree(data: bytes, mask: bytes) -> None:
    fast, pure = load_backend("speedups"), load_backend("purepython")
    assert fast.apply_mask(data, mask) == pure.apply_mask(data, mask) == naive_mask(data, mask)


# -- UTF-8 validation ----------------------------------------------------------------------

UTF8_CASES = [
    (b"", True),
    (b"plain ascii text, longer than sixteen bytes", True),
    ("κόσμε".encode(), True),
    ("\U0001f600 emoji \u20ac".encode(), True),
    (b"\xed\x9f\xbf", True),  # U+D7FF, last before surrogates
    (b"\xee\x80\x80", True),  # U+E000
    (b"\xf4\x8f\xbf\xbf", True),  # U+10FFFF
    (b"\xc0\xaf", False),  # overlong
    (b"\xe0\x80\xaf", False),  # overlong
    (b"\xed\xa0\x80", False),  # surrogate
    (b"\xf4\x90\x80\x80", False),  # above U+10FFFF
    (b"\xf5\x80\x80\x80", False),
    (b"\x80", False),
    (b"abc\xff", False),
    (b"\xce\xba\xe1", False),  # truncated at the end
]


@pytest.mark.parametrize("data,valid", UTF8_CASES)
def test_utf8_validator_whole(kernels, data: bytes, valid: bool) -> None:
    v = kernels.Utf8Validator()
    assert (v.validate(data) and v.complete) is valid


def test_utf8_validator_fails_fast_inside_a_sequence(kernels) -> None:
    v = kernels.Utf8Validator()
    assert v.validate(b"ok \xf4")  # F4 may start U+10xxxx
    assert not v.validate(b"\x90")  # ...but not F4 90: above U+10FFFF, known now
    assert not v.validate(b"abc")  # stays failed
    v.reset()
    assert v.validate(b"\xe2\x82") and not v.complete
    assert v.validate(b"\xac") and v.complete


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=50), cuts=st.lists(st.integers(0, 200), max_size=4))
def test_utf8_validator_accepts_valid_text_split_anywhere(text: str, cuts: list) -> None:
    data = text.encode()
    points = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]
    for name in ("speedups", "purepython"):
        v = load_backend(name).Utf8Validator()
        assert all(v.validate(p) for p in pieces) and v.complete, name


# -- frame building ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "length,header",
    [(0, b"\x82\x00"), (125, b"\x82\x7d"), (126, b"\x82\x7e\x00\x7e"), (65535, b"\x82\x7e\xff\xff"),
     (65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00")],
)
def test_build_frame_uses_minimal_length_encoding(kernels, length: int, header: bytes) -> None:
    payload = b"x" * length
    frame = kernels.build_frame(0x2, payload, False)
    assert frame == header + payload
    assert kernels.build_header(0x2, length) == header


def test_build_frame_masks_with_fresh_keys(kernels) -> None:
    f1 = kernels.build_frame(0x1, "hello", True)
    f2 = kernels.build_frame(0x1, "hello", True)
    assert f1[:2] == b"\x81\x85"
    key = f1[2:6]
    assert naive_mask(f1[6:], key) == b"hello"
    assert f1[2:6] != f2[2:6]  # 2**-32 chance of a false failure


def test_build_frame_text_and_fin(kernels) -> None:
    assert kernels.build_frame(0x1, "é", False) == b"\x81\x02\xc3\xa9"
    assert kernels.build_frame(0x0, b"ab", False, False) == b"\x00\x02ab"
    assert kernels.build_frame(0x2, memoryview(b"ab"), False) == b"\x82\x02ab"
    assert kernels.build_header(0x1, 5, True, True)[:2] == b"\x81\x85"


# -- frame reading -------------------------------------------------------------------------


def client_frames(kernels, *frames) -> bytes:
    return b"".join(kernels.build_frame(op, data, True, fin) for op, data, fin in frames)


def test_reader_whole_messages_in_one_chunk(kernels) -> None:
    r = kernels.FrameReader(True, None)
    stream = client_frames(
        kernels, (1, "héllo", True), (2, b"\x00\x01", True), (9, b"ping", True), (2, b"", True)
    )
    assert r.feed(stream) == ["héllo", b"\x00\x01", (9, b"ping"), b""]
    assert r.attention and r.error is None and not r.closed


def test_reader_byte_by_byte_and_fragments(kernels) -> None:
    r = kernels.FrameReader(True, None)
    text = "fragmented ☃ text"
    data = text.encode()
    stream = client_frames(
        kernels,
        (1, data[:12], False),
        (10, b"pong", True),  # control frames may sit between fragments (section 5.4)
        (0, data[12:13], False),
        (0, b"", False),
        (0, data[13:], True),
        (2, b"x" * 70000, True),
    )
    out = []
    for i in range(len(stream)):
        out.extend(r.feed(stream[i : i + 1]))
    assert out == [(10, b"pong"), text, b"x" * 70000]
    assert r.error is None


def read_like_a_buffered_transport(reader, stream: bytes, chunk: int, minimum: int) -> list:
    """Feed ``stream`` as a BufferedProtocol transport would: into ``direct_buffer`` when the
    reader offers one, else through ``feed``, ``chunk`` bytes per read."""
    out: list = []
    pos = 0
    while pos < len(stream):
        view = reader.direct_buffer(minimum)
        if view is None:
            out.extend(reader.feed(stream[pos : pos + chunk]))
            pos += chunk
        else:
            n = min(chunk, len(view), len(stream) - pos)
            view[:n] = stream[pos : pos + n]
            out.extend(reader.direct_received(n))
            pos += n
    return out


@pytest.mark.parametrize("chunk", [1000, 4096, 65536, 300000])
def test_reader_direct_reads_give_the_same_messages(kernels, chunk: int) -> None:
    text = "é" * 150000 + "end"
    blob = os.urandom(200003)
    stream = client_frames(
        kernels, (2, blob, True), (1, text, True), (9, b"p", True), (2, b"small", True),
        (1, text[:1000], False), (0, text[1000:], True),  # fragmented: never direct
    )
    direct = read_like_a_buffered_transport(kernels.FrameReader(True, None), stream, chunk, 100)
    fed = kernels.FrameReader(True, None).feed(stream)
    assert direct == fed == [blob, text, (9, b"p"), b"small", text]


def test_reader_direct_buffer_only_inside_a_large_whole_message(kernels) -> None:
    r = kernels.FrameReader(True, None)
    frame = client_frames(kernels, (2, b"x" * 100000, True))
    assert r.direct_buffer(0) is None  # between frames
    r.feed(frame[:1000])
    view = r.direct_buffer(65536)
    assert view is not None and len(view) >= 65536
    assert r.direct_buffer(10**6) is None  # less than that is still to come
    with pytest.raises(ValueError):
        r.direct_received(0)
    fragmented = kernels.FrameReader(True, None)
    fragmented.feed(client_frames(kernels, (2, b"y" * 100000, False))[:1000])
    assert fragmented.direct_buffer(0) is None


def test_reader_direct_reads_fail_fast_on_invalid_utf8(kernels) -> None:
    r = kernels.FrameReader(True, None)
    payload = b"a" * 70000 + b"\xff" + b"b" * 70000
    frame = client_frames(kernels, (1, payload, True))
    out = read_like_a_buffered_transport(r, frame[:80000], 40000, 1)
    assert out == [] and r.error == (1007, "invalid UTF-8 in text message") and r.closed
    assert r.direct_buffer(0) is None


def test_reader_close_stops_parsing(kernels) -> None:
    r = kernels.FrameReader(True, None)
    stream = client_frames(kernels, (2, b"a", True), (8, b"\x03\xe8bye", True), (2, b"b", True))
    assert r.feed(stream) == [b"a", (8, b"\x03\xe8bye")]
    assert r.closed and r.error is None
    assert r.feed(client_frames(kernels, (2, b"c", True))) == []


def unmasked(b0: int, payload: bytes) -> bytes:
    return bytes([b0, len(payload)]) + payload


@pytest.mark.parametrize(
    "stream,code",
    [
        (unmasked(0x82, b"x"), 1002),  # server got an unmasked frame
        (b"\xc2\x80" + MASK, 1002),  # RSV1 without an extension
        (b"\x83\x80" + MASK, 1002),  # reserved data opcode
        (b"\x8b\x80" + MASK, 1002),  # reserved control opcode
        (b"\x09\x80" + MASK, 1002),  # fragmented ping
        (b"\x89\xfe\x00\x7e" + MASK + b"\x00" * 126, 1002),  # ping over 125 bytes
        (b"\x80\x80" + MASK, 1002),  # continuation with nothing to continue
        (b"\x01\x80" + MASK + b"\x81\x80" + MASK, 1002),  # new message inside a fragmented one
        (b"\x82\xff\x80" + b"\x00" * 7 + MASK, 1002),  # 64-bit length with the top bit set
        (b"\x82\xff\x40" + b"\x00" * 7 + MASK, 1009),  # claims 2**62 bytes
    ],
)
def test_reader_protocol_errors(kernels, stream: bytes, code: int) -> None:
    r = kernels.FrameReader(True, 2**20)
    assert r.feed(stream) == []
    assert r.error is not None and r.error[0] == code
    assert r.closed
    assert r.feed(b"\x81\x80" + MASK) == []


def test_reader_client_rejects_masked_frames(kernels) -> None:
    r = kernels.FrameReader(False, None)
    assert r.feed(kernels.build_frame(2, b"x", False)) == [b"x"]
    assert r.feed(kernels.build_frame(2, b"x", True)) == []
    assert r.error == (1002, "masked frame")


def test_reader_delivers_messages_before_the_error(kernels) -> None:
    r = kernels.FrameReader(True, None)
    stream = client_frames(kernels, (1, "first", True)) + b"\x83\x80" + MASK
    assert r.feed(stream) == ["first"]
    assert r.error is not None and r.error[0] == 1002


def test_reader_invalid_utf8_fails_fast_mid_frame(kernels) -> None:
    r = kernels.FrameReader(True, None)
    frame = client_frames(kernels, (1, b"valid" + b"\xff" + b"rest" * 10, True))
    # Only a prefix with the bad byte has arrived: the frame is incomplete, but hopeless.
    assert r.feed(frame[:14]) == []
    assert r.error is not None and r.error[0] == 1007


def test_reader_invalid_utf8_fails_on_first_fragment(kernels) -> None:
    r = kernels.FrameReader(True, None)
    assert r.feed(client_frames(kernels, (1, b"\xce\xba\xf5", False))) == []
    assert r.error is not None and r.error[0] == 1007


def test_reader_text_ending_inside_a_sequence(kernels) -> None:
    r = kernels.FrameReader(True, None)
    assert r.feed(client_frames(kernels, (1, b"\xce", False), (0, b"", True))) == []
    assert r.error is not None and r.error[0] == 1007


def _close(code: int = 1000) -> bytes:
    return frame(0x8, code.to_bytes(2, "big") + b"bye")


READ_PAST_CASES = {
    # violation, what the peer goes on sending, then its Close
    "too_big": (frame(0x2, bytes(2000)), frame(0x2, b"more")),
    "reserved_opcode": (frame(0x3, b"nope"), frame(0x1, b"after") * 3),
    "bad_utf8_mid_frame": (frame(0x1, b"ok" + b"\xff" + bytes(3000)), frame(0x2, bytes(10))),
    "unmasked": (frame(0x2, b"x", mask=None), frame(0x9, b"ping")),
}


@pytest.mark.parametrize("case", sorted(READ_PAST_CASES))
@pytest.mark.parametrize("chunk", [1, 7, 100000])
def test_reader_reads_past_until_the_peers_close(kernels, case: str, chunk: int) -> None:
    """After a violation nothing more is delivered, nothing is kept, and the peer's Close is
    still seen (peer_closed) however the stream is cut."""
    violation, more = READ_PAST_CASES[case]
    stream = violation + more + _close() + b"\x00 after the close"
    reader = kernels.FrameReader(True, 1000)
    items = []
    seen_at = None
    for i in range(0, len(stream), chunk):
        items += reader.feed(stream[i : i + chunk])
        if reader.peer_closed and seen_at is None:
            seen_at = i + chunk
    assert items == [] and reader.error is not None and reader.closed
    assert reader.peer_closed
    assert seen_at is not None and seen_at >= len(violation + more + _close())


def test_reader_loses_frame_boundaries_only_on_an_impossible_length(kernels) -> None:
    reader = kernels.FrameReader(True, None)
    bad = bytes([0x82, 0xFF]) + b"\x80" + bytes(7) + MASK
    assert reader.feed(bad + _close()) == []
    assert reader.error is not None and reader.error[0] == 1002
    assert not reader.peer_closed  # no frame boundary can be found after such a header


def test_reader_fail_from_outside_reads_past_the_frame_in_progress(kernels) -> None:
    # Protocol.fail (keepalive, a deflate failure) fails the reader mid-frame.
    reader = kernels.FrameReader(True, None)
    message = frame(0x2, bytes(5000))
    reader.feed(message[:100])
    reader.fail(1011, "keepalive ping timeout")
    reader.fail(1002, "a second failure changes nothing")
    assert reader.feed(message[100:] + _close()) == []
    assert reader.error == (1011, "keepalive ping timeout")
    assert reader.peer_closed


def test_reader_max_size_counts_fragments(kernels) -> None:
    r = kernels.FrameReader(True, 10)
    assert r.feed(client_frames(kernels, (2, b"x" * 10, True))) == [b"x" * 10]
    assert r.feed(client_frames(kernels, (2, b"x" * 6, False), (0, b"x" * 5, True))) == []
    assert r.error is not None and r.error[0] == 1009
    assert r.max_size == 10



def test_missing_extension_falls_back_with_a_warning() -> None:
    # As if the extension had not been compiled: importing it fails.
    code = (
        "import sys; sys.modules['asyncws._speedups'] = None; import asyncws;"
        "print(asyncws.HAS_SPEEDUPS)"
    )
    env = {k: v for k, v in os.environ.items() if k != "ASYNCWS_NO_SPEEDUPS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["False"]
    assert "RuntimeWarning" in out.stderr and "pure-Python fallback" in out.stderr
    # Choosing the fallback on purpose is not worth a warning.
    env["ASYNCWS_NO_SPEEDUPS"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["False"] and out.stderr == ""


def test_fallback_runs_without_cython_installed() -> None:
    # A user without a compiler usually has no Cython either: the uncompiled pump must not
    # need it. An echo through a real server and client, with Cython made unimportable.
    code = (
        "import sys; sys.modules['cython'] = None\n"
        "import asyncio, asyncws\n"
        "async def main():\n"
        "    async def echo(ws):\n"
        "        async for m in ws: await ws.send(m)\n"
        "    srv = await asyncws.start_server(echo, '127.0.0.1', 0)\n"
        "    port = srv.sockets[0].getsockname()[1]\n"
        "    async with asyncws.connect(f'ws://127.0.0.1:{port}/') as ws:\n"
        "        await ws.send('no cython'); print(await ws.recv())\n"
        "    srv.close(); await srv.wait_closed()\n"
        "asyncio.run(main()); print(asyncws.HAS_SPEEDUPS)\n"
    )
    env = dict(os.environ, ASYNCWS_NO_SPEEDUPS="1")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split("\n")[:2] == ["no cython", "False"], out.stderr


def test_streamed_messages_agree_between_backends() -> None:
    """stream_next_message() at every point of a stream: both kernels hand out the same pieces,
    and the pieces always add up to the message."""
    fast, pure = load_backend("speedups"), load_backend("purepython")
    text = "é☃ streamed".encode()
    stream = client_frames(
        pure,
        (1, text[:1], False),
        (9, b"p", True),
        (0, text[1:5], False),
        (0, text[5:], True),
        (2, b"one frame", True),
        (2, b"ab", False),
        (0, b"cd", True),
    )
    for call_at in range(len(stream) + 1):
        results = []
        for kernels in (fast, pure):
            reader = kernels.FrameReader(True, None)
            items = reader.feed(stream[:call_at]) + reader.stream_next_message()
            items += reader.feed(stream[call_at:])
            results.append(items)
        assert results[0] == results[1], call_at
        pieces = [i for i in results[0] if type(i) is tuple and len(i) == 3]
        whole = [i for i in results[0] if type(i) is not tuple]
        if pieces:
            assert pieces[-1][2] is True  # the last piece carries FIN
            joined = b"".join(p[1] for p in pieces)
            assert joined in (text, b"abcd")
        assert len(pieces) + len(whole) >= 2  # three messages, one possibly in pieces
