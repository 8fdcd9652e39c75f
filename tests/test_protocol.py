"""The sans-I/O connection (``asyncws.protocol.Protocol``): ping/pong, the closing handshake,
failures and their ordering, framing of what is sent. No sockets, no event loop."""

from __future__ import annotations

import pytest

from asyncws import ConnectionClosed
from asyncws._kernels import FrameReader, apply_mask, build_frame
from asyncws.protocol import CLOSED, CLOSING, OPEN, Protocol


def from_client(op: int, payload: bytes = b"", fin: bool = True) -> bytes:
    return build_frame(op, payload, True, fin)


def decode_server_frames(data: bytes) -> list:
    """Parse what a server sent, as a client would."""
    return FrameReader(False, None).feed(data)


def test_ping_is_answered_with_pong() -> None:
    p = Protocol(is_client=False)
    assert p.receive_data(from_client(9, b"abc") + from_client(1, b"hi")) == ["hi"]
    assert decode_server_frames(p.data_to_send()) == [(10, b"abc")]
    assert p.outgoing == []


def test_pong_is_recorded_for_ping_waiters() -> None:
    p = Protocol(is_client=False)
    assert p.receive_data(from_client(10, b"x")) == []
    assert p.pongs == [b"x"] and p.outgoing == []


def test_peer_initiated_close_is_echoed() -> None:
    p = Protocol(is_client=False)
    msgs = p.receive_data(from_client(2, b"last") + from_client(8, b"\x0f\xa0bye"))
    assert msgs == [b"last"]
    assert p.state == CLOSED and p.close_code == 4000 and p.close_reason == "bye"
    assert decode_server_frames(p.data_to_send()) == [(8, b"\x0f\xa0bye")]
    with pytest.raises(ConnectionClosed) as info:
        p.send_data("too late")
    assert info.value.code == 4000


def test_close_without_status_is_answered_empty() -> None:
    p = Protocol(is_client=False)
    p.receive_data(from_client(8))
    assert p.close_code == 1005
    assert decode_server_frames(p.data_to_send()) == [(8, b"")]


def test_local_close_then_peer_reply() -> None:
    p = Protocol(is_client=True)
    frame = p.send_close(1001, "going")
    assert p.state == CLOSING
    head = frame[:2]
    assert head == bytes([0x88, 0x80 | 7])
    assert apply_mask(frame[6:], frame[2:6]) == b"\x03\xe9going"
    with pytest.raises(ConnectionClosed):
        p.send_data(b"x")
    p.receive_data(build_frame(8, b"\x03\xe9", False))
    assert p.state == CLOSED and p.close_code == 1001
    assert p.outgoing == []  # the Close was already sent: no second one


def test_messages_before_a_protocol_error_are_delivered_first() -> None:
    p = Protocol(is_client=False)
    bad = b"\x83\x80\x00\x00\x00\x00"
    msgs = p.receive_data(from_client(1, b"one") + from_client(2, b"two") + bad)
    assert msgs == ["one", b"two"]
    # The violation waits until the messages before it have been handed over...
    assert p.pending_failure is not None and p.pending_failure[0] == 1002
    assert p.state == OPEN and p.outgoing == []
    p.send_data("an answer to 'one' may still go out")
    # ...and fails the connection when the caller says so.
    p.fail_pending()
    assert p.state == CLOSED and p.failure is not None and p.close_code == 1002
    [(op, payload)] = decode_server_frames(p.data_to_send())
    assert op == 8 and payload[:2] == b"\x03\xea"
    assert p.receive_data(from_client(1, b"ignored")) == []
    assert p.outgoing == []


@pytest.mark.parametrize(
    "payload,code", [(b"\x03", 1002), (b"\x03\xee", 1002), (b"\x03\xe8\xff", 1007)]
)
def test_bad_close_payloads_fail_the_connection(payload: bytes, code: int) -> None:
    p = Protocol(is_client=False)
    p.receive_data(from_client(8, payload))
    assert p.pending_failure is not None and p.pending_failure[0] == code
    p.fail_pending()
    assert p.close_code == code and p.failure is not None
    [(op, sent)] = decode_server_frames(p.data_to_send())
    assert op == 8 and int.from_bytes(sent[:2], "big") == code


def test_close_mid_fragmented_message_is_honoured() -> None:
    p = Protocol(is_client=False)
    p.receive_data(from_client(1, b"part", fin=False) + from_client(8, b"\x03\xe8"))
    assert p.state == CLOSED and p.close_code == 1000 and p.failure is None


def test_eof_without_close_is_1006() -> None:
    p = Protocol(is_client=False)
    p.receive_eof()
    assert p.state == CLOSED and p.close_code == 1006


def test_send_data_framing() -> None:
    server = Protocol(is_client=False)
    assert server.send_data("é") == b"\x81\x02\xc3\xa9"
    assert server.send_data(bytearray(b"ab")) == b"\x82\x02ab"
    big = b"x" * 300000
    header, payload = server.send_data(big)
    assert payload is big and header == b"\x82\x7f" + (300000).to_bytes(8, "big")
    with pytest.raises(TypeError):
        server.send_data(12)  # type: ignore[arg-type]
    client = Protocol(is_client=True)
    frame = client.send_data(big)
    assert isinstance(frame, bytes) and frame[1] == 0xFF  # masked, 64-bit length


def test_ping_pong_limits_and_close_codes() -> None:
    p = Protocol(is_client=False)
    assert p.send_ping(b"x") == b"\x89\x01x"
    assert p.send_pong(b"y") == b"\x8a\x01y"
    with pytest.raises(ValueError):
        p.send_ping(b"x" * 126)
    with pytest.raises(ValueError):
        p.send_close(1006)
    assert p.state == OPEN


def test_failure_reason_is_cut_to_fit_a_control_frame() -> None:
    p = Protocol(is_client=False)
    p.fail(1011, "é" * 200)
    [(op, payload)] = decode_server_frames(p.data_to_send())
    assert op == 8 and len(payload) <= 125
    payload[2:].decode("utf-8")  # still valid UTF-8 after the cut
