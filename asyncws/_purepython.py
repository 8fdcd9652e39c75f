"""The framing kernels in pure Python: the fallback twin of ``_speedups.pyx``.

This module holds ``apply_mask``, ``apply_mask_inplace``, ``Utf8Validator``, ``FrameReader``,
``build_frame``, ``build_header`` and ``MessagePump`` (the per-message path of a connection) with
exactly the names, signatures and behaviour of the Cython extension, so that either can serve
``_kernels``. It must not import asyncio (``MessagePump`` only calls the loop, transport and
protocol objects it is given), know about handshakes, or be imported by anything but
``_kernels`` and the tests: the choice of backend is made in one place. Its code is the readable
reference of the framing rules; the Cython module mirrors it branch for branch.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Coroutine, Generator
from threading import get_ident
from typing import Any, Union

__all__ = [
    "apply_mask",
    "apply_mask_inplace",
    "Utf8Validator",
    "FrameReader",
    "build_frame",
    "build_header",
    "build_message",
    "MessagePump",
    "Sent",
    "Receiving",
    "DIRECT_READ_MIN",
    "LARGE_PAYLOAD",
    "PAUSE_QUEUE",
]

Buffer = Union[bytes, bytearray, memoryview]
Item = Union[str, bytes, tuple[int, bytes], tuple[int, bytes, bool]]

# A single-frame message up to this size gets its final buffer when its header arrives (the
# extension allocates it; see direct_buffer).
PREALLOCATE_MAX = 16 * 1024 * 1024

# Largest "no limit" size: a frame length is at most 2**63 - 1 (section 5.2).
_NO_LIMIT = (1 << 63) - 1


def apply_mask(data: Buffer, mask: bytes) -> bytes:
    """Return ``data`` XORed with the repeated 4-byte ``mask`` (RFC 6455 section 5.3)."""
    if len(mask) != 4:
        raise ValueError("mask must be 4 bytes")
    n = len(data)
    if n == 0:
        return b""
    if n < 512:
        # One big-integer XOR runs in C over the whole payload: far faster than a byte loop,
        # and the quickest way for small payloads.
        key = (bytes(mask) * ((n >> 2) + 1))[:n]
        value = int.from_bytes(data, "little") ^ int.from_bytes(key, "little")
        return value.to_bytes(n, "little")
    # Larger: each of the four byte lanes through a 256-byte XOR table (bytes.translate), which
    # was 2.9x faster than the integer XOR at 1 MiB here (big-integer conversion is not linear).
    out = bytearray(data)
    for lane in range(4):
        out[lane::4] = out[lane::4].translate(_XOR_TABLES[mask[lane]])
    return bytes(out)


# _XOR_TABLES[k][b] == b ^ k: bytes.translate tables for apply_mask.
_XOR_TABLES = [bytes(b ^ k for b in range(256)) for k in range(256)]


def apply_mask_inplace(buf: bytearray | memoryview, mask: bytes, offset: int = 0) -> None:
    """XOR the writable ``buf`` with ``mask`` in place, as if it started ``offset`` bytes into a
    masked payload (so that a payload arriving in pieces can be unmasked piece by piece)."""
    if len(mask) != 4:
        raise ValueError("mask must be 4 bytes")
    if len(buf) == 0:
        return
    phase = offset & 3
    key = bytes(mask[phase:]) + bytes(mask[:phase])
    buf[:] = apply_mask(buf, key)


class Utf8Validator:
    """Incremental UTF-8 validation: feed pieces with ``validate``; state carries across them.

    ``validate`` returns False as soon as a piece holds a byte that cannot continue valid UTF-8
    (RFC 3629), even when the sequence it belongs to is not finished yet; ``complete`` tells
    whether everything fed so far ends on a character boundary.
    """

    __slots__ = ("_decoder", "_failed")

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._failed = False

    def validate(self, data: Buffer) -> bool:
        if self._failed:
            return False
        try:
            # CPython's stateful decoder rejects an impossible byte at once and keeps only a
            # truncated sequence pending, which is the fail-fast rule we need...
            self._decoder.decode(data, False)
        except UnicodeDecodeError:
            self._failed = True
            return False
        # ...with one exception: it keeps ED A0..BF pending although only an encoded
        # surrogate (never valid, RFC 3629 section 3) can follow.
        pending = self._decoder.getstate()[0]
        if len(pending) >= 2 and pending[0] == 0xED and pending[1] > 0x9F:
            self._failed = True
            return False
        return True

    @property
    def complete(self) -> bool:
        return not self._failed and not self._decoder.getstate()[0]

    def reset(self) -> None:
        self._decoder.reset()
        self._failed = False


class FrameReader:
    """Parse a stream of WebSocket frames (RFC 6455 section 5) into whole messages.

    ``feed(data)`` consumes any number of bytes and returns, in order, every message and control
    frame they complete: a text message as ``str``, a binary message as ``bytes``, a control frame
    as a tuple ``(opcode, payload)``. Fragments are reassembled and unmasked, text is validated as
    it arrives. On a protocol violation the items before it are returned, ``error`` is set to
    ``(close_code, reason)`` and nothing more is parsed; after a Close frame nothing more is parsed
    either (section 5.5.1). ``attention`` tells whether the last ``feed`` returned a tuple or
    stopped reading (Close or error): whether its result needs more than delivering messages.

    With ``compressed`` (permessage-deflate negotiated, RFC 7692), RSV1 may mark the first frame
    of a data message; such a message comes back, still compressed and unvalidated, as a tuple
    ``(OP_TEXT or OP_BINARY, payload)`` for the caller to inflate.
    """

    def __init__(
        self, expect_masked: bool, max_size: int | None = None, compressed: bool = False
    ) -> None:
        self._expect_masked = bool(expect_masked)
        self._rsv1_ok = bool(compressed)
        self._max_size = _NO_LIMIT if max_size is None else int(max_size)
        self.error: tuple[int, str] | None = None
        self.closed = False
        self.attention = False
        self._pending = b""  # the start of a header split across two feeds
        self._in_payload = False
        # The frame being read when its payload spans feeds.
        self._opcode = 0
        self._fin = False
        self._mask: bytes | None = None
        self._remaining = 0
        self._offset = 0
        self._control = bytearray()
        # The message being assembled.
        self._msg_opcode = 0  # 0: none, OP_TEXT or OP_BINARY
        self._msg_compressed = False
        self._msg_single = False  # the message in progress is a single frame
        self._msg = bytearray()
        # stream_next_message(): the next fragmented message comes out piece by piece;
        # _streamed counts the bytes of it already handed out (max_size still applies).
        self._stream = False
        self._streamed = 0
        self._scratch: bytearray | None = None  # what direct_buffer() handed out
        self._utf8 = Utf8Validator()

    @property
    def max_size(self) -> int:
        return self._max_size

    def stream_next_message(self) -> list[Item]:
        """Hand out the next message, if it is fragmented, frame by frame: each data frame of
        it as a tuple ``(OP_TEXT or OP_BINARY, payload, fin)`` (text validated as usual, but the
        payload may end inside a UTF-8 sequence), instead of reassembled. A message that is one
        frame, or compressed, still comes whole. Applies to one message. Returns, as such a
        piece, what a fragmented message in progress has already buffered (else [])."""
        self._stream = True
        if (
            self.closed
            or not self._msg_opcode
            or self._msg_compressed
            or self._msg_single  # one frame: it comes whole
            or not self._msg
        ):
            return []
        return [(self._msg_opcode, self._take_buffered(), False)]

    def _take_buffered(self) -> bytes:
        """What the message being streamed has buffered, handed out (it stops counting toward
        the buffer, not toward max_size)."""
        piece = bytes(self._msg)
        self._msg = bytearray()
        self._streamed += len(piece)
        return piece

    @property
    def _validating(self) -> bool:
        return self._msg_opcode == 0x1 and not self._msg_compressed

    def fail(self, code: int, reason: str) -> None:
        """Stop reading: record ``(code, reason)`` as the error, as a violation would."""
        self.error = (code, reason)
        self.closed = True
        self.attention = True
        self._msg = bytearray()

    def direct_buffer(self, minimum: int) -> memoryview | None:
        """A writable view onto the rest of the payload of the message being received, when it
        is a data frame whose final buffer is already allocated (a whole message of known size)
        and at least ``minimum`` bytes of it are still to come; else None. Bytes received into
        the start of the view are then passed to ``direct_received(nbytes)`` instead of
        ``feed``, so that a large payload goes from the socket to the message without a copy.
        The view is valid only until the next call on this reader."""
        if (
            self.closed
            or not self._in_payload
            or self._opcode not in (0x1, 0x2)
            or not self._fin
            or self._offset + self._remaining > PREALLOCATE_MAX
            or self._remaining < minimum
        ):
            return None
        # Pure Python cannot receive into the message itself: a scratch buffer keeps the same
        # interface and the same branches, at the cost of the copy the extension saves. It is
        # kept for the rest of the payload (asking again allocates nothing) and dropped at its
        # end.
        want = min(self._remaining, 262144)
        if self._scratch is None or len(self._scratch) < want:
            self._scratch = bytearray(want)
        return memoryview(self._scratch)[:want]

    def direct_received(self, nbytes: int) -> list[Item]:
        """Account for ``nbytes`` received into the view ``direct_buffer`` returned (unmask
        and validate them in place) and return the items that completes, as ``feed`` does."""
        scratch = self._scratch
        if self.closed or not self._in_payload or scratch is None:
            raise RuntimeError("direct_received() without a direct_buffer() to fill")
        if nbytes <= 0 or nbytes > min(self._remaining, len(scratch)):
            raise ValueError("direct_received(): nbytes out of range")
        out = self.feed(scratch, nbytes)
        if self.closed or not self._in_payload:
            self._scratch = None
        return out

    def feed(self, data: Buffer, nbytes: int = -1) -> list[Item]:
        """Parse ``data`` (its first ``nbytes`` bytes when given: a reusable read buffer needs
        no slicing) and return the items it completes. Nothing of ``data`` is kept."""
        out: list[Item] = []
        self.attention = False
        if self.closed:
            return out
        if nbytes >= 0:
            data = memoryview(data)[:nbytes]
        if self._pending:
            data = self._pending + bytes(data)
            self._pending = b""
        n = len(data)
        pos = 0
        while True:
            if self._in_payload:
                if self._remaining:
                    if pos >= n:
                        break
                    take = min(self._remaining, n - pos)
                    chunk = data[pos : pos + take]
                    pos += take
                    if self._mask is not None:
                        chunk = apply_mask(chunk, self._rotated_mask())
                    self._offset += take
                    self._remaining -= take
                    if self._opcode >= 0x8:
                        self._control += chunk
                    else:
                        self._msg += chunk
                        if self._validating and not self._utf8.validate(chunk):
                            self.fail(1007, "invalid UTF-8 in text message")
                            return out
                if self._remaining:
                    break
                self._in_payload = False
                if not self._end_frame(out):
                    return out
                continue
            if pos >= n:
                break
            # Section 5.2: the base header is 2 bytes, then 0, 2 or 8 length bytes, then the
            # 4-byte masking key when the MASK bit is set.
            if n - pos < 2:
                self._pending = bytes(data[pos:])
                break
            b0 = data[pos]
            b1 = data[pos + 1]
            size = b1 & 0x7F
            masked = b1 & 0x80
            hlen = 2 + (2 if size == 126 else 8 if size == 127 else 0) + (4 if masked else 0)
            if n - pos < hlen:
                self._pending = bytes(data[pos:])
                break
            fin = b0 & 0x80
            opcode = b0 & 0x0F
            compressed = False
            if b0 & 0x70:
                # Section 5.2: RSV1-3 MUST be 0 unless an extension defines them; RFC 7692
                # section 6 defines RSV1 on the first frame of a data message.
                if b0 & 0x30 or not self._rsv1_ok or opcode == 0x0 or opcode >= 0x8:
                    self.fail(1002, "reserved bits set")
                    return out
                compressed = True
            if opcode >= 0x8:
                if opcode > 0xA:
                    self.fail(1002, f"reserved opcode {opcode}")
                    return out
                # Section 5.5: control frames MUST NOT be fragmented and carry <= 125 bytes.
                if not fin:
                    self.fail(1002, "fragmented control frame")
                    return out
                if size > 125:
                    self.fail(1002, "control frame payload over 125 bytes")
                    return out
            elif opcode == 0x0:
                # Section 5.4: a continuation needs a message in progress.
                if self._msg_opcode == 0:
                    self.fail(1002, "continuation frame without a message to continue")
                    return out
            elif opcode <= 0x2:
                if self._msg_opcode != 0:
                    self.fail(1002, "new data frame before the fragmented message ended")
                    return out
            else:
                self.fail(1002, f"reserved opcode {opcode}")
                return out
            # Section 5.1: clients MUST mask, servers MUST NOT.
            if bool(masked) != self._expect_masked:
                self.fail(1002, "unmasked frame" if self._expect_masked else "masked frame")
                return out
            p = pos + 2
            if size == 126:
                size = (data[p] << 8) | data[p + 1]
                p += 2
            elif size == 127:
                size = int.from_bytes(data[p : p + 8], "big")
                p += 8
                if size >> 63:
                    # Section 5.2: the most significant bit MUST be 0.
                    self.fail(1002, "frame length with the most significant bit set")
                    return out
            if opcode < 0x8 and size > self._max_size - len(self._msg) - self._streamed:
                self.fail(1009, f"message larger than max_size ({self._max_size} bytes)")
                return out
            mask = bytes(data[p : p + 4]) if masked else None
            pos = p + (4 if masked else 0)
            if fin and opcode != 0x0 and n - pos >= size:
                # Fast path: a whole frame in this chunk, not part of a fragmented message.
                payload = bytes(data[pos : pos + size])
                pos += size
                if mask is not None:
                    payload = apply_mask(payload, mask)
                if compressed:
                    self.attention = True
                    out.append((opcode, payload))
                elif opcode == 0x1:
                    try:
                        out.append(payload.decode("utf-8"))
                    except UnicodeDecodeError:
                        self.fail(1007, "invalid UTF-8 in text message")
                        return out
                elif opcode == 0x2:
                    out.append(payload)
                else:
                    self.attention = True
                    out.append((opcode, payload))
                    if opcode == 0x8:
                        self.closed = True
                        return out
                if opcode < 0x8:
                    self._stream = False  # the next message came whole
                continue
            # Slow path: the payload arrives over several feeds, or belongs to a fragmented
            # message; unmask and validate each piece as it comes.
            self._opcode = opcode
            self._fin = bool(fin)
            self._mask = mask
            self._remaining = size
            self._offset = 0
            self._in_payload = True
            if opcode >= 0x8:
                self._control = bytearray()
            elif opcode != 0x0:
                self._msg_opcode = opcode
                self._msg_compressed = compressed
                self._msg_single = bool(fin)
                self._msg = bytearray()
                self._streamed = 0
                self._utf8.reset()
        return out

    def _rotated_mask(self) -> bytes:
        mask = self._mask
        assert mask is not None
        phase = self._offset & 3
        return mask[phase:] + mask[:phase]

    def _end_frame(self, out: list[Item]) -> bool:
        """Finish the frame whose payload just completed; False once nothing more may be read."""
        opcode = self._opcode
        if opcode >= 0x8:
            self.attention = True
            out.append((opcode, bytes(self._control)))
            if opcode == 0x8:
                self.closed = True
                return False
            return True
        if self._stream and not self._msg_compressed and (self._streamed or not self._fin):
            return self._end_piece(out)
        if not self._fin:
            return True
        self._stream = False
        msg = bytes(self._msg)
        self._msg = bytearray()
        if self._msg_compressed:
            self.attention = True
            out.append((self._msg_opcode, msg))
        elif self._msg_opcode == 0x1:
            if not self._utf8.complete:
                self.fail(1007, "text message ends inside a UTF-8 sequence")
                return False
            out.append(msg.decode("utf-8"))
        else:
            out.append(msg)
        self._msg_opcode = 0
        return True

    def _end_piece(self, out: list[Item]) -> bool:
        """Hand out the data frame just read as one piece of a streamed message."""
        piece = self._take_buffered()
        fin = self._fin
        if fin and self._validating and not self._utf8.complete:
            self.fail(1007, "text message ends inside a UTF-8 sequence")
            return False
        self.attention = True
        out.append((self._msg_opcode, piece, fin))
        if fin:
            self._stream = False
            self._msg_opcode = 0
        return True


class _MaskKeys:
    """Masking keys from the OS's CSPRNG (section 10.3 wants them unpredictable), drawn 1 KiB at a
    time so that a frame costs a ``list.pop``, not a system call. ``list.pop`` is atomic with or
    without the GIL, so two threads never take the same key; a thread that finds the list empty
    installs a fresh one (a racing thread may install another: no key is handed out twice)."""

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: list[bytes] = []

    def next(self) -> bytes:
        try:
            return self._keys.pop()
        except IndexError:
            pool = os.urandom(1024)
            fresh = [pool[i : i + 4] for i in range(0, 1024, 4)]
            key = fresh.pop()
            self._keys = fresh
            return key

    def forget(self) -> None:
        # A forked child must not reuse the keys its parent will also use.
        self._keys = []


_mask_keys = _MaskKeys()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_mask_keys.forget)


def build_header(opcode: int, length: int, fin: bool = True, mask: bool = False) -> bytes:
    """Return the header of a frame carrying ``length`` payload bytes (RFC 6455 section 5.2),
    using the shortest length encoding. With ``mask`` the header ends with a fresh masking key."""
    b0 = (0x80 if fin else 0) | opcode
    mbit = 0x80 if mask else 0
    if length < 126:
        head = bytes((b0, mbit | length))
    elif length < 65536:
        head = bytes((b0, mbit | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((b0, mbit | 127)) + length.to_bytes(8, "big")
    if mask:
        head += _mask_keys.next()
    return head


def build_frame(
    opcode: int, payload: Buffer | str, mask: bool, fin: bool = True
) -> bytes:
    """Return a whole frame (header and payload in one buffer); with ``mask`` the payload is
    masked with a fresh random key, as a client must (section 5.3). A ``str`` payload is sent
    as its UTF-8 bytes."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    head = build_header(opcode, len(payload), fin, mask)
    if mask:
        return head + apply_mask(payload, head[-4:])
    return head + bytes(payload)


def build_message(data: Buffer | str, mask: bool) -> bytes:
    """Return the frame of a whole message: ``str`` as text, bytes-like as binary."""
    return build_frame(0x1 if isinstance(data, str) else 0x2, data, mask)


# ---------------------------------------------------------------------------------------------
# The per-message path of a connection

LARGE_PAYLOAD = 262144
PAUSE_QUEUE = 1
# Payloads with at least this much still to come are read straight into the message.
DIRECT_READ_MIN = 65536


class Sent(Coroutine[Any, Any, None]):
    """The awaitable ``MessagePump.send`` returns once the frame is written: already finished
    (its result is None), so awaiting it neither allocates nor suspends. It is a
    ``collections.abc.Coroutine`` so that ``asyncio.create_task``, ``gather`` and ``wait_for``
    take it like the coroutine ``send`` returns when it has to wait."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return self

    def __iter__(self) -> Sent:
        return self

    def __next__(self) -> Any:
        raise StopIteration

    def send(self, value: Any) -> Any:
        raise StopIteration

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        raise typ if val is None else val

    def close(self) -> None:
        pass


_SENT = Sent()


class Receiving(Coroutine[Any, Any, Any]):
    """The awaitable ``MessagePump.recv`` returns: either a message already taken from the
    queue (or None once closed), or the waiter future a coming message will resolve, which
    ``await`` then waits on directly. It is a ``collections.abc.Coroutine`` so that
    ``asyncio.create_task``, ``gather`` and ``wait_for`` take it like a coroutine."""

    __slots__ = ("_value", "_future", "_iter", "_end_iteration")

    def __init__(self, value: Any = None, future: Any = None, end_iteration: bool = False) -> None:
        self._value = value
        self._future = future
        self._iter: Any = None
        self._end_iteration = end_iteration

    def __await__(self) -> Generator[Any, None, Any]:
        if self._future is None:
            return self
        return self._future.__await__()  # type: ignore[no-any-return]

    def __iter__(self) -> Receiving:
        return self

    def __next__(self) -> Any:
        if self._future is not None:
            if self._iter is None:
                self._iter = self._future.__await__()
            return next(self._iter)
        if self._value is None and self._end_iteration:
            raise StopAsyncIteration
        raise StopIteration(self._value)

    def send(self, value: Any) -> Any:
        return self.__next__()

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if self._iter is not None:
            return self._iter.throw(typ if val is None else val)
        raise typ if val is None else val

    def close(self) -> None:
        pass


_CLOSED = Receiving()
_END_OF_ITERATION = Receiving(end_iteration=True)


def _wrong_thread(owner: int, current: int) -> str:
    return (
        f"this connection belongs to the event loop of thread {owner} and was used from "
        f"thread {current}: call it from that loop, e.g. with "
        f"asyncio.run_coroutine_threadsafe(coro, loop) where coro awaits ws.send(...)")


class MessagePump:
    """The per-message path of an open connection, as the base of ``connection.Websocket``.

    Received bytes (``data_received``, or ``get_buffer``/``buffer_updated``) go to the frame
    reader in one call; the messages it completes go to the waiting ``recv()`` or to the queue.
    ``send()`` builds a whole small message's frame and writes it to the transport. Everything
    else (control frames, failures, closing, draining a full write buffer, fragmented and large
    sends) is left to the subclass's methods: ``_core.process``, ``_handle_events``,
    ``_fail_now``, ``_send_other``, ``_drain_after_send`` and ``_large_payload_started``. It
    also coalesces the replies to a burst of messages into one write (``_hold``) and hands
    the transport a view onto the message itself while a large payload arrives
    (``get_buffer``). It calls only the loop, transport and protocol objects it is given; it
    never imports asyncio.
    """

    __slots__ = (
        "_transport",
        "_loop",
        "_core",
        "_reader",
        "_queue",
        "_waiter",
        "_rbuf",
        "_eof",
        "_write_paused",
        "_failure_deferred",
        "_waiter_iterates",
        "_mask_frames",
        "_max_queue",
        "_read_pauses",
        "_corked",
        "_uncork_scheduled",
        "_pending",
        "_pending_size",
        "_reading_direct",
        "_switch_reads",
        "_owner_thread",
    )

    _transport: Any
    _loop: Any
    _core: Any
    _reader: FrameReader
    _queue: Any
    _waiter: Any
    _rbuf: Any
    _eof: bool
    _write_paused: bool
    _failure_deferred: bool
    _waiter_iterates: bool
    _mask_frames: bool
    _max_queue: int
    _read_pauses: int
    # Write coalescing: while messages that arrived together are answered, small frames wait
    # in _pending and go out in one write (see _hold).
    _corked: bool
    _uncork_scheduled: bool
    _pending: list[bytes] | None
    _pending_size: int
    # get_buffer handed out a view onto the message being received (FrameReader.direct_buffer).
    _reading_direct: bool
    # Reading through data_received, tell the subclass when a payload spans reads
    # (_large_payload_started), so that it can switch the transport to direct reads.
    _switch_reads: bool
    # The thread of the event loop this connection belongs to (see _check_thread).
    _owner_thread: int

    def __init__(self) -> None:
        self._owner_thread = get_ident()
        self._corked = False
        self._uncork_scheduled = False
        self._pending = None
        self._pending_size = 0
        self._reading_direct = False
        self._switch_reads = False

    def recv(self) -> Coroutine[Any, Any, Any]:
        """Receive the next message: ``str`` (text) or ``bytes`` (binary); None once closed."""
        return self._receive(False)

    def __aiter__(self) -> MessagePump:
        return self

    def __anext__(self) -> Coroutine[Any, Any, Any]:
        return self._receive(True)

    def _receive(self, iterating: bool) -> Receiving:
        # Not a coroutine: the message is taken (or the waiter made) here, at the call, and
        # the awaitable returned is a small Receiving, which hands over the message or, when
        # there is none yet, awaits the waiter future directly. ``iterating`` (__anext__) ends
        # with StopAsyncIteration where recv() returns None.
        if get_ident() != self._owner_thread:
            self._check_thread()
        queue = self._queue
        if queue:
            received = Receiving(queue.popleft())
            if self._read_pauses and len(queue) <= self._max_queue >> 1:
                self._resume_reading(PAUSE_QUEUE)
            return received
        if self._eof:
            return _END_OF_ITERATION if iterating else _CLOSED
        if self._failure_deferred:
            self._fail_now()  # type: ignore[attr-defined]
            return _END_OF_ITERATION if iterating else _CLOSED
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            raise RuntimeError("recv() is already being awaited on this connection")
        # About to wait, perhaps for the answer to what is held: write it now.
        self._write_pending()
        # _deliver and the subclass's _end clear _waiter when they resolve it; a cancelled one
        # is simply replaced here (and _deliver queues instead of resolving a done future).
        waiter = self._loop.create_future()
        self._waiter = waiter
        self._waiter_iterates = iterating
        return Receiving(None, waiter)

    def send(self, data: Any, flush: bool = False) -> Coroutine[Any, Any, None]:
        """Send ``str`` as a text message, bytes-like as a binary message.

        The frame is handed to the transport at once. With ``flush=True`` this waits until the
        transport's write buffer is below its high-water mark; without it, it waits only when
        the buffer is far above it, so that a peer that does not read cannot make memory grow
        without bound. Raises ``ConnectionClosed`` once the connection is closing or closed.

        An iterable or async iterable of ``str`` (or of bytes-like) pieces is sent as one
        fragmented message, a frame per piece. Mixing ``str`` and bytes raises ``TypeError``;
        another ``send`` while the pieces go out raises ``RuntimeError``; if the iterable fails
        halfway, the connection is failed with 1011 (half a message cannot be taken back) and
        the error is re-raised.
        """
        # Not a coroutine function: a small message is written here, at the call, and what
        # comes back is a shared, already finished awaitable, so the common case allocates no
        # coroutine. Whatever may have to wait returns a real coroutine.
        if get_ident() != self._owner_thread:
            self._check_thread()
        kind = type(data)
        if (kind is bytes or kind is str) and len(data) < LARGE_PAYLOAD and self._core.send_fast:
            frame = build_frame(0x1 if kind is str else 0x2, data, self._mask_frames)
            if self._corked:
                self._hold(frame, flush)
            else:
                self._transport.write(frame)
            if self._write_paused:
                return self._drain_after_send(flush)  # type: ignore[attr-defined,no-any-return]
            return _SENT
        return self._send_other(data, flush)  # type: ignore[attr-defined,no-any-return]

    def get_buffer(self, sizehint: int) -> Any:
        # Inside a large payload the socket reads straight into the message (no copy through
        # the shared read buffer); otherwise into the shared buffer.
        view = self._reader.direct_buffer(DIRECT_READ_MIN)
        if view is not None:
            self._reading_direct = True
            return view
        self._reading_direct = False
        return self._rbuf

    def buffer_updated(self, nbytes: int) -> None:
        if self._reading_direct:
            self._reading_direct = False
            self._deliver(self._reader.direct_received(nbytes))
        else:
            self._deliver(self._reader.feed(self._rbuf, nbytes))

    def data_received(self, data: Buffer) -> None:
        self._deliver(self._reader.feed(data))
        if self._switch_reads and self._reader._in_payload:
            self._large_payload_started()  # type: ignore[attr-defined]

    def _deliver(self, msgs: list[Any]) -> None:
        # Without attention the reader returned messages only (no control tuples).
        attention = self._reader.attention
        if attention:
            msgs = self._core.process(msgs)
        if len(msgs) > 1:
            self._corked = True
        elif self._corked and msgs and not self._pending_size:
            self._corked = False
        if msgs:
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                # Hand the first message straight to the waiting recv(): no queue round trip.
                self._waiter = None
                waiter.set_result(msgs[0])
                if len(msgs) > 1:
                    self._enqueue(msgs[1:])
            else:
                self._enqueue(msgs)
        if attention:
            self._handle_events(bool(msgs))  # type: ignore[attr-defined]

    # Write coalescing. A chunk that completes several messages is a burst (a pipelining
    # peer): the frames the application sends while it works through them are held and
    # written together, when it next waits in recv(), when 64 KiB are held, or at the latest
    # by a callback the first held frame schedules for the loop's next pass. One write per
    # burst instead of one system call per frame. A message that arrives alone ends the burst:
    # request/response traffic is never held. Every other write goes through _write_bytes,
    # which writes what is held first, so frames keep their order.

    def _hold(self, frame: bytes, flush: bool) -> None:
        if self._pending is None:
            self._pending = []
        self._pending.append(frame)
        self._pending_size += len(frame)
        if not self._uncork_scheduled:
            self._uncork_scheduled = True
            self._loop.call_soon(self._uncork)
        if flush or self._pending_size >= 65536:
            self._write_pending()

    def _write_pending(self) -> None:
        """Write the frames held for coalescing, if any."""
        frames = self._pending
        if not self._pending_size:
            return
        self._pending = None
        self._pending_size = 0
        if frames and not self._transport.is_closing():
            self._transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def _uncork(self) -> None:
        self._uncork_scheduled = False
        self._corked = False
        self._write_pending()

    def _write_held(self) -> None:
        """Write the frames held for coalescing, if any."""
        if get_ident() != self._owner_thread:
            self._check_thread()
        self._write_pending()

    def _write_bytes(self, data: bytes) -> None:
        """Write ``data`` to the transport after any frames held for coalescing."""
        if get_ident() != self._owner_thread:
            self._check_thread()
        self._write_pending()
        self._transport.write(data)

    def _check_thread(self) -> None:
        """Raise RuntimeError unless called on the thread of this connection's event loop:
        its transport, loop and buffers are not thread-safe (asyncio's rule for its own
        objects), and on a free-threaded build a call from another thread would race them."""
        current = get_ident()
        if current != self._owner_thread:
            raise RuntimeError(_wrong_thread(self._owner_thread, current))

    def _enqueue(self, msgs: list[Any]) -> None:
        queue = self._queue
        queue.extend(msgs)
        if len(queue) >= self._max_queue:
            # Section 10.4's concern: stop reading rather than buffer without bound.
            self._pause_reading(PAUSE_QUEUE)

    def _pause_reading(self, reason: int) -> None:
        if not self._read_pauses:
            self._transport.pause_reading()
        self._read_pauses |= reason

    def _resume_reading(self, reason: int) -> None:
        if self._read_pauses & reason:
            self._read_pauses &= ~reason
            if not self._read_pauses and not self._transport.is_closing():
                self._transport.resume_reading()
