# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: freethreading_compatible = True
#
# Free-threading audit (issue 14). The directive above keeps the GIL off when a free-threaded
# CPython (3.14t, 3.15t) imports this module; it holds because every piece of state that
# threads could share, here, in the pure twin and in the Python modules, is one of these:
# - masking-key pool (_keys, _keys_pos): guarded: a PyMutex on free-threaded builds (compiled
#   out elsewhere: the GIL guards it); the pure twin's _MaskKeys pops from a list (atomic).
# - fork handling (os.register_at_fork, _forget_keys / _MaskKeys.forget): guarded: the child
#   drops the pool it shares with its parent and resets the mutex a dead thread may hold.
# - _pump's _SENT, _CLOSED, _END_OF_ITERATION (the shared finished awaitables): immutable after
#   import. (_pump.py, compiled as _pump_c, declares itself free-threading compatible too.)
# - module constants (_NO_LIMIT, LARGE_PAYLOAD, PAUSE_QUEUE, DIRECT_READ_MIN; the pure twin's
#   _XOR_TABLES; the tables and compiled regular expressions of frames, handshake, deflate,
#   client, server, cli): immutable.
# - Coroutine.register(Sent / Receiving) in _pump, the fork handler's registration: once, at
#   import.
# - FrameReader, Utf8Validator, _pump.MessagePump and, above them, protocol.Protocol, the zlib
#   streams of deflate.PerMessageDeflate, connection._DirectReads, the handshake protocols
#   (ServerHandshake, ClientHandshake, HeadReader): per connection, and a
#   connection is per-thread: MessagePump records its loop's thread and send(), recv(), the
#   writes, close(), ping(), pong(), recv_streaming() and broadcast() raise RuntimeError on
#   any other thread, before they write or change the protocol's state.
# - connection._read_buffer (the read buffer a thread's connections share): per-thread
#   (threading.local); it is filled and parsed within one transport callback.
# - _kernels (HAS_SPEEDUPS, BACKEND, ASYNCWS_NO_SPEEDUPS): read once, at import: immutable.
# - logging: the "asyncws" logger objects are immutable references, logging locks its own
#   handlers, and asyncws adds no handler and sets no level.
# - connection.Settings, deflate.Deflate (options), server._ServerConfig (with its sets of
#   connections, tasks and handshakes): per server or connect() call, used on its loop's thread;
#   the options are never written after construction.
# - cli.py: its stdin thread reaches the event loop only through call_soon_threadsafe.

"""The framing kernels in Cython: masking, UTF-8 validation, frame parsing and building.

This module holds ``apply_mask``, ``apply_mask_inplace``, ``Utf8Validator``, ``FrameReader``,
``build_frame``, ``build_header`` and ``build_message``: the per-byte and per-frame work of RFC
6455, written against raw buffers so that a received chunk is parsed in one call with one copy
per message. ``_speedups.pxd`` declares what the compiled per-message pump (``_pump_c``) calls
at C level. It mirrors ``_purepython.py`` name for name and branch for branch; it must not
import asyncio, know about handshakes or connections, or know which backend is active
(``_kernels`` decides that).
"""

import os

cimport cython
from cpython.buffer cimport (
    PyBUF_SIMPLE,
    PyBUF_WRITABLE,
    PyBUF_WRITE,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_Resize
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.unicode cimport PyUnicode_Check, PyUnicode_DecodeUTF8
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy


cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL

__all__ = [
    "apply_mask",
    "apply_mask_inplace",
    "Utf8Validator",
    "FrameReader",
    "build_frame",
    "build_header",
    "build_message",
]

# Largest "no limit" size: a frame length is at most 2**63 - 1 (section 5.2).
cdef unsigned long long _NO_LIMIT = (1ULL << 63) - 1

# Text frames up to this size are unmasked on the stack before decoding, saving an allocation.
cdef enum:
    STACK_TEXT = 2048
    PREALLOCATE_MAX = 16 * 1024 * 1024


# ---------------------------------------------------------------------------------------------
# Masking (section 5.3)

cdef inline void _xor_mask(unsigned char* dst, const unsigned char* src, Py_ssize_t n,
                           const unsigned char* key, Py_ssize_t phase) noexcept nogil:
    """dst[i] = src[i] ^ key[(phase + i) % 4]; dst may be src (in place)."""
    cdef unsigned char k[4]
    cdef uint32_t k32
    cdef uint64_t k64, w0, w1
    cdef Py_ssize_t i = 0
    k[0] = key[phase & 3]
    k[1] = key[(phase + 1) & 3]
    k[2] = key[(phase + 2) & 3]
    k[3] = key[(phase + 3) & 3]
    if n >= 8:
        memcpy(&k32, k, 4)
        # Both halves hold the same 4 bytes, so the byte order of the machine does not matter.
        k64 = (<uint64_t>k32) | ((<uint64_t>k32) << 32)
        # 16 bytes per step through memcpy'd words: unaligned-safe, and gcc/clang turn it into
        # wide loads and stores.
        while i + 16 <= n:
            memcpy(&w0, src + i, 8)
            memcpy(&w1, src + i + 8, 8)
            w0 ^= k64
            w1 ^= k64
            memcpy(dst + i, &w0, 8)
            memcpy(dst + i + 8, &w1, 8)
            i += 16
        if i + 8 <= n:
            memcpy(&w0, src + i, 8)
            w0 ^= k64
            memcpy(dst + i, &w0, 8)
            i += 8
    # i is a multiple of 8 here, so the key phase is still k[0] at i.
    while i < n:
        dst[i] = src[i] ^ k[i & 3]
        i += 1


cdef inline void _check_mask(const unsigned char** key, object mask, Py_buffer* view) except *:
    PyObject_GetBuffer(mask, view, PyBUF_SIMPLE)
    if view.len != 4:
        PyBuffer_Release(view)
        raise ValueError("mask must be 4 bytes")
    key[0] = <const unsigned char*>view.buf


def apply_mask(data, mask):
    """Return ``data`` XORed with the repeated 4-byte ``mask`` (RFC 6455 section 5.3)."""
    cdef Py_buffer dview, mview
    cdef const unsigned char* key
    cdef unsigned char* dst
    cdef Py_ssize_t n
    if PyBytes_CheckExact(data) and PyBytes_CheckExact(mask) and PyBytes_GET_SIZE(mask) == 4:
        # The common call, without the buffer protocol's bookkeeping (it dominates small sizes).
        n = PyBytes_GET_SIZE(data)
        result = PyBytes_FromStringAndSize(NULL, n)
        _xor_mask(<unsigned char*>PyBytes_AS_STRING(result),
                  <const unsigned char*>PyBytes_AS_STRING(data), n,
                  <const unsigned char*>PyBytes_AS_STRING(mask), 0)
        return result
    _check_mask(&key, mask, &mview)
    try:
        PyObject_GetBuffer(data, &dview, PyBUF_SIMPLE)
        try:
            result = PyBytes_FromStringAndSize(NULL, dview.len)
            dst = <unsigned char*>PyBytes_AS_STRING(result)
            with nogil:
                _xor_mask(dst, <const unsigned char*>dview.buf, dview.len, key, 0)
        finally:
            PyBuffer_Release(&dview)
    finally:
        PyBuffer_Release(&mview)
    return result


def apply_mask_inplace(buf, mask, Py_ssize_t offset=0):
    """XOR the writable ``buf`` with ``mask`` in place, as if it started ``offset`` bytes into a
    masked payload (so that a payload arriving in pieces can be unmasked piece by piece)."""
    cdef Py_buffer dview, mview
    cdef const unsigned char* key
    _check_mask(&key, mask, &mview)
    try:
        PyObject_GetBuffer(buf, &dview, PyBUF_WRITABLE)
        try:
            with nogil:
                _xor_mask(<unsigned char*>dview.buf, <const unsigned char*>dview.buf,
                          dview.len, key, offset & 3)
        finally:
            PyBuffer_Release(&dview)
    finally:
        PyBuffer_Release(&mview)


# ---------------------------------------------------------------------------------------------
# UTF-8 validation (RFC 3629 section 4)
#
# The state between pieces is packed in one int: 0 at a character boundary, else
# remaining | lo << 8 | hi << 16, where remaining continuation bytes are still due and the next
# one must lie in [lo, hi]. The ranges are those of RFC 3629's table, which excludes overlongs,
# surrogates and code points above U+10FFFF at the first byte where they become impossible.

cdef inline int _utf8_step(int state, const unsigned char* p, Py_ssize_t n) noexcept nogil:
    """Validate n more bytes; return the new state, or -1 at the first impossible byte."""
    cdef Py_ssize_t i = 0
    cdef unsigned int c, c1
    cdef int rem = state & 0xFF
    cdef unsigned int lo = (state >> 8) & 0xFF
    cdef unsigned int hi = (state >> 16) & 0xFF
    cdef uint64_t w, w1
    # 1. Finish a sequence left open by the previous piece.
    while rem and i < n:
        c = p[i]
        if c < lo or c > hi:
            return -1
        i += 1
        rem -= 1
        lo = 0x80
        hi = 0xBF
    if rem:
        return rem | (lo << 8) | (hi << 16)
    # 2. Whole sequences while at least 4 bytes remain: no state to carry, few branches.
    while i + 4 <= n:
        c = p[i]
        if c < 0x80:
            # ASCII: skip the run 16, then 8, bytes per step while no top bit is set.
            i += 1
            while i + 16 <= n:
                memcpy(&w, p + i, 8)
                memcpy(&w1, p + i + 8, 8)
                if (w | w1) & 0x8080808080808080ULL:
                    break
                i += 16
            while i + 8 <= n:
                memcpy(&w, p + i, 8)
                if w & 0x8080808080808080ULL:
                    break
                i += 8
            continue
        c1 = p[i + 1]
        if c < 0xE0:
            if c < 0xC2 or (c1 & 0xC0) != 0x80:
                return -1
            i += 2
        elif c < 0xF0:
            # RFC 3629: E0 needs A0..BF next (no overlongs), ED needs 80..9F (no surrogates).
            lo = 0xA0 if c == 0xE0 else 0x80
            hi = 0x9F if c == 0xED else 0xBF
            if c1 < lo or c1 > hi or (p[i + 2] & 0xC0) != 0x80:
                return -1
            i += 3
        elif c < 0xF5:
            # F0 needs 90..BF next (no overlongs), F4 needs 80..8F (nothing above U+10FFFF).
            lo = 0x90 if c == 0xF0 else 0x80
            hi = 0x8F if c == 0xF4 else 0xBF
            if c1 < lo or c1 > hi or (p[i + 2] & 0xC0) != 0x80 or (p[i + 3] & 0xC0) != 0x80:
                return -1
            i += 4
        else:
            return -1
    # 3. The last few bytes, byte by byte, possibly ending inside a sequence.
    lo = 0x80
    hi = 0xBF
    while i < n:
        c = p[i]
        i += 1
        if rem:
            if c < lo or c > hi:
                return -1
            rem -= 1
            lo = 0x80
            hi = 0xBF
        elif c < 0x80:
            continue
        elif c < 0xC2:
            return -1
        elif c < 0xE0:
            rem = 1
        elif c < 0xF0:
            rem = 2
            lo = 0xA0 if c == 0xE0 else 0x80
            hi = 0x9F if c == 0xED else 0xBF
        elif c < 0xF5:
            rem = 3
            lo = 0x90 if c == 0xF0 else 0x80
            hi = 0x8F if c == 0xF4 else 0xBF
        else:
            return -1
    if rem == 0:
        return 0
    return rem | (lo << 8) | (hi << 16)


cdef class Utf8Validator:
    """Incremental UTF-8 validation: feed pieces with ``validate``; state carries across them.

    ``validate`` returns False as soon as a piece holds a byte that cannot continue valid UTF-8
    (RFC 3629), even when the sequence it belongs to is not finished yet; ``complete`` tells
    whether everything fed so far ends on a character boundary.
    """

    cdef int _state

    def __cinit__(self):
        self._state = 0

    def validate(self, data):
        cdef Py_buffer view
        if self._state < 0:
            return False
        if PyBytes_CheckExact(data):
            self._state = _utf8_step(self._state, <const unsigned char*>PyBytes_AS_STRING(data),
                                     PyBytes_GET_SIZE(data))
            return self._state >= 0
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            with nogil:
                self._state = _utf8_step(self._state, <const unsigned char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)
        return self._state >= 0

    @property
    def complete(self):
        return self._state == 0

    def reset(self):
        self._state = 0


# ---------------------------------------------------------------------------------------------
# Frame parsing (section 5.2 - 5.5)

cdef inline Py_ssize_t _header_size(unsigned char b1) noexcept nogil:
    cdef unsigned char size = b1 & 0x7F
    cdef Py_ssize_t hlen = 2
    if size == 126:
        hlen += 2
    elif size == 127:
        hlen += 8
    if b1 & 0x80:
        hlen += 4
    return hlen


cdef inline unsigned long long _payload_size(const unsigned char* hp) noexcept nogil:
    """The payload length a complete header declares (section 5.2)."""
    cdef unsigned long long size = hp[1] & 0x7F
    cdef int i
    if size == 126:
        size = (<unsigned long long>hp[2] << 8) | hp[3]
    elif size == 127:
        size = 0
        for i in range(8):
            size = (size << 8) | hp[2 + i]
    return size


cdef class FrameReader:
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

    def __init__(self, bint expect_masked, max_size=None, bint compressed=False):
        self._expect_masked = expect_masked
        self._rsv1_ok = compressed
        self._msg_compressed = False
        self._max_size = _NO_LIMIT if max_size is None else <unsigned long long>max_size
        self.error = None
        self.closed = False
        self.attention = False
        self.peer_closed = False
        self._skip = 0
        self._skip_close = False
        self._lost_sync = False
        self._hdr_len = 0
        self._in_payload = False
        self._msg_opcode = 0
        self._msg = None
        self._whole = None
        self._msg_len = 0
        self._utf8 = 0
        self._stream = False
        self._streamed = 0

    @property
    def max_size(self):
        return self._max_size

    def stream_next_message(self):
        """Hand out the next message, if it is fragmented, frame by frame: each data frame of
        it as a tuple ``(OP_TEXT or OP_BINARY, payload, fin)`` (text validated as usual, but the
        payload may end inside a UTF-8 sequence), instead of reassembled. A message that is one
        frame, or compressed, still comes whole. Applies to one message. Returns, as such a
        piece, what a fragmented message in progress has already buffered (else [])."""
        self._stream = True
        if (self.closed or not self._msg_opcode or self._msg_compressed
                or self._whole is not None or self._msg is None or not self._msg_len):
            return []
        return [(self._msg_opcode, self._take_buffered(), False)]

    cdef bytes _take_buffered(self):
        """What the message being streamed has buffered, handed out (it stops counting toward
        the buffer, not toward max_size)."""
        cdef bytes piece = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(self._msg), self._msg_len)
        self._msg = bytearray()
        self._streamed += <unsigned long long>self._msg_len
        self._msg_len = 0
        return piece

    cpdef int fail(self, int code, str reason) except -1:
        """Stop reading: record ``(code, reason)`` as the error, as a violation would; what
        follows is read past, up to the peer's Close. A second failure changes nothing."""
        if self.error is not None:
            return 0
        self.error = (code, reason)
        self.closed = True
        self.attention = True
        # Read past the rest of the frame in progress, if any (a violation found in a header
        # sets the frame's length itself).
        self._skip = self._remaining if self._in_payload else 0
        self._skip_close = False
        self._in_payload = False
        self._msg = None
        self._whole = None
        self._msg_len = 0
        return 0

    cpdef list feed(self, object data, Py_ssize_t nbytes=-1):
        """Parse ``data`` (its first ``nbytes`` bytes when given: a reusable read buffer needs
        no slicing) and return the items it completes. Nothing of ``data`` is kept."""
        cdef Py_buffer view
        cdef list out = []
        cdef Py_ssize_t n
        self.attention = False
        if self.closed:
            if self.error is None or self.peer_closed or self._lost_sync:
                return out  # after a Close, or nothing more to look for: ignored
        if PyBytes_CheckExact(data):
            n = PyBytes_GET_SIZE(data)
            if 0 <= nbytes < n:
                n = nbytes
            if self.closed:
                self._read_past(<const unsigned char*>PyBytes_AS_STRING(data), n)
            else:
                self._feed(<const unsigned char*>PyBytes_AS_STRING(data), n, out)
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            try:
                n = view.len
                if 0 <= nbytes < n:
                    n = nbytes
                if self.closed:
                    self._read_past(<const unsigned char*>view.buf, n)
                else:
                    self._feed(<const unsigned char*>view.buf, n, out)
            finally:
                PyBuffer_Release(&view)
        return out

    cdef int _read_past(self, const unsigned char* buf, Py_ssize_t n) except -1:
        """After a failure: read past whole frames without keeping, unmasking or checking
        them, until a Close frame has arrived whole (``peer_closed``, with ``attention``). Only
        a header that is incomplete is held, so the peer cannot make this buffer anything."""
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t take
        cdef const unsigned char* hp
        while not self.peer_closed:
            if self._skip:
                if pos >= n:
                    break
                take = <Py_ssize_t>self._skip if self._skip < <unsigned long long>(n - pos) else n - pos
                pos += take
                self._skip -= take
                if self._skip:
                    break
            if self._skip_close:
                self.peer_closed = True
                self.attention = True
                break
            if pos >= n:
                break
            hp = self._next_header(buf, &pos, n)
            if hp == NULL:
                break
            self._skip = _payload_size(hp)
            if self._skip >> 63:
                self._lost_sync = True  # no frame boundary to find any more
                break
            self._skip_close = (hp[0] & 0x0F) == 0x8
        return 0

    cdef inline const unsigned char* _next_header(self, const unsigned char* buf, Py_ssize_t* pos,
                                           Py_ssize_t n):
        """The complete frame header at ``buf[pos[0]]`` (``pos`` moves past it), or NULL when it
        is split across feeds (its start is kept in ``_hdr`` and all of ``buf`` is consumed)."""
        cdef Py_ssize_t p = pos[0]
        cdef Py_ssize_t hlen, take
        # Section 5.2: the base header is 2 bytes, then 0, 2 or 8 length bytes, then the
        # 4-byte masking key when the MASK bit is set.
        if self._hdr_len:
            if self._hdr_len == 1:
                self._hdr[1] = buf[p]
                p += 1
                self._hdr_len = 2
            hlen = _header_size(self._hdr[1])
            take = hlen - self._hdr_len
            if take > n - p:
                take = n - p
            memcpy(self._hdr + self._hdr_len, buf + p, take)
            self._hdr_len += take
            pos[0] = p + take
            if self._hdr_len < hlen:
                return NULL
            self._hdr_len = 0
            return self._hdr
        if n - p < 2:
            self._hdr[0] = buf[p]
            self._hdr_len = 1
            pos[0] = n
            return NULL
        hlen = _header_size(buf[p + 1])
        if n - p < hlen:
            memcpy(self._hdr, buf + p, n - p)
            self._hdr_len = n - p
            pos[0] = n
            return NULL
        pos[0] = p + hlen
        return buf + p

    cpdef object direct_buffer(self, Py_ssize_t minimum):
        """A writable view onto the rest of the payload of the message being received, when it
        is a data frame whose final buffer is already allocated (a whole message of known size)
        and at least ``minimum`` bytes of it are still to come; else None. Bytes received into
        the start of the view are then passed to ``direct_received(nbytes)`` instead of
        ``feed``, so that a large payload goes from the socket to the message without a copy.
        The view is valid only until the next call on this reader."""
        if (self.closed or not self._in_payload or self._whole is None or self._opcode >= 0x8
                or self._remaining < <unsigned long long>minimum):
            return None
        return PyMemoryView_FromMemory(
            PyBytes_AS_STRING(self._whole) + self._msg_len, <Py_ssize_t>self._remaining,
            PyBUF_WRITE)

    cpdef list direct_received(self, Py_ssize_t nbytes):
        """Account for ``nbytes`` received into the view ``direct_buffer`` returned (unmask
        and validate them in place) and return the items that completes, as ``feed`` does."""
        cdef list out = []
        cdef unsigned char* dst
        self.attention = False
        if self.closed or not self._in_payload or self._whole is None:
            raise RuntimeError("direct_received() without a direct_buffer() to fill")
        if nbytes <= 0 or <unsigned long long>nbytes > self._remaining:
            raise ValueError("direct_received(): nbytes out of range")
        dst = <unsigned char*>PyBytes_AS_STRING(self._whole) + self._msg_len
        if self._masked:
            _xor_mask(dst, dst, nbytes, self._mask, <Py_ssize_t>(self._offset & 3))
        self._msg_len += nbytes
        self._offset += <unsigned long long>nbytes
        self._remaining -= <unsigned long long>nbytes
        if self._msg_opcode == 0x1 and not self._msg_compressed:
            self._utf8 = _utf8_step(self._utf8, dst, nbytes)
            if self._utf8 < 0:
                self.fail(1007, "invalid UTF-8 in text message")
                return out
        if not self._remaining:
            self._in_payload = False
            self._end_frame(out)
        return out

    cdef int _feed(self, const unsigned char* buf, Py_ssize_t n, list out) except -1:
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t take
        cdef const unsigned char* hp
        cdef unsigned char* dst
        cdef unsigned long long size
        cdef int opcode
        while True:
            if self._in_payload:
                if self._remaining:
                    if pos >= n:
                        break
                    take = <Py_ssize_t>self._remaining if self._remaining < <unsigned long long>(n - pos) else n - pos
                    if self._opcode >= 0x8:
                        dst = self._control + self._control_len
                        self._control_len += take
                    else:
                        if self._whole is not None:
                            dst = <unsigned char*>PyBytes_AS_STRING(self._whole) + self._msg_len
                        else:
                            PyByteArray_Resize(self._msg, self._msg_len + take)
                            dst = <unsigned char*>PyByteArray_AS_STRING(self._msg) + self._msg_len
                        self._msg_len += take
                    if self._masked:
                        _xor_mask(dst, buf + pos, take, self._mask, <Py_ssize_t>(self._offset & 3))
                    else:
                        memcpy(dst, buf + pos, take)
                    pos += take
                    self._offset += take
                    self._remaining -= take
                    if self._opcode < 0x8 and self._msg_opcode == 0x1 and not self._msg_compressed:
                        self._utf8 = _utf8_step(self._utf8, dst, take)
                        if self._utf8 < 0:
                            self.fail(1007, "invalid UTF-8 in text message")
                            return self._stopped(buf, pos, n)
                if self._remaining:
                    break
                self._in_payload = False
                if not self._end_frame(out):
                    return self._stopped(buf, pos, n)
                continue
            if pos >= n:
                break
            hp = self._next_header(buf, &pos, n)
            if hp == NULL:
                break
            if not self._parse_header(hp):
                return self._stopped(buf, pos, n)
            opcode = self._opcode
            size = self._remaining
            if self._fin and opcode != 0x0 and size <= <unsigned long long>(n - pos):
                # Fast path: a whole frame in this chunk, not part of a fragmented message.
                if not self._whole_frame(buf + pos, <Py_ssize_t>size, out):
                    return self._stopped(buf, pos, n)
                pos += <Py_ssize_t>size
                if opcode < 0x8:
                    self._stream = False  # the next message came whole
                continue
            # Slow path: the payload arrives over several feeds, or belongs to a fragmented
            # message; unmask and validate each piece as it comes.
            self._offset = 0
            self._in_payload = True
            if opcode >= 0x8:
                self._control_len = 0
            elif opcode != 0x0:
                self._msg_opcode = opcode
                self._msg_compressed = self._compressed
                self._msg_len = 0
                self._streamed = 0
                self._utf8 = 0
                if self._fin and size <= PREALLOCATE_MAX:
                    # Its size is known (and within max_size): fill the bytes object the
                    # application will get, so that a large message is copied once, not twice.
                    # Past PREALLOCATE_MAX (only without a max_size) the buffer grows as the
                    # data arrives, so that a header's claim alone allocates nothing.
                    self._whole = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>size)
                else:
                    self._msg = bytearray()
        return 0

    cdef int _stopped(self, const unsigned char* buf, Py_ssize_t pos, Py_ssize_t n) except -1:
        """_feed stopped at ``pos``: after a Close there is nothing more to read; after a
        violation the rest of ``buf`` is read past."""
        if self.error is not None and not self._lost_sync:
            self._read_past(buf + pos, n - pos)
        return 0

    cdef bint _violation(self, int code, str reason, unsigned long long size) except -1:
        """A violation found in a header whose frame carries ``size`` more bytes."""
        self.fail(code, reason)
        self._skip = size
        return False

    cdef bint _parse_header(self, const unsigned char* hp) except -1:
        """Decode and check one complete header; False (with ``error`` set) on a violation."""
        cdef unsigned char b0 = hp[0]
        cdef unsigned char b1 = hp[1]
        cdef int opcode = b0 & 0x0F
        cdef bint fin = (b0 & 0x80) != 0
        cdef bint masked = (b1 & 0x80) != 0
        # Decoded first, so that a frame found in violation can be read past.
        cdef unsigned long long size = _payload_size(hp)
        self._compressed = False
        if b0 & 0x70:
            # Section 5.2: RSV1-3 MUST be 0 unless an extension defines them; RFC 7692
            # section 6 defines RSV1 on the first frame of a data message.
            if b0 & 0x30 or not self._rsv1_ok or opcode == 0x0 or opcode >= 0x8:
                return self._violation(1002, "reserved bits set", size)
            self._compressed = True
        if opcode >= 0x8:
            if opcode > 0xA:
                return self._violation(1002, f"reserved opcode {opcode}", size)
            # Section 5.5: control frames MUST NOT be fragmented and carry <= 125 bytes.
            if not fin:
                return self._violation(1002, "fragmented control frame", size)
            if size > 125:
                return self._violation(1002, "control frame payload over 125 bytes", size)
        elif opcode == 0x0:
            # Section 5.4: a continuation needs a message in progress.
            if self._msg_opcode == 0:
                return self._violation(
                    1002, "continuation frame without a message to continue", size)
        elif opcode <= 0x2:
            if self._msg_opcode != 0:
                return self._violation(
                    1002, "new data frame before the fragmented message ended", size)
        else:
            return self._violation(1002, f"reserved opcode {opcode}", size)
        # Section 5.1: clients MUST mask, servers MUST NOT.
        if masked != self._expect_masked:
            return self._violation(
                1002, "unmasked frame" if self._expect_masked else "masked frame", size)
        if size >> 63:
            # Section 5.2: the most significant bit MUST be 0. No frame boundary can be found
            # after such a header.
            self.fail(1002, "frame length with the most significant bit set")
            self._lost_sync = True
            return False
        if opcode < 0x8 and size > (self._max_size - <unsigned long long>self._msg_len
                                    - self._streamed):
            return self._violation(
                1009, f"message larger than max_size ({self._max_size} bytes)", size)
        self._opcode = opcode
        self._fin = fin
        self._masked = masked
        if masked:
            memcpy(self._mask, hp + _header_size(b1) - 4, 4)
        self._remaining = size
        return True

    cdef bint _whole_frame(self, const unsigned char* p, Py_ssize_t size, list out) except -1:
        """Emit a frame whose payload is all in ``p``; False once nothing more may be read."""
        cdef int opcode = self._opcode
        cdef bytes payload
        cdef unsigned char tmp[STACK_TEXT]
        cdef const unsigned char* src = p
        if opcode == 0x1 and not self._compressed:
            if self._masked:
                if size <= STACK_TEXT:
                    _xor_mask(tmp, p, size, self._mask, 0)
                    src = tmp
                else:
                    payload = PyBytes_FromStringAndSize(NULL, size)
                    _xor_mask(<unsigned char*>PyBytes_AS_STRING(payload), p, size, self._mask, 0)
                    src = <const unsigned char*>PyBytes_AS_STRING(payload)
            try:
                out.append(PyUnicode_DecodeUTF8(<const char*>src, size, NULL))
            except UnicodeDecodeError:
                return self._violation(1007, "invalid UTF-8 in text message", size)
            return True
        payload = PyBytes_FromStringAndSize(NULL, size)
        if self._masked:
            _xor_mask(<unsigned char*>PyBytes_AS_STRING(payload), p, size, self._mask, 0)
        else:
            memcpy(PyBytes_AS_STRING(payload), p, size)
        if opcode == 0x2 and not self._compressed:
            out.append(payload)
            return True
        self.attention = True
        out.append((opcode, payload))
        if opcode == 0x8:
            self.closed = True
            return False
        return True

    cdef bint _end_frame(self, list out) except -1:
        """Finish the frame whose payload just completed; False once nothing more may be read."""
        cdef int opcode = self._opcode
        cdef const char* data
        if opcode >= 0x8:
            self.attention = True
            out.append((opcode, PyBytes_FromStringAndSize(<char*>self._control, self._control_len)))
            if opcode == 0x8:
                self.closed = True
                return False
            return True
        if self._stream and not self._msg_compressed and (self._streamed or not self._fin):
            return self._end_piece(out)
        if not self._fin:
            return True
        self._stream = False
        # Local references keep the buffers alive while ``data`` points into them.
        cdef bytes whole = self._whole
        cdef bytearray pieces = self._msg
        self._whole = None
        self._msg = None
        if whole is not None:
            data = PyBytes_AS_STRING(whole)
        else:
            data = PyByteArray_AS_STRING(pieces)
        if self._msg_compressed:
            self.attention = True
            out.append((self._msg_opcode, whole if whole is not None
                        else PyBytes_FromStringAndSize(data, self._msg_len)))
        elif self._msg_opcode == 0x1:
            if self._utf8 != 0:
                self.fail(1007, "text message ends inside a UTF-8 sequence")
                return False
            out.append(PyUnicode_DecodeUTF8(data, self._msg_len, NULL))
        elif whole is not None:
            out.append(whole)
        else:
            out.append(PyBytes_FromStringAndSize(data, self._msg_len))
        self._msg_len = 0
        self._msg_opcode = 0
        return True

    cdef bint _end_piece(self, list out) except -1:
        """Hand out the data frame just read as one piece of a streamed message."""
        cdef bytes piece = self._take_buffered()
        cdef bint fin = self._fin
        if fin and self._msg_opcode == 0x1 and self._utf8 != 0:
            self.fail(1007, "text message ends inside a UTF-8 sequence")
            return False
        self.attention = True
        out.append((self._msg_opcode, piece, fin))
        if fin:
            self._stream = False
            self._msg = None
            self._msg_opcode = 0
        return True


# ---------------------------------------------------------------------------------------------
# Frame building (section 5.2)

# Masking keys from the OS's CSPRNG (section 10.3 wants them unpredictable), drawn 1 KiB at a
# time so that a frame costs 4 bytes of a buffer, not a system call. The pool is shared by all
# threads: the GIL guards it where there is one, a mutex on a free-threaded build (two threads
# must never take the same key, nor read past the pool while another draws a new one).
cdef extern from *:
    """
    #ifdef Py_GIL_DISABLED
    static PyMutex asyncws_keys_mutex;
    static void asyncws_keys_lock(void) { PyMutex_Lock(&asyncws_keys_mutex); }
    static void asyncws_keys_unlock(void) { PyMutex_Unlock(&asyncws_keys_mutex); }
    static void asyncws_keys_lock_reset(void) {
        memset(&asyncws_keys_mutex, 0, sizeof(asyncws_keys_mutex));
    }
    #else
    #define asyncws_keys_lock()
    #define asyncws_keys_unlock()
    #define asyncws_keys_lock_reset()
    #endif
    """
    void _keys_lock "asyncws_keys_lock"() noexcept nogil
    void _keys_unlock "asyncws_keys_unlock"() noexcept nogil
    void _keys_lock_reset "asyncws_keys_lock_reset"() noexcept nogil

cdef unsigned char _keys[1024]
cdef Py_ssize_t _keys_pos = 1024


cdef inline void _next_key(unsigned char* dst) except *:
    global _keys_pos
    _keys_lock()
    if _keys_pos + 4 <= 1024:
        memcpy(dst, _keys + _keys_pos, 4)
        _keys_pos += 4
        _keys_unlock()
        return
    _keys_unlock()
    # Drawn without the lock held (it calls Python); a thread that also found the pool empty
    # meanwhile refills it too, with other random bytes: no key is handed out twice.
    pool = os.urandom(1024)
    _keys_lock()
    memcpy(_keys, PyBytes_AS_STRING(pool), 1024)
    memcpy(dst, _keys, 4)
    _keys_pos = 4
    _keys_unlock()


def _forget_keys():
    # A forked child must not reuse the keys its parent will also use. It has only the thread
    # that forked: a mutex another thread held at the fork is released, not waited on forever.
    global _keys_pos
    _keys_lock_reset()
    _keys_pos = 1024


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_keys)


cdef inline Py_ssize_t _write_header(unsigned char* h, int opcode, unsigned long long length,
                                     bint fin, bint mask) noexcept:
    cdef unsigned char mbit = 0x80 if mask else 0
    cdef int i
    h[0] = (0x80 if fin else 0) | opcode
    if length < 126:
        h[1] = mbit | <unsigned char>length
        return 2
    if length < 65536:
        h[1] = mbit | 126
        h[2] = <unsigned char>(length >> 8)
        h[3] = <unsigned char>length
        return 4
    h[1] = mbit | 127
    for i in range(8):
        h[2 + i] = <unsigned char>(length >> (56 - 8 * i))
    return 10


def build_header(int opcode, unsigned long long length, bint fin=True, bint mask=False):
    """Return the header of a frame carrying ``length`` payload bytes (RFC 6455 section 5.2),
    using the shortest length encoding. With ``mask`` the header ends with a fresh masking key."""
    cdef unsigned char h[14]
    cdef Py_ssize_t hlen = _write_header(h, opcode, length, fin, mask)
    if mask:
        _next_key(h + hlen)
        hlen += 4
    return PyBytes_FromStringAndSize(<char*>h, hlen)


def build_frame(int opcode, payload, bint mask, bint fin=True):
    """Return a whole frame (header and payload in one buffer); with ``mask`` the payload is
    masked with a fresh random key, as a client must (section 5.3). A ``str`` payload is sent
    as its UTF-8 bytes."""
    return _frame_of(opcode, payload, mask, fin)


def build_message(data, bint mask):
    """Return the frame of a whole message: ``str`` as text, bytes-like as binary."""
    return _frame_of(0x1 if PyUnicode_Check(data) else 0x2, data, mask, True)


cdef bytes _frame_of(int opcode, object payload, bint mask, bint fin):
    cdef Py_buffer view
    cdef const unsigned char* src
    cdef Py_ssize_t n
    cdef bint release = False
    if PyBytes_CheckExact(payload):
        src = <const unsigned char*>PyBytes_AS_STRING(payload)
        n = PyBytes_GET_SIZE(payload)
    elif PyUnicode_Check(payload):
        # For ASCII text this is the string's own storage: no encode, no copy.
        src = <const unsigned char*>PyUnicode_AsUTF8AndSize(payload, &n)
    else:
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        src = <const unsigned char*>view.buf
        n = view.len
        release = True
    try:
        return _build(opcode, src, n, mask, fin)
    finally:
        if release:
            PyBuffer_Release(&view)


cdef bytes _build(int opcode, const unsigned char* src, Py_ssize_t n, bint mask, bint fin):
    cdef unsigned char h[14]
    cdef Py_ssize_t hlen = _write_header(h, opcode, n, fin, mask)
    cdef bytes frame
    cdef unsigned char* out
    if mask:
        _next_key(h + hlen)
        hlen += 4
    frame = PyBytes_FromStringAndSize(NULL, hlen + n)
    out = <unsigned char*>PyBytes_AS_STRING(frame)
    memcpy(out, h, hlen)
    if mask:
        _xor_mask(out + hlen, src, n, h + hlen - 4, 0)
    else:
        memcpy(out + hlen, src, n)
    return frame
