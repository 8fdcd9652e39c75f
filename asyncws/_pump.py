# cython: annotation_typing=False, freethreading_compatible=True
# (The annotations are for the type checker; _pump_c.pxd gives the compiled types. The
# free-threading audit is in _speedups.pyx, and covers this module.)
"""The per-message path of an open connection, written once: ``MessagePump``, the base of
``connection.Websocket``, with ``Sent`` and ``Receiving``, the awaitables ``send()`` and
``recv()`` return.

This module holds what each message goes through: received bytes into the frame reader in one
call, the messages it completes to the waiting ``recv()`` or the queue, ``send()`` of a small
message straight to the transport, write coalescing for bursts, reading straight into a large
message, and the state that goes with them (the waiter, the end of the stream, why reading is
paused, a deferred failure). It is plain Python: the pure-Python backend runs it as it is, and
the build compiles this same file with Cython into ``_pump_c``, whose ``_pump_c.pxd`` declares
the types and binds it to the C kernels of ``_speedups``. It must not import asyncio (it only
calls the loop, transport and protocol objects it is given), parse or build bytes itself (the
kernels do), or choose a backend (``_kernels`` does).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Coroutine, Generator
from types import SimpleNamespace
from typing import Any

try:
    import cython  # type: ignore[import-not-found, import-untyped, unused-ignore]
except ImportError:  # Cython is not installed: this module can only run uncompiled.
    # (Not an assignment to ``cython``: compiled, the name is Cython's own.)
    globals()["cython"] = SimpleNamespace(
        compiled=False, cclass=lambda cls: cls, freelist=lambda size: lambda cls: cls
    )

if not cython.compiled:
    # Compiled, _frame_of is the C kernels', and _await_iter, _stop_iteration_with and
    # PyThread_get_thread_ident are C (all declared in _pump_c.pxd); run as it is, this module
    # is the pure-Python backend's pump and takes the pure-Python kernels.
    from operator import methodcaller
    from threading import get_ident as PyThread_get_thread_ident

    from ._purepython import build_frame as _frame_of

    # future.__await__(), called from C: no Python frame per awaited recv().
    _await_iter = methodcaller("__await__")

    def _stop_iteration_with(value: Any) -> None:
        raise StopIteration(value)


__all__ = [
    "MessagePump",
    "Sent",
    "Receiving",
    "DIRECT_READ_MIN",
    "LARGE_PAYLOAD",
    "PAUSE_QUEUE",
    "PAUSE_WRITE",
    "PAUSE_FAILURE",
]

# A payload at least this large is sent by the subclass (header and payload written apart,
# no copy), not by send()'s fast path.
LARGE_PAYLOAD = 262144
# Payloads with at least this much still to come are read straight into the message.
DIRECT_READ_MIN = 65536
# Why reading is paused (bits of MessagePump._read_pauses); the transport reads when none is set.
PAUSE_QUEUE = 1  # max_queue messages wait for recv()
PAUSE_WRITE = 2  # our replies to the peer (Pongs) wait in a full write buffer
PAUSE_FAILURE = 4  # a violation waits behind messages the application has not read yet
# Held frames are written once this much is held (write coalescing).
_HOLD_MAX = 65536

# Typed copies for the compiled module (C integers there).
_LARGE = LARGE_PAYLOAD
_DIRECT_MIN = DIRECT_READ_MIN
_PAUSE_QUEUE = PAUSE_QUEUE


class Sent:
    """The awaitable ``MessagePump.send`` returns once the frame is written: already finished
    (its result is None), so awaiting it neither allocates nor suspends. It registers as a
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


# Compiled, a Receiving comes from a free list instead of the allocator (one per recv()).
# Cython takes @cython.freelist only in the source, and only above @cython.cclass: in
# _pump_c.pxd it is ignored, below cclass it is refused. Uncompiled, both do nothing.
@cython.freelist(8)
@cython.cclass
class Receiving:
    """The awaitable ``MessagePump.recv`` returns: either a message already taken from the
    queue (or None once closed), or the waiter future a coming message will resolve, which
    ``await`` then waits on directly. It registers as a ``collections.abc.Coroutine`` so that
    ``asyncio.create_task``, ``gather`` and ``wait_for`` take it like a coroutine."""

    __slots__ = ("_value", "_future", "_iter", "_end_iteration")
    _value: Any
    _future: Any
    _iter: Any
    _end_iteration: bool

    def __await__(self) -> Generator[Any, None, Any]:
        if self._future is None:
            return self
        return _await_iter(self._future)  # type: ignore[no-any-return]

    def __iter__(self) -> Receiving:
        return self

    def __next__(self) -> Any:
        if self._future is not None:
            if self._iter is None:
                self._iter = _await_iter(self._future)
            return next(self._iter)
        if self._value is not None:
            # The result travels in the StopIteration. Compiled, _stop_iteration_with only sets
            # it and the bare raise below returns without replacing it (Cython's StopIteration
            # fast path in __next__), so no exception object or traceback is built when the
            # interpreter can avoid it.
            _stop_iteration_with(self._value)
        elif self._end_iteration:
            raise StopAsyncIteration
        raise StopIteration

    def send(self, value: Any) -> Any:
        return self.__next__()

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if self._iter is not None:
            return self._iter.throw(typ if val is None else val)
        raise typ if val is None else val

    def close(self) -> None:
        pass


# A compiled class cannot derive from the abstract base class; registering makes both
# isinstance(x, Coroutine) and asyncio's coroutine checks accept them.
Coroutine.register(Sent)
Coroutine.register(Receiving)


def _receiving(value: Any, future: Any) -> Receiving:
    received = Receiving.__new__(Receiving)
    received._value = value
    received._future = future
    received._iter = None
    received._end_iteration = False
    return received


_SENT = Sent()
_CLOSED = _receiving(None, None)
_END_OF_ITERATION = _receiving(None, None)
_END_OF_ITERATION._end_iteration = True


class MessagePump:
    """The per-message path of an open connection, as the base of ``connection.Websocket``.

    Received bytes (``data_received``, or ``get_buffer``/``buffer_updated``) go to the frame
    reader in one call; the messages it completes go to the waiting ``recv()`` or to the queue
    (reading pauses when ``max_queue`` wait). ``send()`` frames a whole small message and writes
    it to the transport. The pump owns the waiter, the end of the stream (``_end``), the
    reasons reading is paused and the flag of a deferred failure. It coalesces the replies to
    a burst of messages into one write (``_hold``) and hands the transport a view onto the
    message itself while a large payload arrives (``get_buffer``).

    What it leaves to the subclass is the contract below, methods it calls and the subclass
    overrides: ``_handle_events`` (what the protocol produced besides messages),
    ``_fail_now`` (a deferred violation, when ``recv()`` reaches it), ``_send_other`` and
    ``_drain_after_send`` (sends that may wait) and ``_large_payload_started``.
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
        "_transport_write",
        "_create_future",
        "_future_class",
        "_running_loop",
    )

    def __init__(
        self, transport: Any, loop: Any, core: Any, read_buffer: Any, max_queue: int,
        switch_reads: bool, future_class: Any = None, running_loop: Any = None,
    ) -> None:
        # The thread of the event loop this connection belongs to (see _check_thread).
        self._owner_thread = PyThread_get_thread_ident()
        self._transport = transport
        self._loop = loop
        # Bound once: the per-message path calls them without looking the method up.
        self._transport_write = transport.write
        self._create_future = loop.create_future
        # Where loop.create_future() only makes a future_class(loop=loop), recv() makes a
        # future_class() itself while running_loop() is this loop: no call through the loop's
        # method and no keyword argument (on uvloop, about half what a waiting recv() costs).
        self._future_class = future_class
        self._running_loop = running_loop
        # The sans-I/O protocol (``protocol.Protocol``) and its frame reader, which the hot
        # path calls directly: one call per chunk, the protocol only when the reader flags
        # ``attention``.
        self._core = core
        self._reader = core.reader
        self._mask_frames = core.is_client
        # The thread's shared read buffer (get_buffer), when the transport reads into one.
        self._rbuf = read_buffer
        self._queue: deque[Any] = deque()
        self._waiter: Any = None
        # Whether _waiter was made by __anext__ (the end then raises StopAsyncIteration in it).
        self._waiter_iterates = False
        self._eof = False  # no message will be queued any more
        self._max_queue = max(1, max_queue)
        self._read_pauses = 0  # PAUSE_* bits
        self._write_paused = False
        # A protocol violation waits behind messages the application has not read yet.
        self._failure_deferred = False
        # Write coalescing: while messages that arrived together are answered, small frames
        # wait in _pending and go out in one write (see _hold).
        self._corked = False
        self._uncork_scheduled = False
        self._pending: list[bytes] | None = None
        self._pending_size = 0
        # get_buffer handed out a view onto the message being received (direct_buffer).
        self._reading_direct = False
        # Reading through data_received, tell the subclass when a payload spans reads
        # (_large_payload_started), so that it can switch the transport to direct reads.
        self._switch_reads = switch_reads

    # -- the application's side ---------------------------------------------------------------

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
        if PyThread_get_thread_ident() != self._owner_thread:
            self._check_thread()
        queue = self._queue
        if queue:
            received = _receiving(queue.popleft(), None)
            if self._read_pauses and len(queue) <= (self._max_queue >> 1):
                self._resume(_PAUSE_QUEUE)
            return received
        if self._eof:
            return _END_OF_ITERATION if iterating else _CLOSED
        if self._failure_deferred:
            self._fail_now()
            return _END_OF_ITERATION if iterating else _CLOSED
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            raise RuntimeError("recv() is already being awaited on this connection")
        # About to wait, perhaps for the answer to what is held: write it now.
        self._write_pending()
        # _deliver and _end clear _waiter when they resolve it; a cancelled one is simply
        # replaced here (and _deliver queues instead of resolving a done future).
        if self._future_class is not None and self._running_loop() is self._loop:
            waiter = self._future_class()
        else:
            waiter = self._create_future()
        self._waiter = waiter
        self._waiter_iterates = iterating
        return _receiving(None, waiter)

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
        if PyThread_get_thread_ident() != self._owner_thread:
            self._check_thread()
        kind = type(data)
        if (kind is bytes or kind is str) and len(data) < _LARGE and self._core.send_fast:
            frame = _frame_of(0x1 if kind is str else 0x2, data, self._mask_frames, True)
            if self._corked:
                self._hold(frame, flush)
            else:
                self._transport_write(frame)
            if self._write_paused:
                return self._drain_after_send(flush)
            return _SENT
        return self._send_other(data, flush)

    # -- the transport's side (asyncio.Protocol / BufferedProtocol) --------------------------

    def get_buffer(self, sizehint: int) -> Any:
        # Inside a large payload the socket reads straight into the message (no copy through
        # the shared read buffer); otherwise into the shared buffer.
        view = self._reader.direct_buffer(_DIRECT_MIN)
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

    def data_received(self, data: Any) -> None:
        self._deliver(self._reader.feed(data, -1))
        if self._switch_reads and self._reader._in_payload:
            self._large_payload_started()

    def _deliver(self, msgs: list[Any]) -> int:
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
            if waiter is None:
                self._push(msgs)
            else:
                # Hand the first message straight to the waiting recv(): no queue round trip.
                # Not asked whether it is done first (a call per message): only a cancelled
                # recv() leaves it done, and then set_result refuses and the message is queued.
                self._waiter = None
                try:
                    waiter.set_result(msgs[0])
                except Exception:
                    if not waiter.done():
                        raise
                    self._push(msgs)
                else:
                    if len(msgs) > 1:
                        self._push(msgs[1:])
        if attention:
            self._handle_events(len(msgs) > 0)
        return 0

    def _end(self) -> None:
        """No more messages will arrive: wake a waiting recv() with None (a waiting
        ``async for`` with the end of the iteration)."""
        if self._eof:
            return
        self._eof = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._waiter = None
            if self._waiter_iterates:
                waiter.set_exception(StopAsyncIteration())
            else:
                waiter.set_result(None)

    # -- write coalescing -----------------------------------------------------------------------
    # A chunk that completes several messages is a burst (a pipelining peer): the frames the
    # application sends while it works through them are held and written together, when it
    # next waits in recv(), when _HOLD_MAX bytes are held, or at the latest by a callback the
    # first held frame schedules for the loop's next pass. One write per burst instead of one
    # system call per frame. A message that arrives alone ends the burst: request/response
    # traffic is never held. Every other write goes through _write_bytes, which writes what is
    # held first, so frames keep their order.

    def _hold(self, frame: bytes, flush: bool) -> int:
        pending = self._pending
        if pending is None:
            pending = self._pending = []
        pending.append(frame)
        self._pending_size += len(frame)
        if not self._uncork_scheduled:
            self._uncork_scheduled = True
            self._loop.call_soon(self._uncork)
        if flush or self._pending_size >= _HOLD_MAX:
            self._write_pending()
        return 0

    def _write_pending(self) -> int:
        """Write the frames held for coalescing, if any."""
        frames = self._pending
        if not self._pending_size:
            return 0
        self._pending = None
        self._pending_size = 0
        if frames and not self._transport.is_closing():
            self._transport_write(frames[0] if len(frames) == 1 else b"".join(frames))
        return 0

    def _uncork(self) -> None:
        self._uncork_scheduled = False
        self._corked = False
        self._write_pending()

    def _write_held(self) -> None:
        """Write the frames held for coalescing, if any."""
        if PyThread_get_thread_ident() != self._owner_thread:
            self._check_thread()
        self._write_pending()

    def _write_bytes(self, data: bytes) -> None:
        """Write ``data`` to the transport after any frames held for coalescing."""
        if PyThread_get_thread_ident() != self._owner_thread:
            self._check_thread()
        self._write_pending()
        self._transport_write(data)

    def _check_thread(self) -> None:
        """Raise RuntimeError unless called on the thread of this connection's event loop:
        its transport, loop and buffers are not thread-safe (asyncio's rule for its own
        objects), and on a free-threaded build a call from another thread would race them."""
        current = PyThread_get_thread_ident()
        if current != self._owner_thread:
            raise RuntimeError(
                f"this connection belongs to the event loop of thread {self._owner_thread} and "
                f"was used from thread {current}: call it from that loop, e.g. with "
                "asyncio.run_coroutine_threadsafe(coro, loop) where coro awaits ws.send(...)"
            )

    # -- the queue and read pauses -------------------------------------------------------------

    def _enqueue(self, msgs: list[Any]) -> None:
        self._push(msgs)

    def _push(self, msgs: list[Any]) -> int:
        queue = self._queue
        queue.extend(msgs)
        if len(queue) >= self._max_queue:
            # Section 10.4's concern: stop reading rather than buffer without bound.
            self._pause(_PAUSE_QUEUE)
        return 0

    def _pause_reading(self, reason: int) -> None:
        self._pause(reason)

    def _resume_reading(self, reason: int) -> None:
        self._resume(reason)

    def _pause(self, reason: int) -> int:
        if not self._read_pauses:
            self._transport.pause_reading()
        self._read_pauses |= reason
        return 0

    def _resume(self, reason: int) -> int:
        if self._read_pauses & reason:
            self._read_pauses &= ~reason
            if not self._read_pauses and not self._transport.is_closing():
                self._transport.resume_reading()
        return 0

    # -- the subclass's side: the contract ------------------------------------------------------

    def _handle_events(self, delivered: bool) -> None:
        """The reader flagged ``attention``: act on what the protocol produced besides
        messages (replies, pongs, a violation, closing); ``delivered`` tells whether the same
        chunk delivered messages."""
        raise NotImplementedError

    def _fail_now(self) -> None:
        """recv() reached a deferred violation: fail the connection now."""
        raise NotImplementedError

    def _send_other(self, data: Any, flush: bool) -> Coroutine[Any, Any, None]:
        """send() for what its fast path leaves (closed or compressed connections, large
        payloads, other buffers, iterables of fragments): a coroutine."""
        raise NotImplementedError

    def _drain_after_send(self, flush: bool) -> Coroutine[Any, Any, None]:
        """send() wrote while the write buffer is full: a coroutine that waits as ``flush``
        says."""
        raise NotImplementedError

    def _large_payload_started(self) -> None:
        """Reading with data_received, a payload now spans reads (see ``_switch_reads``)."""
        raise NotImplementedError
