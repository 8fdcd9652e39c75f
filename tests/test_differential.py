"""Differential property tests: the Cython kernels against their pure-Python twin, and both
against naive references (a byte loop for masking, ``bytes.decode`` for UTF-8).

The same byte streams (valid frame sequences, then corrupted, truncated, cut at arbitrary points
and fed as bytes / bytearray / memoryview) go to ``asyncws._speedups.FrameReader`` and
``asyncws._purepython.FrameReader``: after every feed the items, ``error``, ``closed`` and the
per-feed flag must be identical. Also a bounded run of the fuzz targets in ``fuzz/``.

Examples are derandomized (the same ones on every run) unless ASYNCWS_STRESS is set, which also
raises their number.
"""

from __future__ import annotations

import codecs

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from . import _raw

common = _raw.load_fuzz("_common")
fuzz_frames = _raw.load_fuzz("fuzz_frames")
PURE, FAST = common.backends()

needs_fast = pytest.mark.skipif(FAST is None, reason="asyncws._speedups is not built")

SETTINGS = settings(
    max_examples=_raw.scaled(200, 5000),
    deadline=None,
    derandomize=not _raw.STRESS,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # validator_class: a backend, no per-example state
    ],
)


def all_backends():
    return [PURE] + ([FAST] if FAST is not None else [])


# -- strategies --------------------------------------------------------------------------------

payloads = st.one_of(
    st.text(max_size=40).map(lambda s: s.encode("utf-8")),
    st.binary(max_size=200),
    st.lists(st.sampled_from(fuzz_frames.UTF8_PIECES), max_size=20).map(b"".join),
    st.sampled_from([b"", b"x" * 125, b"x" * 126, b"y" * 65535, b"z" * 65536, b"w" * 70000]),
)

opcodes = st.one_of(
    st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA]), st.integers(0, 15)
)

max_sizes = st.sampled_from(fuzz_frames.MAX_SIZES)


@st.composite
def frame_streams(draw, expect_masked: bool) -> bytes:
    out = bytearray()
    for _ in range(draw(st.integers(1, 8))):
        opcode = draw(opcodes)
        payload = draw(payloads)
        fin = draw(st.booleans())
        rsv = draw(st.sampled_from([0] * 15 + [1, 2, 4, 7]))
        masked = draw(st.sampled_from([expect_masked] * 15 + [not expect_masked]))
        key = draw(st.binary(min_size=4, max_size=4)) if masked else None
        length = draw(st.one_of(st.none(), st.none(), st.none(),
                                st.sampled_from(fuzz_frames.INTERESTING_LENGTHS)))
        wide = draw(st.sampled_from([0] * 6 + [1, 2]))
        out += common.frame(opcode, payload, fin=fin, rsv=rsv, key=key, length=length, wide=wide)
    for _ in range(draw(st.integers(0, 3))):  # corruption
        if out:
            out[draw(st.integers(0, len(out) - 1))] ^= draw(st.integers(1, 255))
    if draw(st.booleans()):  # truncation
        del out[draw(st.integers(0, len(out))) :]
    out += draw(st.binary(max_size=8))  # trailing garbage (often nothing)
    return bytes(out)


@st.composite
def stream_cases(draw):
    expect_masked = draw(st.booleans())
    stream = draw(frame_streams(expect_masked))
    cuts = draw(st.lists(st.integers(0, len(stream)), max_size=10))
    kinds = draw(st.lists(st.integers(0, 2), min_size=1, max_size=4))
    return stream, cuts, kinds, expect_masked, draw(max_sizes)


# -- FrameReader -------------------------------------------------------------------------------


def compare_readers(stream, cuts, kinds, expect_masked, max_size):
    pure, fast = fuzz_frames.run(stream, cuts, kinds, expect_masked, max_size)
    common.check_record(pure, max_size)
    common.check_record(fast, max_size)
    assert pure == fast


@needs_fast
@SETTINGS
@given(stream_cases())
def test_frame_readers_agree(case):
    compare_readers(*case)


@needs_fast
@SETTINGS
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=8), st.booleans(),
       max_sizes)
def test_frame_readers_agree_on_noise(data, cuts, expect_masked, max_size):
    compare_readers(data, cuts, [0, 1, 2], expect_masked, max_size)


messages = st.one_of(st.text(max_size=300), st.binary(max_size=3000))


@st.composite
def valid_conversations(draw):
    """(messages and pings in order, the frames a client would send for them)."""
    backend = draw(st.sampled_from(all_backends()))
    mask = draw(st.booleans())
    items, frames = [], []
    for msg in draw(st.lists(messages, max_size=6)):
        data = msg.encode("utf-8") if isinstance(msg, str) else msg
        opcode = 0x1 if isinstance(msg, str) else 0x2
        cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
        parts = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            frames.append(backend.build_frame(opcode if i == 0 else 0x0, part, mask, last))
            if draw(st.integers(0, 4)) == 0:  # a ping between fragments
                ping = draw(st.binary(max_size=125))
                frames.append(backend.build_frame(0x9, ping, mask))
                items.append((0x9, ping))
        items.append(msg)
    return mask, items, b"".join(frames)


@SETTINGS
@given(valid_conversations(), st.lists(st.integers(0, 20000), max_size=8),
       st.lists(st.integers(0, 2), min_size=1, max_size=3))
def test_valid_streams_parse_back(conv, cuts, kinds):
    """Frames built by either backend's build_frame, cut anywhere: each reader returns exactly
    the messages and pings, in order, with no error."""
    mask, items, stream = conv
    for backend in all_backends():
        records = common.feed_all(
            backend.FrameReader(mask, None), common.split(stream, cuts, kinds)
        )
        got = [item for rec in records for item in rec[0]]
        # A ping ahead of the message it interrupts is returned when parsed: reorder check.
        assert sorted(map(repr, got)) == sorted(map(repr, items))
        assert [i for i in got if type(i) is not tuple] == [
            i for i in items if type(i) is not tuple
        ]
        assert records[-1][1] is None and not records[-1][2]


@needs_fast
@SETTINGS
@given(st.integers(0, 15), st.integers(0, 2**63 - 1), st.booleans(), st.booleans())
def test_build_header_agrees(opcode, length, fin, mask):
    a = PURE.build_header(opcode, length, fin, mask)
    b = FAST.build_header(opcode, length, fin, mask)
    assert len(a) == len(b)
    n = len(a) - (4 if mask else 0)
    assert a[:n] == b[:n]  # the masking keys are random


@needs_fast
@SETTINGS
@given(st.sampled_from([0x1, 0x2, 0x8, 0x9, 0xA, 0x0]), st.one_of(st.binary(max_size=70000),
       st.text(max_size=100)), st.booleans())
def test_build_frame_agrees(opcode, payload, fin):
    assert PURE.build_frame(opcode, payload, False, fin) == FAST.build_frame(
        opcode, payload, False, fin
    )
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    for backend in (PURE, FAST):
        masked = backend.build_frame(opcode, payload, True, fin)
        head = len(masked) - len(data)
        assert masked[1] & 0x80
        assert common.naive_mask(masked[head:], masked[head - 4 : head]) == data


@pytest.mark.parametrize("payload", [b"ok\xed\xa0", b"\xed\xbf", b"ok\xf4\x90", b"\xe0\x80"])
def test_readers_fail_fast_alike(payload):
    """Regression (the pure-Python validator used to keep ED A0..BF pending; fixed in
    26272fa): a first fragment ending in an impossible prefix fails at once in both."""
    stream = common.frame(0x1, payload, fin=False)
    for backend in all_backends():
        records = common.feed_all(backend.FrameReader(False, None), [stream])
        assert records[-1][1] == (1007, "invalid UTF-8 in text message")


# -- masking -----------------------------------------------------------------------------------

keys = st.binary(min_size=4, max_size=4)
mask_data = st.one_of(st.binary(max_size=100), st.binary(min_size=1000, max_size=5000))


@SETTINGS
@given(mask_data, keys)
def test_apply_mask(data, key):
    expected = common.naive_mask(data, key)
    for backend in all_backends():
        for buf in (data, bytearray(data), memoryview(data)):
            assert backend.apply_mask(buf, key) == expected
        assert backend.apply_mask(backend.apply_mask(data, key), key) == data


@SETTINGS
@given(mask_data, keys, st.integers(-10, 10**6), st.integers(0, 7), st.integers(0, 7))
def test_apply_mask_inplace(data, key, offset, before, after):
    expected = common.naive_mask(data, key, offset)
    for backend in all_backends():
        buf = bytearray(data)
        backend.apply_mask_inplace(buf, key, offset)
        assert buf == expected
        # Through a memoryview of the middle of a larger buffer: the edges stay untouched.
        big = bytearray(b"\xaa" * before + data + b"\x55" * after)
        backend.apply_mask_inplace(memoryview(big)[before : before + len(data)], key, offset)
        assert big == b"\xaa" * before + expected + b"\x55" * after


@pytest.mark.parametrize("bad", [b"", b"abc", b"abcde"])
def test_apply_mask_rejects_bad_keys(bad):
    for backend in all_backends():
        with pytest.raises(ValueError):
            backend.apply_mask(b"data", bad)
        with pytest.raises(ValueError):
            backend.apply_mask_inplace(bytearray(b"data"), bad)


# -- UTF-8 -------------------------------------------------------------------------------------

UTF8_ALPHABET = [0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF,
                 0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF]
utf8ish = st.one_of(
    st.binary(max_size=64),
    st.lists(st.sampled_from(UTF8_ALPHABET), max_size=24).map(bytes),
    st.lists(st.sampled_from(fuzz_frames.UTF8_PIECES), max_size=12).map(b"".join),
    st.text(max_size=40).map(lambda s: s.encode("utf-8")),
)


def pieces_of(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


def decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def has_surrogate_prefix(data: bytes) -> bool:
    return any(a == 0xED and 0xA0 <= b <= 0xBF for a, b in zip(data, data[1:]))


@pytest.fixture(params=["purepython", "speedups"])
def validator_class(request):
    backend = PURE if request.param == "purepython" else FAST
    if backend is None:
        pytest.skip("asyncws._speedups is not built")
    return backend.Utf8Validator


@SETTINGS
@given(utf8ish, st.lists(st.integers(0, 64), max_size=8))
def test_utf8_overall_validity_matches_decode(validator_class, data, cuts):
    v = validator_class()
    ok = all([v.validate(p) for p in pieces_of(data, cuts)])
    assert (ok and v.complete) == decodes(data)
    if not decodes(data):
        assert not v.complete


@SETTINGS
@given(st.text(max_size=60), st.lists(st.integers(0, 300), max_size=10))
def test_utf8_valid_text_split_anywhere(validator_class, text, cuts):
    data = text.encode("utf-8")
    v = validator_class()
    pos = 0
    for piece in pieces_of(data, cuts):
        assert v.validate(piece)
        pos += len(piece)
        assert v.complete == decodes(data[:pos])  # complete exactly at character boundaries
    assert v.complete


@SETTINGS
@given(utf8ish, st.lists(st.integers(0, 64), max_size=8))
def test_utf8_fails_fast(validator_class, data, cuts):
    """validate() returns False for the piece holding the first byte after which the data can
    no longer become valid UTF-8, True for every piece before, False for every piece after."""
    bad = common.first_impossible(data)
    v = validator_class()
    pos = 0
    for piece in pieces_of(data, cuts):
        got = v.validate(piece)
        pos += len(piece)
        expected = bad is None or bad >= pos
        assert got == expected, (data, pos, bad)


@SETTINGS
@given(utf8ish, st.lists(st.integers(0, 64), max_size=8))
def test_incremental_decoder_agrees_except_surrogates(data, cuts):
    """The reference the brief suggested (codecs' incremental decoder) agrees with the oracle
    everywhere but on ED A0..BF, which is why the oracle, not the decoder, is the reference."""
    assume(not has_surrogate_prefix(data))
    bad = common.first_impossible(data)
    dec = codecs.getincrementaldecoder("utf-8")()
    pos = 0
    failed = False
    for piece in pieces_of(data, cuts):
        pos += len(piece)
        if not failed:
            try:
                dec.decode(piece, False)
            except UnicodeDecodeError:
                failed = True
        assert failed == (bad is not None and bad < pos)


@pytest.mark.parametrize("data", [b"\xed\xa0", b"ok\xed\xbf", b"\xed\xa5"])
def test_utf8_surrogate_prefix_fails_fast(validator_class, data):
    """Regression: CPython's incremental decoder keeps ED A0..BF pending; the pure-Python
    validator used to inherit that (fixed in 26272fa)."""
    assert not validator_class().validate(data)


def test_oracle_sanity():
    assert common.first_impossible(b"abc") is None
    assert common.first_impossible(b"ab\xff") == 2
    assert common.first_impossible(b"\xe2\x82") is None  # incomplete but possible
    assert common.first_impossible(b"\xed\xa0") == 1
    assert common.first_impossible(b"\xf4\x90") == 1
    assert common.first_impossible(b"\xc3\xa9\xc3") is None


# -- a bounded run of the fuzz target ----------------------------------------------------------


@settings(
    max_examples=_raw.scaled(300, 20000),
    deadline=None,
    derandomize=not _raw.STRESS,
    suppress_health_check=list(HealthCheck),
)
@given(st.binary(max_size=2048))
def test_fuzz_frames_short_run(data):
    fuzz_frames.one_input(data)
