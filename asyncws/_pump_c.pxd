# cython: language_level=3
"""Declarations that compile ``_pump.py`` into ``asyncws._pump_c``: C types for the pump's
state, C-level methods for what only the pump calls, and the C kernels of ``_speedups`` in
place of the pure-Python ones the uncompiled module imports. The Python source stays the one
definition of the behaviour; this file only says how to compile it."""

cimport cython
from cpython.exc cimport PyErr_SetObject
from cpython.pythread cimport PyThread_get_thread_ident

from asyncws._speedups cimport FrameReader, _frame_of


cdef extern from *:
    """
    /* fut.__await__() through the type's slot: no attribute lookup, no bound method. */
    static PyObject *asyncws_await_iter(PyObject *o) {
        PyAsyncMethods *am = Py_TYPE(o)->tp_as_async;
        if (am != NULL && am->am_await != NULL) {
            return am->am_await(o);
        }
        return PyObject_CallMethod(o, "__await__", NULL);
    }
    """
    object _await_iter "asyncws_await_iter"(object o)


cdef inline int _stop_iteration_with(object value) except -1:
    # Only sets StopIteration(value); Receiving.__next__'s bare raise then returns with it.
    PyErr_SetObject(StopIteration, value)
    return 0


cdef Py_ssize_t _LARGE
cdef Py_ssize_t _DIRECT_MIN
cdef Py_ssize_t _HOLD_MAX
cdef int _PAUSE_QUEUE


@cython.final
cdef class Sent:
    pass


# (Its free list is declared in _pump.py: Cython ignores @cython.freelist here.)
@cython.final
cdef class Receiving:
    cdef object _value
    cdef object _future
    cdef object _iter
    cdef bint _end_iteration


cdef Sent _SENT
cdef Receiving _CLOSED
cdef Receiving _END_OF_ITERATION

@cython.locals(received=Receiving)
cdef Receiving _receiving(object value, object future)


cdef class MessagePump:
    cdef public object _transport
    cdef public object _loop
    cdef public object _core
    cdef public FrameReader _reader
    cdef public object _queue
    cdef public object _waiter
    cdef public object _rbuf
    cdef public bint _eof
    cdef public bint _write_paused
    cdef public bint _failure_deferred
    cdef public bint _waiter_iterates
    cdef public bint _mask_frames
    cdef public Py_ssize_t _max_queue
    cdef public int _read_pauses
    cdef bint _corked
    cdef bint _uncork_scheduled
    cdef list _pending
    cdef Py_ssize_t _pending_size
    cdef bint _reading_direct
    cdef public bint _switch_reads
    cdef unsigned long _owner_thread
    cdef object _transport_write
    cdef object _create_future
    cdef object _future_class
    cdef object _running_loop

    cdef Receiving _receive(self, bint iterating)
    cdef int _deliver(self, list msgs) except -1
    cdef int _hold(self, bytes frame, bint flush) except -1
    cdef int _write_pending(self) except -1
    cdef int _push(self, list msgs) except -1
    cdef int _pause(self, int reason) except -1
    cdef int _resume(self, int reason) except -1
