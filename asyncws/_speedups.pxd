# cython: language_level=3
"""The C-level interface of the Cython kernels (``_speedups.pyx``), for the modules compiled
against them: the per-message pump (``_pump.py`` compiled as ``_pump_c``) reads through a
``FrameReader`` and frames small messages with ``_frame_of`` without a Python-level call.
Only declarations live here; ``_speedups.pyi`` is the Python-level interface both kernels
share."""

cimport cython


@cython.final
cdef class FrameReader:
    cdef readonly object error
    cdef readonly bint closed
    cdef readonly bint attention
    # After a failure: the peer's Close has been read (whole), past everything before it.
    cdef readonly bint peer_closed
    # After a failure: bytes of the current frame still to read past, whether that frame is a
    # Close, and whether frame boundaries were lost (a length with its top bit set).
    cdef unsigned long long _skip
    cdef bint _skip_close
    cdef bint _lost_sync
    cdef bint _expect_masked
    cdef bint _rsv1_ok
    cdef unsigned long long _max_size
    # The start of a header split across two feeds.
    cdef unsigned char _hdr[14]
    cdef Py_ssize_t _hdr_len
    # The frame being read when its payload spans feeds.
    cdef bint _in_payload
    cdef int _opcode
    cdef bint _fin
    cdef bint _masked
    cdef bint _compressed
    cdef unsigned char _mask[4]
    cdef unsigned long long _remaining
    cdef unsigned long long _offset
    cdef unsigned char _control[125]
    cdef Py_ssize_t _control_len
    # The message being assembled.
    cdef int _msg_opcode
    cdef bint _msg_compressed
    cdef bytearray _msg
    # An unfragmented message arriving in pieces goes straight into its final bytes object.
    cdef bytes _whole
    cdef Py_ssize_t _msg_len
    cdef int _utf8
    # stream_next_message(): the next fragmented message comes out piece by piece; _streamed
    # counts the bytes of it already handed out (max_size still applies).
    cdef bint _stream
    cdef unsigned long long _streamed


    cpdef list feed(self, object data, Py_ssize_t nbytes=*)
    cpdef object direct_buffer(self, Py_ssize_t minimum)
    cpdef list direct_received(self, Py_ssize_t nbytes)
    cpdef int fail(self, int code, str reason) except -1
    cdef bytes _take_buffered(self)
    cdef int _read_past(self, const unsigned char* buf, Py_ssize_t n) except -1
    cdef inline const unsigned char* _next_header(self, const unsigned char* buf, Py_ssize_t* pos,
                                           Py_ssize_t n)
    cdef int _feed(self, const unsigned char* buf, Py_ssize_t n, list out) except -1
    cdef int _stopped(self, const unsigned char* buf, Py_ssize_t pos, Py_ssize_t n) except -1
    cdef bint _violation(self, int code, str reason, unsigned long long size) except -1
    cdef bint _parse_header(self, const unsigned char* hp) except -1
    cdef bint _whole_frame(self, const unsigned char* p, Py_ssize_t size, list out) except -1
    cdef bint _end_frame(self, list out) except -1
    cdef bint _end_piece(self, list out) except -1


cdef bytes _frame_of(int opcode, object payload, bint mask, bint fin)
