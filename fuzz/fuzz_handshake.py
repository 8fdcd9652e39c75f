"""Fuzz target: the opening handshake parsers (``asyncws.handshake``), server and client side.

``one_input(data)`` makes a request or a response head (the raw bytes, or a valid template
mutated by choices drawn from ``data``), feeds it to ``HeadReader`` in pieces, then parses and
checks it, and asserts that:

* only ``HandshakeError`` (server side) / ``InvalidHandshake`` (client side) ever escape, with a
  status the server may answer (400, 403, 405, 414, 426, 431, 505);
* the refusal can always be built into a response (``build_error_response``);
* ``HeadReader`` never holds more than ``MAX_HEAD`` bytes without raising;
* an accepted request yields a 28-character Sec-WebSocket-Accept, and a response built for it
  passes the client's ``check_response``.

Run: ``python fuzz/fuzz_handshake.py [atheris/libFuzzer options]`` (see fuzz/README.md).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import Consumer  # noqa: E402

from asyncws.exceptions import InvalidHandshake  # noqa: E402
from asyncws.handshake import (  # noqa: E402
    MAX_HEAD,
    HandshakeError,
    HeadReader,
    build_error_response,
    build_response,
    check_request,
    check_response,
    parse_request,
    parse_response,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
SERVER_STATUSES = {400, 403, 405, 414, 426, 431, 505}

REQUEST = [
    b"GET /chat?x=1 HTTP/1.1",
    b"Host: server.example.com",
    b"Upgrade: websocket",
    b"Connection: Upgrade",
    b"Sec-WebSocket-Key: " + KEY.encode(),
    b"Sec-WebSocket-Version: 13",
]
RESPONSE = [
    b"HTTP/1.1 101 Switching Protocols",
    b"Upgrade: websocket",
    b"Connection: Upgrade",
    b"Sec-WebSocket-Accept: " + ACCEPT.encode(),
]
TOKENS = [b"GET", b"POST", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b" ", b":", b"\r\n", b"\n",
          b"\r", b"\x00", b"\t", b",", b"websocket", b"Upgrade", b"upgrade", b"13", b"8",
          b"Sec-WebSocket-Key", b"Sec-WebSocket-Version", b"Host", b"Connection", b"101", b"200",
          b"\xb2", b"\xff", b"\xe9", b"*", b"/", b"http://x/", KEY.encode(), ACCEPT.encode(),
          b"a" * 100, b"a" * 9000, b"Sec-WebSocket-Extensions: x", b"Sec-WebSocket-Protocol: p"]


def make_head(c: Consumer, template: list) -> bytes:
    lines = list(template)
    for _ in range(c.int(6)):
        op = c.int(5)
        i = c.int(len(lines) + 1)
        if op == 0 and lines:  # drop a line
            del lines[min(i, len(lines) - 1)]
        elif op == 1:  # insert a line
            lines.insert(i, c.choice(TOKENS) + c.choice(TOKENS) + c.choice(TOKENS))
        elif op == 2 and lines:  # splice a token into a line
            j = min(i, len(lines) - 1)
            line = lines[j]
            k = c.int(len(line) + 1)
            lines[j] = line[:k] + c.choice(TOKENS) + line[k + c.int(4) :]
        elif op == 3:  # many repeated fields
            lines += [b"X-R: y"] * c.int(300)
        elif op == 4 and lines:  # duplicate a line
            lines.insert(i, lines[min(i, len(lines) - 1)])
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    if c.byte() % 8 == 0:
        head = head[: c.int(len(head) + 1)]
    return head


def feed_reader(c: Consumer, head: bytes):
    """Feed ``head`` to a HeadReader in pieces; the result or None; HandshakeError escapes."""
    reader = HeadReader()
    pos = total = 0
    while pos < len(head):
        n = c.int(4096) + 1 if c.bool() else len(head)
        piece = head[pos : pos + n]
        pos += len(piece)
        total += len(piece)
        got = reader.feed(piece)
        if got is not None:
            return got
        assert total <= MAX_HEAD, "HeadReader kept more than MAX_HEAD bytes without refusing"
    return None


def server_side(c: Consumer, head: bytes) -> None:
    try:
        got = feed_reader(c, head)
        if got is None:
            return
        request = parse_request(got[0])
        accept = check_request(request)
    except HandshakeError as exc:
        assert exc.status in SERVER_STATUSES, exc
        build_error_response(exc.status, exc.message, exc.headers)
        return
    assert len(accept) == 28
    # What the server would answer passes the client's checks.
    check_response(parse_response(build_response(accept)), request.headers["Sec-WebSocket-Key"])


def client_side(c: Consumer, head: bytes) -> None:
    try:
        got = feed_reader(c, head)
        if got is None:
            return
        response = parse_response(got[0])
        assert 0 <= response.status <= 999
        check_response(response, KEY)
    except (HandshakeError, InvalidHandshake):
        return


def one_input(data: bytes) -> None:
    c = Consumer(data)
    side = c.int(4)
    if side == 0:
        server_side(c, c.rest())
    elif side == 1:
        client_side(c, c.rest())
    elif side == 2:
        server_side(c, make_head(c, REQUEST))
    else:
        client_side(c, make_head(c, RESPONSE))


def main() -> None:
    try:
        import atheris
    except ImportError:
        atheris = None
    if atheris is not None:
        atheris.instrument_all()
        atheris.Setup(sys.argv, one_input)
        atheris.Fuzz()
        return
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
