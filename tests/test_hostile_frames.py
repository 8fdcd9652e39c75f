"""Hostile frames after a valid handshake, written by hand on a raw socket.

For every protocol violation the server must send a Close frame with the RFC's code (parsed here
from the wire), end the TCP connection, deliver the messages that came before the violation,
hand its handler ``None``, and log one line on the ``asyncws`` logger. Peers that vanish
mid-frame or mid-close end the handler quietly with nothing left pending. The client side gets
the same treatment from a raw, hostile server.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest

import asyncws

from . import _raw
from ._raw import close_frame, frame

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA



def no_errors(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def failure_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "asyncws" and "failing connection" in r.getMessage()
    ]


class Collector:
    """A handler that records every recv() result (ending with None) and the close code of the
    first connection; later connections (``check_served``) get an echo."""

    def __init__(self) -> None:
        self.got: list[Any] = []
        self.close_code: int | None = None
        self.done: asyncio.Event | None = None
        self.calls = 0

    async def __call__(self, ws: asyncws.Websocket) -> None:
        assert self.done is not None
        self.calls += 1
        if self.calls > 1:
            await _raw.echo(ws)
            return
        try:
            while True:
                msg = await ws.recv()
                self.got.append(msg)
                if msg is None:
                    break
            self.close_code = ws.close_code
        finally:
            self.done.set()

    async def wait(self, timeout: float = 10.0) -> None:
        assert self.done is not None
        await asyncio.wait_for(self.done.wait(), timeout)


async def violate(data: bytes, **server_kw: Any) -> tuple[int | None, bytes, Collector]:
    """Send a valid text message then ``data``; return the server's close code and reason and
    the handler's record, after checking that the connection ended."""
    handler = Collector()
    handler.done = asyncio.Event()
    async with _raw.serving(handler, **server_kw) as port:
        reader, writer = await _raw.open_raw(port)
        writer.write(frame(TEXT, b"before") + data)
        code, reason, before = await _raw.read_close(reader)
        assert before == []  # the collector sends nothing
        writer.close()
        await handler.wait()
        assert await _raw.wait_no_other_tasks() == []
        await _raw.check_served(port)
    return code, reason, handler


def bad_utf8_fragments() -> bytes:
    return frame(TEXT, b"\xce", fin=False) + frame(CONT, b"\xff")


VIOLATIONS = [
    ("unmasked text", frame(TEXT, b"hi", mask=None), 1002),
    ("unmasked close", close_frame(1000, mask=None), 1002),
    *[(f"rsv={rsv}", frame(TEXT, b"x", rsv=rsv), 1002) for rsv in range(1, 8)],
    *[(f"opcode {op}", frame(op, b"x"), 1002) for op in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15)],
    ("ping of 126 bytes", frame(PING, b"p" * 126), 1002),
    ("pong of 65536 bytes", frame(PONG, b"p" * 65536), 1002),
    ("close of 126 bytes", close_frame(1000, b"r" * 124), 1002),
    ("fragmented ping", frame(PING, b"p", fin=False), 1002),
    ("fragmented close", close_frame(1000, fin=False), 1002),
    ("orphan continuation", frame(CONT, b"x"), 1002),
    ("new message inside a fragmented one",
     frame(TEXT, b"a", fin=False) + frame(BINARY, b"b"), 1002),
    ("invalid UTF-8", frame(TEXT, b"ok\xff"), 1007),
    ("invalid UTF-8 across fragments", bad_utf8_fragments(), 1007),
    ("UTF-8 surrogate", frame(TEXT, b"\xed\xa0\x80"), 1007),
    ("UTF-8 overlong", frame(TEXT, b"\xc0\xaf"), 1007),
    ("UTF-8 above U+10FFFF", frame(TEXT, b"\xf4\x90\x80\x80"), 1007),
    ("text ends inside a sequence", frame(TEXT, b"caf\xc3"), 1007),
    ("fragmented text ends inside a sequence",
     frame(TEXT, b"caf", fin=False) + frame(CONT, b"\xc3"), 1007),
    ("close with 1 byte", frame(CLOSE, b"\x03"), 1002),
    *[(f"close code {c}", close_frame(c), 1002) for c in (0, 999, 1004, 1005, 1006, 1015, 1016,
                                                          2000, 2999, 5000, 65535)],
    ("close reason not UTF-8", close_frame(1000, b"\xff\xfe"), 1007),
    ("length with the top bit set", frame(BINARY, length=2**63 + 5), 1002),
    ("length 2**64 - 1", frame(BINARY, length=2**64 - 1), 1002),
    ("header claiming 2**62 bytes", frame(BINARY, length=2**62), 1009),
    ("text header claiming 2**62 bytes", frame(TEXT, length=2**62), 1009),
    ("continuation claiming 2**62 bytes",
     frame(BINARY, b"a", fin=False) + frame(CONT, length=2**62), 1009),
    ("one frame over max_size", frame(BINARY, b"x" * (2**20 + 1)), 1009),
]


@pytest.mark.parametrize(
    "data,code", [v[1:] for v in VIOLATIONS], ids=[v[0] for v in VIOLATIONS]
)
def test_violation(data, code, caplog):
    caplog.set_level(logging.INFO, logger="asyncws")
    got_code, reason, handler = _raw.run(violate(data), timeout=30)
    assert got_code == code
    reason.decode("utf-8")  # the reason we send is UTF-8
    assert handler.got == ["before", None]
    assert handler.close_code == code
    assert len(failure_logs(caplog)) == 1, failure_logs(caplog)
    assert str(code) in failure_logs(caplog)[0]
    no_errors(caplog)


def test_max_size_in_many_small_fragments(caplog):
    """64 KiB max_size, a message arriving 1 KiB at a time: 1009 once the total passes it."""
    caplog.set_level(logging.INFO, logger="asyncws")
    piece = b"z" * 1024
    data = frame(BINARY, piece, fin=False)
    data += b"".join(frame(CONT, piece, fin=False) for _ in range(100))
    code, _, handler = _raw.run(violate(data, max_size=65536), timeout=30)
    assert code == 1009
    assert handler.got == ["before", None]
    no_errors(caplog)


def test_max_size_in_tiny_fragments_with_pings(caplog):
    """1-byte fragments interleaved with pings: the pings are answered, and the message is
    refused with 1009 once it passes max_size."""
    caplog.set_level(logging.INFO, logger="asyncws")

    async def main():
        handler = Collector()
        handler.done = asyncio.Event()
        async with _raw.serving(handler, max_size=100) as port:
            reader, writer = await _raw.open_raw(port)
            writer.write(frame(TEXT, b"a", fin=False))
            for i in range(200):
                writer.write(frame(CONT, b"b", fin=False))
                if i % 10 == 0:
                    writer.write(frame(PING, str(i).encode()))
            code, _, before = await _raw.read_close(reader)
            assert code == 1009
            assert [f.opcode for f in before] == [PONG] * len(before)
            assert [f.payload for f in before] == [str(i).encode() for i in range(0, 100, 10)]
            writer.close()
            await handler.wait()
            assert handler.got == [None]

    _raw.run(main())
    no_errors(caplog)


def test_exactly_max_size_is_accepted():
    async def main():
        async with _raw.serving(max_size=4096) as port:
            reader, writer = await _raw.open_raw(port)
            writer.write(frame(BINARY, b"a" * 2048, fin=False) + frame(CONT, b"b" * 2048))
            echoed = await asyncio.wait_for(_raw.read_frame(reader), 10)
            assert echoed.payload == b"a" * 2048 + b"b" * 2048
            writer.write(close_frame(1000))
            code, _, _ = await _raw.read_close(reader)
            assert code == 1000
            writer.close()

    _raw.run(main())


@pytest.mark.parametrize(
    "first",
    [
        frame(TEXT, b"hello \xff", fin=False),
        frame(TEXT, b"ok \xf4\x90", fin=False),  # cannot become a code point <= U+10FFFF
        frame(TEXT, b"ok \xed\xa0", fin=False),  # cannot become anything but a surrogate
        frame(TEXT, b"ok \xe0\x80", fin=False),  # cannot become anything but an overlong
        frame(TEXT, b"hello \xff", length=1000),  # one frame whose payload never all comes
        frame(TEXT, b"a", fin=False) + frame(CONT, b"\xc0", fin=False),
    ],
    ids=["0xff", "above-max", "surrogate", "overlong", "partial-frame", "second-fragment"],
)
def test_invalid_utf8_fails_fast(first, caplog):
    """An impossible byte in a message whose rest never comes: 1007 at once, no waiting."""
    caplog.set_level(logging.INFO, logger="asyncws")

    async def main():
        handler = Collector()
        handler.done = asyncio.Event()
        async with _raw.serving(handler) as port:
            reader, writer = await _raw.open_raw(port)
            writer.write(first)  # and nothing more: the socket stays open
            # Fail fast: the Close comes at once (3 s is only a hang guard).
            code, _, _ = await _raw.read_close(reader, timeout=3)
            assert code == 1007
            writer.close()
            await handler.wait()

    _raw.run(main())
    assert len(failure_logs(caplog)) == 1
    no_errors(caplog)


def test_huge_header_without_limit_allocates_nothing(caplog):
    """max_size=None and a header claiming 2**62 bytes: the payload is taken as it comes (no
    allocation up front); the peer then vanishes and the handler gets None."""
    caplog.set_level(logging.INFO, logger="asyncws")

    async def main():
        handler = Collector()
        handler.done = asyncio.Event()
        async with _raw.serving(handler, max_size=None) as port:
            reader, writer = await _raw.open_raw(port)
            writer.write(frame(BINARY, length=2**62) + b"\0" * 65536)
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.close()
            await handler.wait()
            assert handler.got == [None]
            assert handler.close_code == 1006
            assert await _raw.wait_no_other_tasks() == []
            await _raw.check_served(port)

    _raw.run(main())
    no_errors(caplog)


VANISH = [
    ("before any frame", b""),
    ("mid-header", frame(TEXT, b"x" * 300)[:3]),
    ("mid-mask", frame(TEXT, b"x")[:4]),
    ("mid-payload", frame(BINARY, b"x" * 100)[:50]),
    ("mid-message", frame(TEXT, b"abc", fin=False)),
    ("mid-close-frame", close_frame(1000, b"bye")[:5]),
    ("after close", close_frame(1000, b"bye")),
    ("mid-utf8", frame(TEXT, b"caf\xc3", fin=False)),
]


@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
@pytest.mark.parametrize("data", [v[1] for v in VANISH], ids=[v[0] for v in VANISH])
def test_peer_vanishes(data, rst, caplog):
    caplog.set_level(logging.INFO)

    async def main():
        handler = Collector()
        handler.done = asyncio.Event()
        async with _raw.serving(handler) as port:
            reader, writer = await _raw.open_raw(port)
            writer.write(frame(TEXT, b"before") + data)
            await writer.drain()
            await asyncio.sleep(0.02)
            if rst:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            writer.close()
            await handler.wait()
            assert handler.got == ["before", None]
            assert handler.close_code in (1000, 1006)
            assert await _raw.wait_no_other_tasks() == []
            await _raw.check_served(port)

    _raw.run(main())
    no_errors(caplog)


def test_peer_vanishes_while_handler_sends(caplog):
    """The handler is blocked in send(flush=True) on a peer that does not read, then the peer
    resets: the handler gets ConnectionClosed (or returns), nothing is logged at ERROR."""
    caplog.set_level(logging.INFO)
    outcome: list[Any] = []

    async def sender(ws):
        try:
            for _ in range(1000):
                await ws.send(b"x" * 65536, flush=True)
            outcome.append("sent all")
        except asyncws.ConnectionClosed as exc:
            outcome.append(exc)
            raise

    async def main():
        async with _raw.serving(sender) as port:
            reader, writer = await _raw.open_raw(port)
            await asyncio.sleep(0.3)  # let the buffers fill
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            writer.close()
            for _ in range(500):
                if outcome:
                    break
                await asyncio.sleep(0.01)
            assert await _raw.wait_no_other_tasks() == []

    _raw.run(main())
    assert len(outcome) == 1 and isinstance(outcome[0], asyncws.ConnectionClosed)
    no_errors(caplog)


def test_close_then_garbage_is_ignored(caplog):
    """Section 5.5.1: nothing after a Close is parsed; the server echoes the close code."""
    caplog.set_level(logging.INFO, logger="asyncws")

    async def main():
        handler = Collector()
        handler.done = asyncio.Event()
        async with _raw.serving(handler) as port:
            reader, writer = await _raw.open_raw(port)
            writer.write(close_frame(4000, b"done") + b"\xff" * 100 + frame(TEXT, b"late"))
            code, _, _ = await _raw.read_close(reader)
            assert code == 4000
            writer.close()
            await handler.wait()
            assert handler.got == [None]
            assert handler.close_code == 4000

    _raw.run(main())
    assert failure_logs(caplog) == []
    no_errors(caplog)


# -- the client against a hostile server -------------------------------------------------------


CLIENT_VIOLATIONS = [
    ("masked frame", frame(TEXT, b"hi"), 1002),
    ("reserved opcode", frame(5, b"x", mask=None), 1002),
    ("reserved bits", frame(TEXT, b"x", rsv=4, mask=None), 1002),
    ("invalid UTF-8", frame(TEXT, b"\xff", mask=None), 1007),
    ("header claiming 2**62 bytes", frame(BINARY, length=2**62, mask=None), 1009),
    ("bad close code", close_frame(1005, mask=None), 1002),
]


def client_violation(data: bytes, code: int, before: bool, caplog) -> None:
    caplog.set_level(logging.INFO)
    seen: list[Any] = []

    async def handle(reader, writer):
        key = await _raw.read_request_key(reader)
        first = frame(TEXT, b"before", mask=None) if before else b""
        writer.write(_raw.response_101(key) + first + data)
        f = await asyncio.wait_for(_raw.read_frame(reader), 10)
        seen.append(f)
        # Then the server closes the TCP connection first (section 7.1.1): raw_server does.

    async def main():
        async with _raw.raw_server(handle) as port:
            # A long close timeout: the client must notice the server's TCP close, not time out.
            ws = await asyncws.connect(f"ws://127.0.0.1:{port}/", open_timeout=5, close_timeout=60)
            if before:
                assert await asyncio.wait_for(ws.recv(), 10) == "before"
            assert await asyncio.wait_for(ws.recv(), 10) is None
            assert ws.close_code == code
            await asyncio.wait_for(asyncio.shield(ws.closed), 3)  # hang guard
            await ws.close()
        assert await _raw.wait_no_other_tasks() == []

    _raw.run(main())
    assert len(seen) == 1 and seen[0].opcode == CLOSE and seen[0].masked
    assert seen[0].close_code == code
    assert len(failure_logs(caplog)) == 1
    no_errors(caplog)


@pytest.mark.parametrize(
    "data,code", [v[1:] for v in CLIENT_VIOLATIONS], ids=[v[0] for v in CLIENT_VIOLATIONS]
)
def test_client_violation(data, code, caplog):
    client_violation(data, code, False, caplog)


def test_client_violation_after_a_message(caplog):
    client_violation(frame(5, b"x", mask=None), 1002, True, caplog)


def test_client_server_vanishes_mid_frame(caplog):
    caplog.set_level(logging.INFO)

    async def handle(reader, writer):
        key = await _raw.read_request_key(reader)
        writer.write(_raw.response_101(key) + frame(BINARY, b"x" * 100, mask=None)[:20])
        await writer.drain()

    async def main():
        async with _raw.raw_server(handle) as port:
            ws = await asyncws.connect(f"ws://127.0.0.1:{port}/", open_timeout=5)
            assert await asyncio.wait_for(ws.recv(), 10) is None
            assert ws.close_code == 1006
            with pytest.raises(asyncws.ConnectionClosed):
                await ws.send("late")
            await ws.close()
        assert await _raw.wait_no_other_tasks() == []

    _raw.run(main())
    no_errors(caplog)
