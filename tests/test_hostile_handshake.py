"""Hostile opening handshakes, server and client side, over raw sockets.

Each refused request must get the exact status line of RFC 6455 / RFC 7230, a log line on the
``asyncws`` logger, the end of the connection, and must leave the server serving normal clients.
Oversized heads are answered once past the 16 KiB limit, not buffered; slow and silent clients
are bounded by ``open_timeout``. On the client side, ``connect`` raises ``InvalidHandshake`` (or
``TimeoutError``) for every bad or missing answer and never hangs.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asyncws
from asyncws.handshake import MAX_HEAD

from . import _raw

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def refused_logs(caplog: pytest.LogCaptureFixture) -> list:
    return [
        r
        for r in caplog.records
        if r.name == "asyncws" and "refused handshake" in r.getMessage()
    ]


def no_errors(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


# (name, request bytes for a port, exact status line, a header the answer must carry)
BAD_REQUESTS = [
    ("missing key", lambda p: _raw.upgrade_request(p, headers={"Sec-WebSocket-Key": None}),
     "HTTP/1.1 400 Bad Request", None),
    ("key not base64", lambda p: _raw.upgrade_request(p, headers={"Sec-WebSocket-Key": "#$%!"}),
     "HTTP/1.1 400 Bad Request", None),
    ("key not 16 bytes", lambda p: _raw.upgrade_request(p, headers={"Sec-WebSocket-Key": "AAAA"}),
     "HTTP/1.1 400 Bad Request", None),
    ("key repeated", lambda p: _raw.upgrade_request(p, extra=[("Sec-WebSocket-Key", _raw.KEY)]),
     "HTTP/1.1 400 Bad Request", None),
    ("key non-ascii", lambda p: _raw.upgrade_request(
        p, headers={"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ\xe9="}),
     "HTTP/1.1 400 Bad Request", None),
    ("version 8", lambda p: _raw.upgrade_request(p, headers={"Sec-WebSocket-Version": "8"}),
     "HTTP/1.1 426 Upgrade Required", ("sec-websocket-version", "13")),
    ("version missing", lambda p: _raw.upgrade_request(p, headers={"Sec-WebSocket-Version": None}),
     "HTTP/1.1 426 Upgrade Required", ("sec-websocket-version", "13")),
    ("POST", lambda p: _raw.upgrade_request(p, method="POST"),
     "HTTP/1.1 405 Method Not Allowed", None),
    ("HTTP/1.0", lambda p: _raw.upgrade_request(p, version="HTTP/1.0"),
     "HTTP/1.1 400 Bad Request", None),
    ("garbage request line", lambda p: b"\x00\xffHELLO\x01\r\n\r\n",
     "HTTP/1.1 400 Bad Request", None),
    ("two-word request line", lambda p: b"GET /\r\nHost: x\r\n\r\n",
     "HTTP/1.1 400 Bad Request", None),
    ("missing Host", lambda p: _raw.upgrade_request(p, headers={"Host": None}),
     "HTTP/1.1 400 Bad Request", None),
    ("repeated Host", lambda p: _raw.upgrade_request(p, extra=[("Host", "evil")]),
     "HTTP/1.1 400 Bad Request", None),
    ("missing Upgrade", lambda p: _raw.upgrade_request(p, headers={"Upgrade": None}),
     "HTTP/1.1 426 Upgrade Required", None),
    ("missing Connection", lambda p: _raw.upgrade_request(p, headers={"Connection": None}),
     "HTTP/1.1 400 Bad Request", None),
    ("header without colon", lambda p: _raw.upgrade_request(p, extra=[("Bad header", "")])
     .replace(b"Bad header: ", b"Bad header"),
     "HTTP/1.1 400 Bad Request", None),
    ("bare LF in a value", lambda p: _raw.upgrade_request(p, extra=[("X-A", "b\nX-B: c")]),
     "HTTP/1.1 400 Bad Request", None),
    ("NUL in a value", lambda p: _raw.upgrade_request(p, extra=[("X-A", "b\x00c")]),
     "HTTP/1.1 400 Bad Request", None),
    ("200 header fields", lambda p: _raw.upgrade_request(p, extra=[("a", "b")] * 200),
     "HTTP/1.1 431 Request Header Fields Too Large", None),
    ("10,000 header fields", lambda p: _raw.upgrade_request(p, extra=[("a", "b")] * 10_000),
     "HTTP/1.1 431 Request Header Fields Too Large", None),
]


@pytest.mark.parametrize(
    "make,status,header", [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS]
)
def test_refused_request(make, status, header, caplog):
    caplog.set_level(logging.INFO, logger="asyncws")

    async def main():
        async with _raw.serving() as port:
            head, body = await _raw.exchange(port, make(port))
            assert head.start == status
            if header is not None:
                assert head.get(header[0]) == header[1]
            assert "close" in head.tokens("connection")
            assert len(body) == int(head.get("content-length"))
            await _raw.check_served(port)

    _raw.run(main())
    assert len(refused_logs(caplog)) == 1
    assert status.split()[1] in refused_logs(caplog)[0].getMessage()
    no_errors(caplog)


@pytest.mark.parametrize("first_line", [True, False], ids=["headers", "request-line"])
def test_head_that_never_ends(first_line, caplog):
    """1 MiB without CRLFCRLF: answered as soon as the head is past 16 KiB, before the client
    has sent it all; 431 (a header block) or 414 (a request line that never ends)."""
    caplog.set_level(logging.INFO, logger="asyncws")
    total = 2**20
    chunk = 4096

    async def main():
        async with _raw.serving() as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            prefix = b"GET / HTTP/1.1\r\nX-Long: " if first_line else b"GET /"
            writer.write(prefix)
            sent = len(prefix)
            answer = asyncio.ensure_future(_raw.read_head(reader, 30))
            while sent < total and not answer.done():
                writer.write(b"a" * chunk)
                sent += chunk
                try:
                    await asyncio.wait_for(writer.drain(), 5)
                except ConnectionError:
                    break
                # Give the server a chance to answer before the next chunk.
                await asyncio.wait({answer}, timeout=0.001)
            head = await answer
            # The server answered without waiting for the whole megabyte.
            assert sent <= 4 * MAX_HEAD, sent
            if first_line:
                assert head.start == "HTTP/1.1 431 Request Header Fields Too Large"
            else:
                assert head.start == "HTTP/1.1 414 URI Too Long"
            await _raw.read_to_eof(reader)
            writer.close()
            await _raw.check_served(port)

    _raw.run(main())
    assert len(refused_logs(caplog)) == 1
    no_errors(caplog)


def test_head_flood_in_one_write(caplog):
    """The same megabyte written at once (the server may read it in big chunks): still one
    answer and the end of the connection, not a hang; the server stays up."""
    caplog.set_level(logging.INFO, logger="asyncws")

    async def main():
        async with _raw.serving() as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nX: " + b"a" * 2**20)
            try:
                head = await _raw.read_head(reader)
                assert head.start == "HTTP/1.1 431 Request Header Fields Too Large"
            except (ConnectionError, asyncio.IncompleteReadError):
                # Closing with unread bytes queued makes the kernel send RST, which may
                # overtake the answer; the connection ending is what matters here.
                pass
            await _raw.read_to_eof(reader)
            writer.close()
            await _raw.check_served(port)

    _raw.run(main())
    no_errors(caplog)


def test_slowloris(caplog):
    """One byte every 0.5 s with open_timeout=1: dropped after about a second, and other
    clients are served meanwhile."""
    caplog.set_level(logging.INFO, logger="asyncws")

    async def main():
        async with _raw.serving(open_timeout=1) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            request = _raw.upgrade_request(port)
            loop = asyncio.get_running_loop()
            start = loop.time()

            async def trickle():
                for i in range(len(request)):
                    writer.write(request[i : i + 1])
                    await writer.drain()
                    await asyncio.sleep(0.5)

            dripper = asyncio.ensure_future(trickle())
            await _raw.check_served(port)  # served while the slow client dribbles
            rest = await _raw.read_to_eof(reader, 10)
            elapsed = loop.time() - start
            dripper.cancel()
            await asyncio.gather(dripper, return_exceptions=True)
            writer.close()
            assert not rest.startswith(b"HTTP/1.1 101")
            assert elapsed < 8  # a hang guard only: dropped after ~1 s, well before the request
            await _raw.check_served(port)

    _raw.run(main())
    assert any("timed out" in r.getMessage() for r in caplog.records if r.name == "asyncws")
    no_errors(caplog)


def test_thousand_silent_connections(caplog):
    """1,000 connections that never send anything: a normal client is still served, and all of
    them are dropped once open_timeout passes."""
    n = _raw.scaled(1000, 5000)
    if _raw.raise_nofile(2 * n + 200) < 2 * n + 200:
        pytest.skip(f"RLIMIT_NOFILE cannot reach {2 * n + 200}")
    caplog.set_level(logging.WARNING, logger="asyncws")

    async def main():
        async with _raw.serving(open_timeout=3, backlog=n) as port:
            sem = asyncio.Semaphore(100)

            async def idle():
                async with sem:
                    return await asyncio.open_connection("127.0.0.1", port)

            conns = await asyncio.gather(*(idle() for _ in range(n)))
            await _raw.check_served(port)
            # All of them are dropped by the open timeout.
            ended = await asyncio.gather(*(_raw.read_to_eof(r, 20) for r, _ in conns))
            assert all(not data for data in ended)
            for _, w in conns:
                w.close()
            await _raw.check_served(port)

    _raw.run(main(), timeout=60)
    no_errors(caplog)


def test_client_disconnects_mid_request(caplog):
    """Half a request then EOF, or then RST: nothing logged at ERROR, server still serving."""
    caplog.set_level(logging.INFO, logger="asyncws")

    async def main():
        async with _raw.serving() as port:
            for rst in (False, True):
                sock = socket.create_connection(("127.0.0.1", port))
                sock.sendall(_raw.upgrade_request(port)[:30])
                if rst:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                sock.close()
                await asyncio.sleep(0.05)
            await _raw.check_served(port)
            assert await _raw.wait_no_other_tasks() == []

    _raw.run(main())
    no_errors(caplog)


# -- the client against hostile servers --------------------------------------------------------


def client_error(handle, **kw):
    """Run asyncws.connect against a raw server running ``handle``; return the exception."""

    async def main():
        async with _raw.raw_server(handle) as port:
            with pytest.raises((asyncws.InvalidHandshake, asyncio.TimeoutError)) as info:
                await asyncws.connect(f"ws://127.0.0.1:{port}/", **kw)
        assert await _raw.wait_no_other_tasks() == []
        return info.value

    return _raw.run(main(), timeout=30)


def answer_with(make):
    async def handle(reader, writer):
        key = await _raw.read_request_key(reader)
        writer.write(make(key))
        await writer.drain()
        await _raw.read_to_eof(reader, 10)

    return handle


@pytest.mark.parametrize(
    "make",
    [
        lambda k: _raw.response_101(k, accept="d3Jvbmcgd3Jvbmcgd3Jvbmcgd3Jvbmc="),
        lambda k: _raw.response_101(k, accept=_raw.accept_for(k) + "x"),
        lambda k: _raw.response_101(k, omit=("Sec-WebSocket-Accept",)),
        lambda k: _raw.response_101(k, omit=("Upgrade",)),
        lambda k: _raw.response_101(k, omit=("Connection",)),
        lambda k: _raw.response_101(k)[:-2] + b"Sec-WebSocket-Extensions: x\r\n\r\n",
        lambda k: b"HTTP/1.1 hello\r\n\r\n",
        lambda k: b"\x00\x01\x02\r\n\r\n",
    ],
    ids=["wrong-accept", "accept+x", "no-accept", "no-upgrade", "no-connection", "extension",
         "bad-status", "garbage"],
)
def test_client_bad_response(make, caplog):
    caplog.set_level(logging.INFO)
    exc = client_error(answer_with(make), open_timeout=5)
    assert isinstance(exc, asyncws.InvalidHandshake)
    no_errors(caplog)


@pytest.mark.parametrize("status", [200, 302, 403, 404, 426, 500, 503])
def test_client_non_101(status, caplog):
    caplog.set_level(logging.INFO)
    exc = client_error(
        answer_with(lambda k: f"HTTP/1.1 {status} Nope\r\nContent-Length: 0\r\n\r\n".encode()),
        open_timeout=5,
    )
    assert isinstance(exc, asyncws.InvalidHandshake)
    assert exc.status == status
    no_errors(caplog)


def test_client_status_with_unicode_digit(caplog):
    """A status code of latin-1 'digits' that int() rejects: InvalidHandshake, nothing logged
    at ERROR level (found by fuzz/fuzz_handshake.py)."""
    caplog.set_level(logging.INFO)
    exc = client_error(answer_with(lambda k: b"HTTP/1.1 1\xb21 Up\r\n\r\n"), open_timeout=5)
    assert isinstance(exc, asyncws.InvalidHandshake)
    no_errors(caplog)


def test_client_response_head_never_ends(caplog):
    caplog.set_level(logging.INFO)
    sent = []

    async def handle(reader, writer):
        key = await _raw.read_request_key(reader)
        writer.write(_raw.response_101(key)[:-2])
        n = 0
        while n < 2**20:  # a megabyte of one endless header line, unless the client hangs up
            writer.write(b"X-Pad: " + b"a" * 4089 + b"\r\n")
            n += 4098
            await writer.drain()
            await asyncio.sleep(0)
        sent.append(n)

    exc = client_error(handle, open_timeout=10)
    assert isinstance(exc, asyncws.InvalidHandshake)
    assert not sent  # the client gave up long before the megabyte was sent
    no_errors(caplog)


def test_client_server_never_answers(caplog):
    caplog.set_level(logging.INFO)

    async def handle(reader, writer):
        await asyncio.sleep(30)

    exc = client_error(handle, open_timeout=0.5)
    assert isinstance(exc, asyncio.TimeoutError)
    assert isinstance(exc, TimeoutError)
    no_errors(caplog)


def test_client_server_hangs_up(caplog):
    caplog.set_level(logging.INFO)

    async def handle(reader, writer):
        await _raw.read_request_key(reader)
        writer.write(b"HTTP/1.1 101 Swi")

    exc = client_error(handle, open_timeout=5)
    assert isinstance(exc, asyncws.InvalidHandshake)
    no_errors(caplog)


# -- a bounded run of the handshake fuzz target -------------------------------------------------

fuzz_handshake = _raw.load_fuzz("fuzz_handshake")


@settings(
    max_examples=_raw.scaled(300, 20000),
    deadline=None,
    derandomize=not _raw.STRESS,
    suppress_health_check=list(HealthCheck),
)
@given(st.binary(max_size=2048))
def test_fuzz_handshake_short_run(data):
    fuzz_handshake.one_input(data)


@pytest.mark.parametrize(
    "head",
    [b"HTTP/1.1 1\xb21 Up\r\n\r\n", b"HTTP/1.1 \xb9\xb2\xb3 x\r\n\r\n", b"HTTP/1.1 +01 x\r\n\r\n"],
)
def test_parse_response_refuses_non_ascii_digits(head):
    """Regression (found by these tests, fixed in 26272fa): InvalidHandshake, not ValueError."""
    from asyncws.handshake import parse_response

    with pytest.raises(asyncws.InvalidHandshake):
        parse_response(head)
