"""The opening handshake (RFC 6455 section 4), sans I/O: parsing, validation, building."""

from __future__ import annotations

import base64

import pytest

from asyncws.exceptions import InvalidHandshake
from asyncws.handshake import (
    MAX_HEAD,
    HandshakeError,
    Headers,
    HeadReader,
    accept_key,
    build_error_response,
    build_request,
    build_response,
    check_request,
    check_response,
    generate_key,
    parse_request,
    parse_response,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def test_accept_key_matches_rfc_example() -> None:
    # Section 1.3's worked example.
    assert accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_generate_key_is_16_random_bytes() -> None:
    keys = {generate_key() for _ in range(10)}
    assert len(keys) == 10
    assert all(len(base64.b64decode(k)) == 16 for k in keys)


def request(lines: str) -> bytes:
    return lines.replace("\n", "\r\n").encode() + b"\r\n"


GOOD = (
    "GET /chat?x=1 HTTP/1.1\nHost: server.example.com\nUpgrade: WebSocket\n"
    "Connection: keep-alive, Upgrade\nSec-WebSocket-Key: " + KEY + "\nSec-WebSocket-Version: 13\n"
)


def test_valid_request_round_trip() -> None:
    req = parse_request(request(GOOD))
    assert (req.method, req.path, req.version) == ("GET", "/chat?x=1", "HTTP/1.1")
    assert req.headers["host"] == "server.example.com"
    assert check_request(req) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_build_request_is_accepted_by_our_own_check() -> None:
    key = generate_key()
    raw = build_request("example.com:8080", "/p?q", key, {"X-Extra": "1"})
    req = parse_request(raw)
    assert req.headers["X-Extra"] == "1"
    accept = check_request(req)
    response = parse_response(build_response(accept))
    check_response(response, key)


@pytest.mark.parametrize(
    "mutate,status",
    [
        (lambda s: s.replace("GET", "POST"), 405),
        (lambda s: s.replace("HTTP/1.1", "HTTP/1.0"), 400),
        (lambda s: s.replace("Host: server.example.com\n", ""), 400),
        (lambda s: s.replace("Upgrade: WebSocket\n", ""), 426),
        (lambda s: s.replace("keep-alive, Upgrade", "keep-alive"), 400),
        (lambda s: s.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"), 426),
        (lambda s: s.replace("Sec-WebSocket-Key: " + KEY + "\n", ""), 400),
        (lambda s: s.replace(KEY, "not base64!"), 400),
        (lambda s: s.replace(KEY, base64.b64encode(b"short").decode()), 400),
    ],
)
def test_invalid_requests(mutate, status: int) -> None:
    with pytest.raises(HandshakeError) as info:
        check_request(parse_request(request(mutate(GOOD))))
    assert info.value.status == status
    if status == 426:
        assert ("Sec-WebSocket-Version", "13") in info.value.headers


@pytest.mark.parametrize(
    "raw", [b"garbage\r\n\r\n", b"GET /\r\n\r\n", b"GET / HTTP/1.1\r\nno colon\r\n\r\n"]
)
def test_malformed_heads(raw: bytes) -> None:
    with pytest.raises(HandshakeError) as info:
        parse_request(raw)
    assert info.value.status == 400


def test_head_reader_splits_head_and_rest() -> None:
    reader = HeadReader()
    raw = request(GOOD) + b"\x81\x80rest"
    assert reader.feed(raw[:10]) is None
    split = len(request(GOOD)) - 2  # the blank line's CRLF arrives in the next piece
    assert reader.feed(raw[10:split]) is None
    head, rest = reader.feed(raw[split:])  # type: ignore[misc]
    assert head == request(GOOD) and rest == b"\x81\x80rest"


def test_head_reader_limits() -> None:
    reader = HeadReader()
    with pytest.raises(HandshakeError) as info:
        for _ in range(100):
            reader.feed(b"X-Long: " + b"a" * 1000 + b"\r\n")
    assert info.value.status == 431
    # The head was refused as soon as it passed the limit, not after buffering more.
    assert len(reader._buf) <= MAX_HEAD + 1100
    reader = HeadReader()
    with pytest.raises(HandshakeError) as info:
        reader.feed(b"GET /" + b"a" * (MAX_HEAD + 10))
    assert info.value.status == 414
    many = "GET / HTTP/1.1\r\n" + "".join(f"X-{i}: v\r\n" for i in range(200)) + "\r\n"
    with pytest.raises(HandshakeError) as info:
        parse_request(many.encode())
    assert info.value.status == 431


def test_headers_case_insensitive_and_tokens() -> None:
    h = Headers([("Connection", "keep-alive, Upgrade"), ("connection", "x"), ("A", "1")])
    assert h["CONNECTION"] == "keep-alive, Upgrade"
    assert h.get_all("Connection") == ["keep-alive, Upgrade", "x"]
    assert h.tokens("connection") == ["keep-alive", "upgrade", "x"]
    assert "a" in h and "b" not in h and len(h) == 3
    with pytest.raises(KeyError):
        h["missing"]


def response(lines: str) -> bytes:
    return lines.replace("\n", "\r\n").encode() + b"\r\n"


def test_client_checks_response() -> None:
    key = generate_key()
    good = (
        "HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\nConnection: Upgrade\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\n"
    )
    check_response(parse_response(response(good)), key)
    bad = [
        (good.replace("101 Switching Protocols", "403 Forbidden"), 403),
        (good.replace(accept_key(key), accept_key(generate_key())), 101),
        (good.replace("Upgrade: websocket\n", ""), 101),
        (good.replace("Connection: Upgrade\n", ""), 101),
        (good + "Sec-WebSocket-Extensions: permessage-deflate\n", 101),
        (good + "Sec-WebSocket-Protocol: chat\n", 101),
    ]
    for text, status in bad:
        with pytest.raises(InvalidHandshake) as info:
            check_response(parse_response(response(text)), key)
        assert info.value.status == status
    with pytest.raises(InvalidHandshake):
        parse_response(b"SSH-2.0-OpenSSH\r\n\r\n")


def test_error_response_is_well_formed() -> None:
    raw = build_error_response(426, "nope", [("Sec-WebSocket-Version", "13")])
    head, _, body = raw.partition(b"\r\n\r\n")
    parsed = parse_response(head + b"\r\n\r\n")
    assert parsed.status == 426 and parsed.reason == "Upgrade Required"
    assert parsed.headers["Sec-WebSocket-Version"] == "13"
    assert int(parsed.headers["Content-Length"]) == len(body) and body == b"nope\n"


def test_headers_accept_headers_and_reason_phrases_are_standard() -> None:
    original = Headers([("A", "1"), ("a", "2")])
    assert Headers(original).items() == original.items()
    raw = build_error_response(401, "who?", original)
    assert raw.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    assert build_error_response(599, "odd").startswith(b"HTTP/1.1 599 Error\r\n")
