"""The framing kernels in pure Python: the fallback twin of ``_speedups.pyx``.

This module holds ``apply_mask``, ``apply_mask_inplace``, ``Utf8Validator``, ``FrameReader``,
``build_frame``, ``build_header`` and ``build_message`` with exactly the names, signatures and
behaviour of the Cython extension (``_speedups.pyi`` states that interface), so that either can
serve ``_kernels``: the byte loops, where C and Python need different algorithms. It must not
import asyncio, know about handshakes or connections, or be imported by anything but
``_kernels``, the uncompiled pump (``_pump``) and the tests: the choice of backend is made in
one place. Its code is the readable reference of the framing rules; the Cython module mirrors
it branch for branch.
"""

from __future__ import annotations

import codecs
import os
from typing import Union

__all__ = [
    "apply_mask",
    "apply_mask_inplace",
    "Utf8Validator",
    "FrameReader",
    "build_frame",
    "build_header",
    "build_message",
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


def _header_size(b1: int) -> int:
    """The length of a frame header whose second byte is ``b1`` (section 5.2)."""
    size = b1 & 0x7F
    return 2 + (2 if size == 126 else 8 if size == 127 else 0) + (4 if b1 & 0x80 else 0)


def _payload_size(data: Buffer, pos: int) -> int:
    """The payload length the complete header at ``data[pos]`` declares (section 5.2)."""
    size: int = data[pos + 1] & 0x7F
    if size == 126:
        return (data[pos + 2] << 8) | data[pos + 3]
    if size == 127:
        return int.from_bytes(data[pos + 2 : pos + 10], "big")
    return size


class FrameReader:
    """Parse a stream of WebSocket frames (RFC 6455 section 5) into whole messages.

    ``feed(data)`` consumes any number of bytes and returns, in order, every message and control
    frame they complete: a text message as ``str``, a binary message as ``bytes``, a control frame
    as a tuple ``(opcode, payload)``. Fragments are reassembled and unmasked, text is validated as
    it arrives. On a protocol violation the items before it are returned, ``error`` is set to
    ``(close_code, reason)`` and nothing more is delivered: what follows is read past frame by
    frame, without being kept or checked, until a Close frame has arrived whole
    (``peer_closed``), so that the caller sees the peer's Close reply (section 7.1.7). After a
    Close frame nothing more is parsed (section 5.5.1). ``attention`` tells whether the last
    ``feed`` returned a tuple or stopped reading (Close, error, or the Close after an error):
    whether its result needs more than delivering messages.

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
        # After a failure: the peer's Close has been read (whole), past everything before it.
        self.peer_closed = False
        # After a failure: bytes of the current frame still to read past, whether that frame
        # is a Close, and whether frame boundaries were lost (a length with its top bit set).
        self._skip = 0
        self._skip_close = False
        self._lost_sync = False
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
        """Stop reading: record ``(code, reason)`` as the error, as a violation would; what
        follows is read past, up to the peer's Close. A second failure changes nothing."""
        if self.error is not None:
            return
        self.error = (code, reason)
        self.closed = True
        self.attention = True
        self._msg = bytearray()
        # Read past the rest of the frame in progress, if any (a violation found in a header
        # sets the frame's length itself).
        self._skip = self._remaining if self._in_payload else 0
        self._skip_close = False
        self._in_payload = False

    def _violation(self, out: list[Item], code: int, reason: str, data: Buffer, pos: int,
                   skip: int) -> list[Item]:
        """A violation in the frame at ``data[pos]``, ``skip`` bytes of which remain: fail,
        then read past the rest of ``data``."""
        self.fail(code, reason)
        self._skip = skip
        self._read_past(data, pos)
        return out

    def _stopped(self, out: list[Item], data: Buffer, pos: int) -> list[Item]:
        """feed stopped at ``pos``: after a Close there is nothing more to read; after a
        violation the rest of ``data`` is read past."""
        if self.error is not None:
            self._read_past(data, pos)
        return out

    def _read_past(self, data: Buffer, pos: int) -> None:
        """After a failure: read past whole frames without keeping, unmasking or checking
        them, until a Close frame has arrived whole (``peer_closed``, with ``attention``). Only
        a header that is incomplete is held, so the peer cannot make this buffer anything."""
        if self._pending:
            data = self._pending + bytes(data[pos:])
            self._pending = b""
            pos = 0
        n = len(data)
        while not self.peer_closed and not self._lost_sync:
            if self._skip:
                take = min(self._skip, n - pos)
                pos += take
                self._skip -= take
                if self._skip:
                    return
            if self._skip_close:
                self.peer_closed = True
                self.attention = True
                return
            if pos >= n:
                return
            if n - pos < 2 or n - pos < _header_size(data[pos + 1]):
                self._pending = bytes(data[pos:])
                return
            hlen = _header_size(data[pos + 1])
            size = _payload_size(data, pos)
            if size >> 63:
                self._lost_sync = True  # no frame boundary to find any more
                return
            self._skip_close = data[pos] & 0x0F == 0x8
            self._skip = size
            pos += hlen

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
            if self.error is not None and not self.peer_closed:
                self._read_past(data if nbytes < 0 else memoryview(data)[:nbytes], 0)
            return out  # after a Close: ignored
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
                            return self._stopped(out, data, pos)
                if self._remaining:
                    break
                self._in_payload = False
                if not self._end_frame(out):
                    return self._stopped(out, data, pos)
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
            # The length is decoded first, so that a frame found in violation can be read past.
            p = pos + 2
            if size == 126:
                size = (data[p] << 8) | data[p + 1]
                p += 2
            elif size == 127:
                size = int.from_bytes(data[p : p + 8], "big")
                p += 8
            if masked:
                p += 4  # past the masking key: p is where the payload starts
            fin = b0 & 0x80
            opcode = b0 & 0x0F
            compressed = False
            if b0 & 0x70:
                # Section 5.2: RSV1-3 MUST be 0 unless an extension defines them; RFC 7692
                # section 6 defines RSV1 on the first frame of a data message.
                if b0 & 0x30 or not self._rsv1_ok or opcode == 0x0 or opcode >= 0x8:
                    return self._violation(out, 1002, "reserved bits set", data, p, size)
                compressed = True
            if opcode >= 0x8:
                if opcode > 0xA:
                    return self._violation(out, 1002, f"reserved opcode {opcode}", data, p, size)
                # Section 5.5: control frames MUST NOT be fragmented and carry <= 125 bytes.
                if not fin:
                    return self._violation(out, 1002, "fragmented control frame", data, p, size)
                if size > 125:
                    return self._violation(
                        out, 1002, "control frame payload over 125 bytes", data, p, size
                    )
            elif opcode == 0x0:
                # Section 5.4: a continuation needs a message in progress.
                if self._msg_opcode == 0:
                    return self._violation(
                        out, 1002, "continuation frame without a message to continue",
                        data, p, size,
                    )
            elif opcode <= 0x2:
                if self._msg_opcode != 0:
                    return self._violation(
                        out, 1002, "new data frame before the fragmented message ended",
                        data, p, size,
                    )
            else:
                return self._violation(out, 1002, f"reserved opcode {opcode}", data, p, size)
            # Section 5.1: clients MUST mask, servers MUST NOT.
            if bool(masked) != self._expect_masked:
                reason = "unmasked frame" if self._expect_masked else "masked frame"
                return self._violation(out, 1002, reason, data, p, size)
            if size >> 63:
                # Section 5.2: the most significant bit MUST be 0. No frame boundary can be
                # found after such a header.
                self.fail(1002, "frame length with the most significant bit set")
                self._lost_sync = True
                return out
            if opcode < 0x8 and size > self._max_size - len(self._msg) - self._streamed:
                return self._violation(
                    out, 1009, f"message larger than max_size ({self._max_size} bytes)",
                    data, p, size,
                )
            mask = bytes(data[p - 4 : p]) if masked else None
            pos = p
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
                        return self._stopped(out, data, pos)
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
