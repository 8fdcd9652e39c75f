"""The asyncio side of an open WebSocket connection: the ``Websocket`` class.

This module holds ``Websocket``, the object applications use (``recv``, ``send``, ``close``,
``ping``) and, at the same time, the ``asyncio.Protocol`` its transport talks to once the
handshake is done. The per-message path (received bytes to ``recv()``, small ``send()``s to the
transport) is its base class, the pump (``_pump.MessagePump``, through ``_kernels``); this
module adds what the sans-I/O ``Protocol`` produces besides messages (replies, pongs,
violations), sends that may wait (``pause_writing``/``resume_writing``, fragments), keepalive,
``broadcast()``, and how a connection ends: the closing handshake, the TCP close after it, and
``close_timeout``. It must not parse or build bytes: that is the protocol core's job.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

from ._kernels import DIRECT_READ_MIN, PAUSE_FAILURE, PAUSE_QUEUE, PAUSE_WRITE, MessagePump
from .exceptions import ConnectionClosed
from .handshake import Request, Response
from .options import CLOSE_TIMEOUT, MAX_QUEUE, MAX_SIZE, PING_INTERVAL, PING_TIMEOUT
from .protocol import CLOSED, OPEN, Data, Fragment, Message, Outgoing, Protocol

__all__ = ["Websocket", "Settings", "broadcast", "websocket_class"]

logger = logging.getLogger("asyncws")


class Websocket(MessagePump, asyncio.Protocol):
    """An open WebSocket connection (client or server side).

    ``recv()`` returns the next whole message: ``str`` for text, ``bytes`` for binary, and None
    once the connection is closed (then always None). ``send(data)`` sends ``str`` as a text
    message and bytes-like as a binary one. ``close()`` performs the closing handshake.
    ``writer`` is the transport (``get_extra_info()``; ``writer.close()`` drops the connection
    without a handshake), ``request`` the server's view of the upgrade request and ``response``
    the client's view of the server's answer.

    The ``data_received`` (or ``get_buffer``/``buffer_updated``), ``connection_lost`` and
    ``pause_writing`` methods are the ``asyncio`` protocol interface the transport calls;
    applications do not call them.
    """

    __slots__ = (
        "request",
        "response",
        "subprotocol",
        "_drain_waiters",
        "_lost",
        "_close_timeout",
        "_close_timer",
        "_closing",
        "_ping_waiters",
        "_peer",
        "_keepalive",
        "_keepalive_payload",
        "_settings",
        "_skipped_by_broadcast",
    )

    # Declared by MessagePump; typed here for this module.
    _core: Protocol
    _transport: asyncio.Transport
    _loop: asyncio.AbstractEventLoop

    def __init__(
        self,
        transport: asyncio.Transport,
        core: Protocol,
        settings: Settings | None = None,
        *,
        request: Request | None = None,
        response: Response | None = None,
        subprotocol: str | None = None,
    ) -> None:
        if settings is None:
            settings = Settings()
        loop = asyncio.get_running_loop()
        switch_reads = not isinstance(self, asyncio.BufferedProtocol)
        super().__init__(
            transport, loop, core, _read_buffer(), settings.max_queue, switch_reads,
            asyncio.Future if _makes_plain_futures(loop) else None, asyncio._get_running_loop,
        )
        #: Server side: the upgrade request (``method``, ``path`` with the query, ``headers``).
        #: None on a client.
        self.request = request
        #: Client side: the server's 101 response (``status``, ``reason``, ``headers``).
        #: None on a server.
        self.response = response
        #: The subprotocol both sides agreed on (``Sec-WebSocket-Protocol``), or None.
        self.subprotocol = subprotocol
        self._settings = settings
        self._skipped_by_broadcast = False  # broadcast() logged that it skips this one
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._close_timeout = settings.close_timeout
        # Runs _fail_now for a deferred violation, then (once closing started) aborts the
        # transport when close_timeout passes.
        self._close_timer: asyncio.TimerHandle | None = None
        self._closing = False  # _start_closing ran: waiters released, abort armed
        # Ping payload -> (waiter, time sent), created on the first ping.
        self._ping_waiters: dict[bytes, tuple[asyncio.Future[float], float]] | None = None
        self._peer = transport.get_extra_info("peername")
        if settings.write_limit is not None:
            transport.set_write_buffer_limits(high=settings.write_limit)
        # Keepalive (ping_interval / ping_timeout): one timer, re-armed, never a task.
        self._keepalive: asyncio.TimerHandle | None = None
        self._keepalive_payload: bytes | None = None
        if settings.ping_interval is not None:
            self._keepalive = self._loop.call_later(settings.ping_interval, self._keepalive_ping)
        if switch_reads and type(transport).__name__ == "_SSLProtocolTransport" and (
            type(transport).__module__.startswith("uvloop")
        ):
            # uvloop's TLS transport hands a data_received protocol each TLS record in a bytes
            # object of its own, allocated at 256 KiB and shrunk: an mmap, mremap and munmap
            # per record, that is per message (32k pipelined messages/s where asyncio's TLS
            # does 300k). Read through get_buffer there, once whoever made this connection
            # has made it the transport's protocol.
            self._loop.call_soon(self._read_into_buffer)

    # -- public API ----------------------------------------------------------------------------

    @property
    def writer(self) -> asyncio.Transport:
        """The transport: ``get_extra_info(name)``, and ``close()`` to drop the connection."""
        # Whoever uses the transport directly sees every frame sent so far in it (none is
        # left held for write coalescing), so a send() followed by writer.close() loses nothing.
        self._write_held()
        return self._transport

    @property
    def close_code(self) -> int | None:
        """What ended the connection (None while open): the peer's close code, the code asyncws
        sent when it failed the connection, or 1006 when it ended without a closing handshake."""
        return self._core.close_code

    @property
    def close_reason(self) -> str:
        """The reason that came with ``close_code`` ("" when none, or while open)."""
        return self._core.close_reason

    @property
    def open(self) -> bool:
        """Whether messages can still be sent."""
        return self._core.state == OPEN

    @property
    def closed(self) -> asyncio.Future[None]:
        """A future done once the underlying connection is closed."""
        return self._lost

    async def recv_streaming(self) -> AsyncIterator[Message]:
        """Receive the next message piece by piece, without holding it whole: an async iterator
        over its fragments (``str`` pieces for text, ``bytes`` for binary) as they arrive. A
        message sent in one frame (or compressed), or already received in full before the call,
        comes as a single piece. Ends early, without error, if the connection closes
        mid-message (``close_code`` tells why); ``max_size`` still bounds the whole message."""
        self._check_thread()
        if not self._queue and not self._eof:
            # Nothing queued: the message the reader assembles next is the one to stream, and
            # what it already holds of it is the first piece.
            held = self._reader.stream_next_message()
            if held:
                self._enqueue(self._core.process(held))
                self._handle_events(True)
        item: Any = await self.recv()
        if item is None:
            return
        if type(item) is not Fragment:
            yield item
            return
        while True:
            yield item.data
            if item.last:
                return
            item = await self.recv()
            if item is None:
                return

    async def _send_other(self, data: Data, flush: bool) -> None:
        """send() for what its fast path leaves: closed or compressed connections, large
        payloads, other buffers, and (async) iterables of fragments."""
        if isinstance(data, (str, bytes, bytearray, memoryview)):
            self._write(self._core.send_data(data))
        else:
            await self._send_fragments(data)
        if self._write_paused:
            await self._drain_after_send(flush)

    async def _drain_after_send(self, flush: bool) -> None:
        transport = self._transport
        if flush or transport.get_write_buffer_size() > 4 * _high_water(transport):
            await self._drain()

    def _write(self, frame: Outgoing) -> None:
        if isinstance(frame, bytes):
            self._write_bytes(frame)
        else:
            # Two writes, not writelines(): before 3.12 it joins (the copy we avoid), and in
            # 3.12/3.13 asyncio's selector transport skips its flow control (no pause_writing,
            # even after the connection is lost), so nothing would bound the buffer.
            header, payload = frame
            self._write_bytes(header)
            self._transport.write(payload)

    async def _send_fragments(self, chunks: Iterable[Data] | AsyncIterable[Data]) -> None:
        """Send an (async) iterable of str or bytes-like chunks as one fragmented message
        (section 5.4); all chunks must be of the same kind."""
        if not isinstance(chunks, (AsyncIterable, Iterable)):
            raise TypeError(f"data must be str, bytes-like or an iterable of them, not {chunks!r}")
        core = self._core
        # One piece of lookahead, so that the last piece carries FIN (no empty closing frame).
        pending: Data | None = None
        first = True
        try:
            async for chunk in _aiter(chunks):
                if pending is not None:
                    self._write(core.send_fragment(pending, first, False))
                    first = False
                    if self._write_paused:
                        await self._drain()
                pending = chunk
            if pending is not None:
                self._write(core.send_fragment(pending, first, True))
        except BaseException:
            if not first and core.state == OPEN:
                # Half a message is on the wire: nothing else can follow it (section 5.4).
                self._fail(1011, "fragmented send interrupted")
            raise

    async def close(self, status: int = 1000, reason: str = "") -> None:
        """Close with the closing handshake: send Close(status, reason), wait (at most the close
        timeout) for the peer's Close and the end of the connection. Idempotent.

        ``status`` must be one that may be sent (1000-1003, 1007-1014, 3000-4999; or 1005 with
        no reason, which sends a Close without a status): else ``ValueError``. The reason must
        fit a control frame (123 bytes of UTF-8)."""
        self._check_thread()  # before send_close changes the protocol's state
        core = self._core
        if self._failure_deferred:
            self._fail_now()  # the violation's own close code goes out
        elif core.state == OPEN and not self._transport.is_closing():
            self._write_bytes(core.send_close(status, reason))
        self._start_closing()
        # _start_closing bounds this: the transport is aborted when close_timeout passes.
        await asyncio.shield(self._lost)

    async def ping(self, data: bytes | None = None) -> asyncio.Future[float]:
        """Send a Ping; return a future that resolves with the round-trip time (seconds) when
        the matching Pong arrives (it is cancelled if the connection closes first). Raises
        ``ConnectionClosed`` when closed, ``ValueError`` for data over 125 bytes."""
        if data is None:
            data = int(self._loop.time() * 1e6).to_bytes(8, "big")
        if self._ping_waiters is None:
            self._ping_waiters = {}
        waiter: asyncio.Future[float] = self._loop.create_future()
        self._write_bytes(self._core.send_ping(data))
        self._ping_waiters[bytes(data)] = (waiter, self._loop.time())
        return waiter

    async def pong(self, data: bytes = b"") -> None:
        """Send an unsolicited Pong (a unidirectional heartbeat, section 5.5.3)."""
        self._write_bytes(self._core.send_pong(data))

    def __repr__(self) -> str:
        side = "client" if self._core.is_client else "server"
        return f"<Websocket {side} peer={self._peer!r} state={self._core.state}>"

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def _large_payload_started(self) -> None:
        """A payload spans reads: if it is large, hand the transport a stand-in that reads
        into the message itself until it is complete. This class reads with data_received,
        which is cheaper per small message on uvloop, and uvloop reads into a protocol's own
        buffer only for protocols that are not ``asyncio.Protocol`` instances: the stand-in is
        not one. ``set_protocol`` makes the transport pick its read path again."""
        if self._reader.direct_buffer(DIRECT_READ_MIN) is None or self._transport.is_closing():
            return
        self._transport.set_protocol(_DirectReads(self))

    def _read_into_buffer(self) -> None:
        """Have the transport read through ``get_buffer``/``buffer_updated`` from now on."""
        transport = self._transport
        reading = transport.get_protocol()
        if transport.is_closing() or not (
            reading is self or (isinstance(reading, _DirectReads) and reading._ws is self)
        ):
            return
        self._switch_reads = False  # get_buffer reads a large payload into the message itself
        transport.set_protocol(_BufferedReads(self))

    def _handle_events(self, delivered: bool) -> None:
        """What receive_data produced besides messages: replies, pongs, failure, closing."""
        core = self._core
        if core.outgoing:
            self._write_bytes(core.data_to_send())
            if self._write_paused:
                # The peer makes us write (Pongs) faster than it reads: stop reading it until
                # our write buffer drains, or a Ping flood would grow memory without bound.
                self._pause_reading(PAUSE_WRITE)
        if core.pongs:
            self._pongs_received()
        if core.pending_failure is not None and not self._failure_deferred:
            if delivered or self._queue:
                # Let the application read (and answer) what came before the violation; its
                # next recv() fails the connection, or the close timeout does.
                self._failure_deferred = True
                self._pause_reading(PAUSE_FAILURE)
                self._close_timer = self._loop.call_later(self._close_timeout, self._fail_now)
            else:
                self._fail_now()
        elif core.state == CLOSED:
            self._closing_done()

    def eof_received(self) -> bool | None:
        self._core.receive_eof()
        self._end()
        return None  # let the transport close itself

    def connection_lost(self, exc: BaseException | None) -> None:
        self._core.receive_eof()
        self._end()
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        if not self._lost.done():
            self._lost.set_result(None)
        self._release_waiters()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._skipped_by_broadcast = False
        self._resume_reading(PAUSE_WRITE)
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # -- internals -----------------------------------------------------------------------------

    def _fail_now(self) -> None:
        """Send the Close for the pending protocol violation and close."""
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self._failure_deferred = False
        core = self._core
        core.fail_pending()
        if core.outgoing:
            self._write_bytes(core.data_to_send())
        self._closing_done()

    def _closing_done(self) -> None:
        """The protocol is CLOSED: by a Close exchange, or by a failure (the Close that says
        why is written). Ends the TCP connection as section 7.1.1 asks, cleanly whenever the
        peer lets it, so that the peer always reads our Close:

        - a server closes once the peer's Close is in; after a failure the reader reads past
          whatever the peer still sends until its Close reply arrives, and on a plain socket the
          FIN goes out at once, after our Close, while reading goes on to the peer's end of the
          stream (closing a socket with unread data would reset it and could destroy the Close);
        - a client waits for the server to close;
        - ``close_timeout`` after closing started, whatever is left is aborted.

        Called again as the peer's Close arrives; only the first call does the rest."""
        core = self._core
        transport = self._transport
        if not self._eof:
            self._end()
            if core.failure is not None:
                code, reason = core.failure
                logger.info("failing connection with %s: %d %s", self._peer, code, reason)
            # Nothing more is delivered (the reader reads past it): read whatever paused
            # reading, to see the peer's Close and the end of the stream.
            self._resume_reading(PAUSE_QUEUE | PAUSE_WRITE | PAUSE_FAILURE)
            self._start_closing()
            if core.failure is not None and not core.is_client and transport.can_write_eof():
                self._write_held()
                transport.write_eof()
                return  # the peer's end of the stream closes the transport
        if (
            not core.is_client
            and core.close_received
            and not transport.is_closing()
            and not (core.failure is not None and transport.can_write_eof())
        ):
            transport.close()

    def _start_closing(self) -> None:
        """The connection stopped being open (a Close sent or received, or a failure): release
        every waiting send, flush and ping now with their documented result, and abort the
        transport if the connection has not ended ``close_timeout`` from now (a dead peer
        never drains a write buffer nor answers a Close)."""
        if self._closing:
            return
        self._closing = True
        self._failure_deferred = False
        self._release_waiters()
        if self._close_timer is not None:
            self._close_timer.cancel()
        self._close_timer = self._loop.call_later(self._close_timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        self._close_timer = None
        logger.info(
            "closing handshake with %s did not end within close_timeout (%s s); aborting",
            self._peer,
            self._close_timeout,
        )
        self._transport.abort()

    def _release_waiters(self) -> None:
        """Wake every send()/flush waiting for the write buffer (ConnectionClosed) and cancel
        every ping() waiting for its Pong."""
        if self._drain_waiters:
            error = self._closed_error()
            for waiter in self._drain_waiters:
                if not waiter.done():
                    waiter.set_exception(error)
            self._drain_waiters.clear()
        if self._ping_waiters:
            for fut, _ in self._ping_waiters.values():
                fut.cancel()
            self._ping_waiters = None

    def _closed_error(self) -> ConnectionClosed:
        return ConnectionClosed(self._core.close_code, self._core.close_reason)

    async def _drain(self) -> None:
        if self._closing or self._lost.done():
            raise self._closed_error()
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def _pongs_received(self) -> None:
        pongs = self._core.pongs
        if self._keepalive_payload is not None and self._keepalive_payload in pongs:
            self._keepalive_answered()
        waiters = self._ping_waiters
        if waiters:
            now = self._loop.time()
            for payload in pongs:
                entry = waiters.pop(payload, None)
                if entry is not None and not entry[0].done():
                    entry[0].set_result(now - entry[1])
        pongs.clear()

    # -- keepalive -----------------------------------------------------------------------------

    def _keepalive_ping(self) -> None:
        if self._core.state != OPEN:
            return
        payload = os.urandom(4)
        self._keepalive_payload = payload
        self._write_bytes(self._core.send_ping(payload))
        timeout = self._settings.ping_timeout
        self._keepalive = (
            self._loop.call_later(timeout, self._keepalive_expired) if timeout is not None else None
        )

    def _keepalive_answered(self) -> None:
        self._keepalive_payload = None
        if self._keepalive is not None:
            self._keepalive.cancel()
        interval = self._settings.ping_interval
        if interval is not None and self._core.state == OPEN:
            self._keepalive = self._loop.call_later(interval, self._keepalive_ping)

    def _keepalive_expired(self) -> None:
        self._keepalive = None
        core = self._core
        if core.state == CLOSED:
            return
        logger.info("no pong from %s within ping_timeout; closing with 1011", self._peer)
        self._fail(1011, "keepalive ping timeout")

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection from this side (section 7.1.7) for a reason of its own."""
        core = self._core
        core.fail(code, reason)
        if core.outgoing:
            self._write_bytes(core.data_to_send())
        self._closing_done()


class Settings:
    """The per-connection limits and timers that ``connect`` and ``start_server`` share.

    ``max_size``: largest message accepted (bytes; None: no limit). ``max_queue``: received
    messages buffered before reading stops. ``write_limit``: the transport's write-buffer
    high-water mark (None: asyncio's default, 64 KiB). ``close_timeout``: seconds the closing
    handshake may take. ``ping_interval`` / ``ping_timeout``: send a Ping that often and fail
    the connection with 1011 when its Pong does not come in time (None disables).
    """

    __slots__ = (
        "max_size",
        "max_queue",
        "write_limit",
        "close_timeout",
        "ping_interval",
        "ping_timeout",
    )

    def __init__(
        self,
        max_size: int | None = MAX_SIZE,
        max_queue: int = MAX_QUEUE,
        write_limit: int | None = None,
        close_timeout: float = CLOSE_TIMEOUT,
        ping_interval: float | None = PING_INTERVAL,
        ping_timeout: float | None = PING_TIMEOUT,
    ) -> None:
        if max_size is not None and max_size < 0:
            raise ValueError("max_size must be positive or None")
        self.max_size = max_size
        self.max_queue = max_queue
        self.write_limit = write_limit
        self.close_timeout = close_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout


class _BufferedWebsocket(Websocket, asyncio.BufferedProtocol):
    """The same connection, read through ``get_buffer``/``buffer_updated``: the faster way on
    asyncio's own transports. uvloop's read path is cheaper with ``data_received``."""

    __slots__ = ()


class _StandIn(asyncio.BaseProtocol):
    """A protocol the transport talks to in a connection's place for reading; every other
    callback goes to the connection."""

    __slots__ = ("_ws",)

    def __init__(self, ws: Websocket) -> None:
        self._ws = ws

    def eof_received(self) -> bool | None:
        return self._ws.eof_received()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._ws.connection_lost(exc)

    def pause_writing(self) -> None:
        self._ws.pause_writing()

    def resume_writing(self) -> None:
        self._ws.resume_writing()


class _DirectReads(_StandIn, asyncio.BufferedProtocol):
    """The transport's protocol while a large payload is read straight into the message (see
    ``Websocket._large_payload_started``): it reads through the connection's own
    ``get_buffer``/``buffer_updated`` and gives the transport back to the connection once
    the payload is complete."""

    __slots__ = ()

    def get_buffer(self, sizehint: int) -> Any:
        return self._ws.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        ws = self._ws
        ws.buffer_updated(nbytes)
        transport = ws._transport
        if ws._reader.direct_buffer(1) is None and transport.get_protocol() is self:
            transport.set_protocol(ws)


class _BufferedReads(_StandIn):
    """The transport's protocol for a connection that reads with data_received where the
    transport reads faster into a buffer (see ``Websocket._read_into_buffer``). It is not an
    ``asyncio.Protocol`` (uvloop reads into a buffer only for those that are not) and holds
    the connection's own bound ``get_buffer`` and ``buffer_updated``, which the transport looks
    up once: no call goes through this object on the way."""

    __slots__ = ("get_buffer", "buffer_updated")

    def __init__(self, ws: Websocket) -> None:
        super().__init__(ws)
        self.get_buffer = ws.get_buffer
        self.buffer_updated = ws.buffer_updated


def _makes_plain_futures(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop.create_future()`` is asyncio's or uvloop's own, which return
    ``asyncio.Future(loop=loop)``: then the pump may make that future itself."""
    create = type(loop).create_future
    if create is asyncio.BaseEventLoop.create_future:
        return True
    return any(
        base.__module__ == "uvloop.loop" and base.__name__ == "Loop"
        and create is base.__dict__.get("create_future")
        for base in type(loop).__mro__
    )


def websocket_class(loop: asyncio.AbstractEventLoop, transport: Any = None) -> type[Websocket]:
    """The ``Websocket`` class that reads fastest on ``transport`` (on ``loop``): aiofastnet's
    transports, like asyncio's, read fastest into a buffer; uvloop's with data_received."""
    if type(transport).__module__.startswith("aiofastnet"):
        return _BufferedWebsocket
    return Websocket if type(loop).__module__.startswith("uvloop") else _BufferedWebsocket


def broadcast(connections: Iterable[Websocket], message: Data) -> int:
    """Send ``message`` to every open connection in ``connections`` without waiting.

    The frame is built once (for servers; clients mask each copy). A connection whose write
    buffer is above its high-water mark (a slow reader) is skipped, so that one slow client
    cannot stall the rest or make memory grow; a warning is logged for it (once until its
    buffer drains). Returns the number of connections the message was written to.
    """
    frame: Outgoing | None = None
    sent = 0
    for ws in connections:
        core = ws._core
        if core.state != OPEN or core.fragmenting is not None:
            continue  # closed, or another message's fragments are on their way
        if ws._write_paused:
            if not ws._skipped_by_broadcast:
                # Once per slow spell, not once per message: a slow reader under a busy
                # broadcast would otherwise flood the log.
                ws._skipped_by_broadcast = True
                logger.warning("broadcast skips %s while its write buffer is full", ws._peer)
            continue
        if core.is_client or core.deflate is not None:
            ws._check_thread()  # before send_data advances the compressor
            out = core.send_data(message)
        else:
            if frame is None:
                frame = core.send_data(message)
            out = frame
        ws._write(out)
        sent += 1
    return sent


async def _aiter(chunks: Iterable[Data] | AsyncIterable[Data]) -> AsyncIterator[Data]:
    if isinstance(chunks, AsyncIterable):
        async for chunk in chunks:
            yield chunk
    else:
        for chunk in chunks:
            yield chunk


_READ_BUFFER_SIZE = 262144  # asyncio's own largest read
_thread_state = threading.local()


def _read_buffer() -> memoryview:
    """This thread's read buffer, shared by its connections (see ``Websocket.get_buffer``)."""
    buf: memoryview | None = getattr(_thread_state, "read_buffer", None)
    if buf is None:
        buf = _thread_state.read_buffer = memoryview(bytearray(_READ_BUFFER_SIZE))
    return buf


def _high_water(transport: Any) -> int:
    try:
        return int(transport.get_write_buffer_limits()[1])
    except (AttributeError, NotImplementedError):
        return 65536
