"""The sans-I/O WebSocket connection: RFC 6455's state machine after the handshake.

This module holds ``Protocol``: bytes received go in through ``receive_data`` and come out as
whole messages (``str`` / ``bytes``) in order; what must be sent in answer (a Pong, the Close
reply, the Close that fails the connection) collects in ``outgoing``; frames to send are built by
``send_data``, ``send_ping``, ``send_pong`` and ``send_close``. It owns the closing handshake
and the rule that errors come after the messages that preceded them: a violation found behind
complete messages is held in ``pending_failure`` until the caller has handed those messages to
the application and calls ``fail_pending()``. It must not import asyncio,
touch a socket or a transport, or schedule anything: the asyncio layer in ``connection`` does.
"""

from __future__ import annotations

import codecs
from typing import Union

from ._kernels import LARGE_PAYLOAD, FrameReader, build_frame, build_header, build_message
from .deflate import DeflateError, PerMessageDeflate
from .exceptions import ConnectionClosed
from .frames import (
    CLOSE_ABNORMAL,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    CloseFrameError,
    build_close_payload,
    parse_close_payload,
)
from .options import MAX_SIZE

__all__ = ["Protocol", "Fragment", "OPEN", "CLOSING", "CLOSED", "Message", "Outgoing"]

# Connection states (section 4 and 7): OPEN until a Close is sent (CLOSING) and, once a Close
# has been both sent and received, the connection failed, or the stream ended: CLOSED.
OPEN = 1
CLOSING = 2
CLOSED = 3

# Unmasked payloads at least this large are written as a separate header and payload instead
# of being copied behind their header. Below it one write wins: at 100 KB, joining was 11-16%
# faster in ping-pong (an extra small segment and system call cost more than the copy).
# (The value lives with the kernels, whose MessagePump.send takes the one-write path below it.)

Message = Union[str, bytes]
Outgoing = Union[bytes, tuple[bytes, Union[bytes, bytearray, memoryview]]]
Data = Union[str, bytes, bytearray, memoryview]


class Fragment:
    """One piece of a message being received piece by piece (``Websocket.recv_streaming``):
    ``data`` (str for text, bytes for binary) and whether it is the ``last``."""

    __slots__ = ("data", "last")

    def __init__(self, data: Message, last: bool) -> None:
        self.data = data
        self.last = last


class Protocol:
    """One WebSocket connection's protocol state, client (masks its frames) or server."""

    __slots__ = (
        "is_client",
        "state",
        "close_code",
        "close_reason",
        "close_sent",
        "close_received",
        "failure",
        "pending_failure",
        "outgoing",
        "pongs",
        "reader",
        "deflate",
        "send_fast",
        "fragmenting",
        "_pieces_decoder",
    )

    def __init__(
        self,
        is_client: bool,
        max_size: int | None = MAX_SIZE,
        deflate: PerMessageDeflate | None = None,
    ) -> None:
        self.is_client = is_client
        self.state = OPEN
        # permessage-deflate (RFC 7692) when negotiated.
        self.deflate = deflate
        # None, or (while a fragmented message is being sent) whether it is text.
        self.fragmenting: bool | None = None
        self._update_send_fast()
        self._pieces_decoder: codecs.IncrementalDecoder | None = None
        # What ended the connection: the peer's close code, ours when we failed it, 1006 when
        # the stream ended without a Close. None while open.
        self.close_code: int | None = None
        self.close_reason = ""
        self.close_sent = False
        self.close_received = False
        # (code, reason) when this side failed the connection (section 7.1.7).
        self.failure: tuple[int, str] | None = None
        # A violation received after messages not yet consumed; see fail_pending().
        self.pending_failure: tuple[int, str] | None = None
        self.outgoing: list[bytes] = []
        self.pongs: list[bytes] = []
        # Section 5.1: a server reads masked frames, a client unmasked ones.
        self.reader = FrameReader(not is_client, max_size, deflate is not None)

    # -- receiving -----------------------------------------------------------------------------

    def _update_send_fast(self) -> None:
        """``send_fast``: whether a message may be framed directly, the asyncio layer's one
        test before its fast path. Defined here only: open, nothing to compress, no fragmented
        message on its way. Called on every change of what it depends on."""
        self.send_fast = self.state == OPEN and self.deflate is None and self.fragmenting is None

    def receive_data(self, data: bytes) -> list[Message]:
        """Feed received bytes; return the messages they complete, in order.

        This is ``reader.feed`` followed by ``process`` when the reader flags ``attention``:
        the per-message pump makes those two steps itself, so that a chunk of messages only
        costs the reader's call."""
        reader = self.reader
        items = reader.feed(data)
        if reader.attention:
            return self.process(items)
        return items  # type: ignore[return-value]  # no tuple without attention

    def process(self, items: list) -> list[Message]:  # type: ignore[type-arg]
        """Act on what ``reader.feed`` returned with ``reader.attention`` set: answer pings,
        record pongs, handle a Close, hold a violation; return the messages alone."""
        messages: list[Message] = []
        for index, item in enumerate(items):
            if type(item) is not tuple:
                messages.append(item)
                continue
            if len(item) == 3:
                # A piece of a message streamed by recv_streaming (reader.stream_next_message).
                messages.append(self._piece(*item))  # type: ignore[arg-type]
                continue
            opcode, payload = item
            if opcode <= OP_BINARY:
                # A compressed message (the reader only returns those as tuples).
                msg = self._inflate(opcode, payload)
                if msg is None:
                    # Failed: nothing after it is delivered, but a Close after it is the
                    # peer's Close reply all the same.
                    if any(type(x) is tuple and x[0] == OP_CLOSE for x in items[index + 1 :]):
                        self.close_received = True
                    break
                messages.append(msg)
            elif opcode == OP_PING:
                # Section 5.5.2: answer with a Pong carrying the same data, unless closing.
                if self.state == OPEN:
                    self.outgoing.append(build_frame(OP_PONG, payload, self.is_client))
            elif opcode == OP_PONG:
                self.pongs.append(payload)
            elif opcode == OP_CLOSE:
                self._receive_close(payload)
        reader = self.reader
        error = reader.error
        if error is not None:
            if self.state != CLOSED and self.pending_failure is None:
                self.pending_failure = error
            if reader.peer_closed:
                # After our failure, the reader read past everything up to the peer's Close.
                self.close_received = True
        return messages

    def _piece(self, opcode: int, payload: bytes, fin: bool) -> Fragment:
        if opcode == OP_TEXT:
            # The reader validated the bytes; a piece may still end inside a character.
            decoder = self._pieces_decoder
            if decoder is None:
                decoder = self._pieces_decoder = codecs.getincrementaldecoder("utf-8")()
            data: Message = decoder.decode(payload, fin)
            if fin:
                self._pieces_decoder = None
        else:
            data = payload
        return Fragment(data, fin)

    def _inflate(self, opcode: int, payload: bytes) -> Message | None:
        assert self.deflate is not None
        try:
            data = self.deflate.decompress(payload)
            return data.decode("utf-8") if opcode == OP_TEXT else data
        except DeflateError as exc:
            code, reason = exc.code, exc.reason
        except UnicodeDecodeError:
            code, reason = 1007, "invalid UTF-8 in text message"
        self.reader.fail(code, reason)
        return None

    def _receive_close(self, payload: bytes) -> None:
        try:
            code, reason = parse_close_payload(payload)
        except CloseFrameError as exc:
            self.pending_failure = (exc.code, exc.reason)
            return
        self.close_received = True
        if self.failure is None:
            self.close_code = code
            self.close_reason = reason
        if not self.close_sent:
            # Section 5.5.1: reply with a Close, echoing the status code (and reason) received.
            self.outgoing.append(build_frame(OP_CLOSE, payload, self.is_client))
            self.close_sent = True
        self.state = CLOSED
        self._update_send_fast()

    def receive_eof(self) -> None:
        """The stream ended (TCP closed or lost)."""
        if self.close_code is None:
            self.close_code = CLOSE_ABNORMAL
        self.state = CLOSED
        self._update_send_fast()

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection (section 7.1.7): send a Close with ``code`` unless one was sent."""
        if self.state == CLOSED:
            return
        self.failure = (code, reason)
        self.close_code = code
        self.close_reason = reason
        # Nothing the peer sends from now on is delivered; the reader reads past it, up to
        # the peer's Close.
        self.reader.fail(code, reason)
        if not self.close_sent:
            payload = _close_payload(code, reason)
            self.outgoing.append(build_frame(OP_CLOSE, payload, self.is_client))
            self.close_sent = True
        self.state = CLOSED
        self._update_send_fast()

    def fail_pending(self) -> None:
        """Fail the connection for the violation held in ``pending_failure``.

        Autobahn (cases 3.x, 4.x, 5.15) and common sense agree that a message that arrived
        complete before a bad frame is still the application's to read and answer; so the
        violation waits until the caller has delivered what preceded it.
        """
        if self.pending_failure is not None:
            code, reason = self.pending_failure
            self.pending_failure = None
            self.fail(code, reason)

    def data_to_send(self) -> bytes:
        """Take what ``receive_data`` or ``fail`` queued for sending."""
        out = b"".join(self.outgoing)
        self.outgoing.clear()
        return out

    # -- sending -------------------------------------------------------------------------------

    def _closed_error(self) -> ConnectionClosed:
        return ConnectionClosed(self.close_code, self.close_reason)

    def send_data(self, data: Data) -> Outgoing:
        """Frame a message: ``str`` as text, bytes-like as binary. Large unmasked payloads come
        back as ``(header, payload)`` so that they are written without a copy."""
        if self.state != OPEN:
            raise self._closed_error()
        if self.fragmenting is not None:
            raise RuntimeError("a fragmented message is being sent on this connection")
        if type(data) is not str:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"data must be str or bytes-like, not {type(data).__name__}")
            if self.deflate is not None:
                return self._compressed_frame(OP_BINARY, bytes(data))
            if not self.is_client:
                n = data.nbytes if isinstance(data, memoryview) else len(data)
                if n >= LARGE_PAYLOAD:
                    return build_header(OP_BINARY, n), data
        if self.deflate is not None and isinstance(data, str):
            return self._compressed_frame(OP_TEXT, data.encode("utf-8"))
        return build_message(data, self.is_client)

    def send_fragment(self, data: Data, first: bool, fin: bool) -> bytes:
        """Frame one piece of a fragmented message (section 5.4): the first piece decides text
        or binary, the others must be of the same kind; ``fin`` marks the last."""
        if self.state != OPEN:
            raise self._closed_error()
        is_text = isinstance(data, str)
        if first:
            if self.fragmenting is not None:
                raise RuntimeError("a fragmented message is being sent on this connection")
            opcode = OP_TEXT if is_text else OP_BINARY
            self.fragmenting = is_text
            self._update_send_fast()
        else:
            if is_text is not self.fragmenting:
                raise TypeError("the pieces of a fragmented message must all be str or bytes")
            opcode = OP_CONT
        if isinstance(data, str):
            payload = data.encode("utf-8")
        elif isinstance(data, (bytes, bytearray, memoryview)):
            payload = bytes(data)
        else:
            raise TypeError(f"a fragment must be str or bytes-like, not {type(data).__name__}")
        if self.deflate is not None:
            payload = self.deflate.compress(payload, final=fin)
            if first:
                opcode |= 0x40  # RSV1 on the first frame only (RFC 7692 section 6.1)
        if fin:
            self.fragmenting = None
            self._update_send_fast()
        return build_frame(opcode, payload, self.is_client, fin)

    def _compressed_frame(self, opcode: int, data: bytes) -> bytes:
        assert self.deflate is not None
        # RFC 7692 section 6: RSV1 (0x40 in the first header byte) marks a compressed message.
        return build_frame(opcode | 0x40, self.deflate.compress(data), self.is_client)

    def send_ping(self, data: bytes = b"") -> bytes:
        if self.state != OPEN:
            raise self._closed_error()
        if len(data) > 125:
            raise ValueError("a ping payload is at most 125 bytes")
        return build_frame(OP_PING, data, self.is_client)

    def send_pong(self, data: bytes = b"") -> bytes:
        if self.state != OPEN:
            raise self._closed_error()
        if len(data) > 125:
            raise ValueError("a pong payload is at most 125 bytes")
        return build_frame(OP_PONG, data, self.is_client)

    def send_close(self, code: int = 1000, reason: str = "") -> bytes:
        """Start the closing handshake (section 7.1.2); returns the Close frame to send."""
        payload = build_close_payload(code, reason)  # ValueError for an unsendable code
        if self.state != OPEN:
            raise self._closed_error()
        self.close_sent = True
        self.state = CLOSING
        self._update_send_fast()
        return build_frame(OP_CLOSE, payload, self.is_client)


def _close_payload(code: int, reason: str) -> bytes:
    """A Close payload for a failure, with the reason cut to fit 125 bytes on a UTF-8 boundary."""
    data = reason.encode("utf-8")[:123].decode("utf-8", "ignore")
    return build_close_payload(code, data)
