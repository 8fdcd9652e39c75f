"""Publish/subscribe over WebSocket connections: ``LocalFanout`` for one process, ``RedisFanout``
for every process and machine that shares a Redis server.

This module holds the two hubs, their shared bookkeeping of which connection listens to which
channel (``_Hub``), the statistics they keep (``FanoutStats``) and ``FanoutUnavailable``. Both
hubs hand a message to their local subscribers with ``broadcast()``, so a subscriber whose write
buffer is full is skipped (and counted), never waited for. ``RedisFanout`` talks to Redis through
redis-py's asyncio client, imported only when a ``RedisFanout`` is created (the ``asyncws[redis]``
extra). It must not touch the protocol core, frames or connections' internals: it uses the public
``Websocket`` (``open``, ``closed``) and ``broadcast()`` only.

Delivery is at most once: a subscriber misses what is published while it is skipped as slow, and,
with ``RedisFanout``, what is published while its process is disconnected from Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .connection import Websocket, broadcast
from .protocol import Data  # what publish() takes: as send()

__all__ = ["FanoutStats", "FanoutUnavailable", "LocalFanout", "RedisFanout"]

logger = logging.getLogger("asyncws.fanout")

# How a message's type travels in a Redis payload: one byte in front of the message.
_TEXT = b"t"
_BINARY = b"b"

DEFAULT_PREFIX = "asyncws:"
DEFAULT_TIMEOUT = 5.0  # seconds to connect to Redis, and for a PUBLISH to be answered
DEFAULT_KEEPALIVE = 15.0  # seconds of silence before the subscriber pings Redis
DEFAULT_BACKOFF = (0.1, 10.0)  # first and longest wait between reconnection attempts


class FanoutUnavailable(ConnectionError):
    """``publish()`` could not hand the message to Redis (Redis is down or unreachable).

    Nothing was published; the subscriber side reconnects by itself, so a later ``publish()``
    may succeed."""


@dataclass(frozen=True)
class FanoutStats:
    """A snapshot of a hub's counters (``hub.stats()``)."""

    channels: int
    """Channels at least one local connection listens to."""
    subscribers: int
    """Local subscriptions: (connection, channel) pairs."""
    published: int
    """Messages this hub has published (on any channel, to every process)."""
    delivered: int
    """Messages written to local connections (one per connection reached)."""
    skipped: int
    """Times a local subscriber was skipped because its write buffer was full."""
    reconnects: int
    """Times the subscriber connection to Redis was re-established (0 for ``LocalFanout``)."""


class _Hub:
    """Which local connection listens to which channel, and delivery to them."""

    def __init__(self) -> None:
        self._channels: dict[str, set[Websocket]] = {}
        self._listening: dict[Websocket, set[str]] = {}
        self._running = False
        self._published = 0
        self._delivered = 0
        self._skipped = 0
        self._reconnects = 0

    # -- the interface -------------------------------------------------------------------------

    def subscribe(self, ws: Websocket, channel: str) -> asyncio.Future[None]:
        """Send the messages published on ``channel`` to ``ws`` from now on, until
        ``unsubscribe()`` or until ``ws`` closes.

        Returns a future done once the hub receives ``channel`` (at once for ``LocalFanout``;
        once Redis has confirmed the subscription for ``RedisFanout``): await it when a message
        published right after must reach ``ws``; ignoring it is fine."""
        self._check_running()
        subscribers = self._channels.get(channel)
        if subscribers is None:
            subscribers = self._channels[channel] = set()
            self._channel_opened(channel)
        subscribers.add(ws)
        channels = self._listening.get(ws)
        if channels is None:
            channels = self._listening[ws] = set()
            ws.closed.add_done_callback(lambda _: self._forget(ws))
        channels.add(channel)
        return self._when_listening(channel)

    def unsubscribe(self, ws: Websocket, channel: str) -> None:
        """Stop sending ``channel``'s messages to ``ws`` (nothing happens if it was not
        subscribed)."""
        channels = self._listening.get(ws)
        if channels is not None:
            channels.discard(channel)
        subscribers = self._channels.get(channel)
        if subscribers is None or ws not in subscribers:
            return
        subscribers.discard(ws)
        if not subscribers:
            del self._channels[channel]
            self._channel_closed(channel)

    async def publish(self, channel: str, message: Data) -> None:
        """Send ``message`` to every connection subscribed to ``channel``: a ``str`` arrives as
        a text message, bytes-like data as a binary message."""
        self._check_running()
        if not isinstance(message, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"message must be str or bytes-like, not {type(message).__name__}")
        await self._publish(channel, message)
        self._published += 1

    def stats(self) -> FanoutStats:
        """The hub's counters now."""
        return FanoutStats(
            channels=len(self._channels),
            subscribers=sum(len(s) for s in self._channels.values()),
            published=self._published,
            delivered=self._delivered,
            skipped=self._skipped,
            reconnects=self._reconnects,
        )

    # -- for the subclasses --------------------------------------------------------------------

    def _deliver(self, channel: str, message: Data) -> None:
        """Write ``message`` to the local subscribers of ``channel`` (``broadcast()``: those
        whose write buffer is full are skipped)."""
        subscribers = self._channels.get(channel)
        if not subscribers:
            return
        reachable = sum(1 for ws in subscribers if ws.open)
        sent = broadcast(subscribers, message)
        self._delivered += sent
        self._skipped += reachable - sent

    def _forget(self, ws: Websocket) -> None:
        """``ws`` closed: its subscriptions end."""
        for channel in self._listening.pop(ws, ()):
            subscribers = self._channels.get(channel)
            if subscribers is None:
                continue
            subscribers.discard(ws)
            if not subscribers:
                del self._channels[channel]
                self._channel_closed(channel)

    def _check_running(self) -> None:
        if not self._running:
            raise RuntimeError(f"{type(self).__name__} is not running: use it in 'async with'")

    def _channel_opened(self, channel: str) -> None:
        """The first local connection listens to ``channel``."""

    def _channel_closed(self, channel: str) -> None:
        """The last local connection stopped listening to ``channel``."""

    def _when_listening(self, channel: str) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def _publish(self, channel: str, message: Data) -> None:
        raise NotImplementedError


class LocalFanout(_Hub):
    """Publish/subscribe between the connections of this process; no dependency.

    ``async with LocalFanout() as hub:`` then ``hub.subscribe(ws, channel)``,
    ``hub.unsubscribe(ws, channel)``, ``await hub.publish(channel, message)`` and
    ``hub.stats()``. ``publish`` delivers before it returns."""

    async def __aenter__(self) -> LocalFanout:
        self._running = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._running = False

    async def _publish(self, channel: str, message: Data) -> None:
        self._deliver(channel, message)


def _redis_modules() -> tuple[Any, Any, Any, Any]:
    try:
        import redis.asyncio as redis_asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError
    except ImportError as exc:
        raise ImportError(
            "RedisFanout needs redis-py (redis.asyncio): pip install asyncws[redis]"
        ) from exc
    return redis_asyncio, Retry, NoBackoff, RedisError


def _without_password(url: str) -> str:
    """``url`` as it may appear in a log line or an error: no user name or password."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class RedisFanout(_Hub):
    """Publish/subscribe between the connections of every process connected to one Redis.

    ``url`` is a redis-py URL: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://``
    (TLS) or ``unix:///path/to/redis.sock``. Channel ``name`` is the Redis channel
    ``prefix + name``. Each process holds one subscriber connection, subscribed to a channel
    only while a local connection listens to it, and a connection pool for ``PUBLISH``.

    ``publish`` returns once Redis has taken the message; local subscribers get it back from
    Redis like every other process's, so the messages of one publisher (one task awaiting
    each ``publish``) arrive in the order published. While Redis is unreachable ``publish``
    raises ``FanoutUnavailable``, and the subscriber connection is retried with exponential
    backoff (``backoff`` = first and longest wait, in seconds), resubscribing every channel
    still listened to; a warning says which channels may have missed messages and for how long.
    ``timeout`` bounds connecting and each ``PUBLISH``; ``keepalive`` is the silence after which
    the subscriber pings Redis (twice that without an answer and it reconnects). Other keywords
    go to ``redis.asyncio.Redis.from_url``, e.g. ``ssl_ca_certs="ca.pem"`` for ``rediss://``
    with a private authority, or ``username=``/``password=`` kept out of the URL.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        keepalive: float = DEFAULT_KEEPALIVE,
        backoff: tuple[float, float] = DEFAULT_BACKOFF,
        **redis_options: Any,
    ) -> None:
        super().__init__()
        redis_asyncio, retry, no_backoff, redis_error = _redis_modules()
        self._redis_asyncio = redis_asyncio
        # Errors reach this class at once (no retries inside redis-py): it decides what to do.
        self._no_retry = retry(no_backoff(), 0)
        self._redis_error: type[Exception] = redis_error
        self._url = url
        self._where = _without_password(url)
        self._prefix = prefix
        self._timeout = timeout
        self._keepalive = keepalive
        self._backoff = backoff
        self._redis_options = redis_options
        self._publisher: Any = None
        self._listener: Any = None
        self._task: asyncio.Task[None] | None = None
        # The current subscriber session: what was asked of Redis, and what it confirmed.
        self._requested: set[str] = set()
        self._confirmed: set[str] = set()
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._changed: asyncio.Event | None = None

    async def __aenter__(self) -> RedisFanout:
        # Two clients: PUBLISH answers are bounded by ``timeout``; the subscriber connection
        # waits for messages without a read timeout (its keepalive finds a dead peer).
        options: dict[str, Any] = {
            **self._redis_options,
            "socket_connect_timeout": self._timeout,
            "retry": self._no_retry,
        }
        self._publisher = self._redis_asyncio.Redis.from_url(
            self._url, socket_timeout=self._timeout, **options
        )
        self._listener = self._redis_asyncio.Redis.from_url(self._url, **options)
        self._changed = asyncio.Event()
        self._running = True
        self._task = asyncio.get_running_loop().create_task(self._subscriber())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._running = False
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for waiter in self._waiting.values():  # released, not cancelled: no error in handlers
            if not waiter.done():
                waiter.set_result(None)
        self._waiting.clear()
        for client in (self._publisher, self._listener):
            if client is not None:
                await client.aclose()
        self._publisher = self._listener = None

    # -- publishing ----------------------------------------------------------------------------

    async def _publish(self, channel: str, message: Data) -> None:
        if isinstance(message, str):
            payload = _TEXT + message.encode("utf-8")
        else:
            payload = _BINARY + bytes(message)
        try:
            await self._publisher.publish(self._prefix + channel, payload)
        except (self._redis_error, OSError) as exc:
            raise FanoutUnavailable(
                f"cannot publish on {channel!r}: Redis at {self._where} is unavailable "
                f"({_describe(exc)})"
            ) from exc

    # -- subscriptions -------------------------------------------------------------------------

    def _channel_opened(self, channel: str) -> None:
        assert self._changed is not None
        self._changed.set()

    def _channel_closed(self, channel: str) -> None:
        assert self._changed is not None
        self._confirmed.discard(channel)
        waiter = self._waiting.pop(channel, None)
        if waiter is not None and not waiter.done():  # nobody is left to wait for it
            waiter.set_result(None)
        self._changed.set()

    def _when_listening(self, channel: str) -> asyncio.Future[None]:
        if channel in self._confirmed:
            return super()._when_listening(channel)
        waiter = self._waiting.get(channel)
        if waiter is None:
            waiter = self._waiting[channel] = asyncio.get_running_loop().create_future()
        return waiter

    # -- the subscriber connection -------------------------------------------------------------

    async def _subscriber(self) -> None:
        """Keep one subscriber connection, reconnecting with backoff, until cancelled."""
        loop = asyncio.get_running_loop()
        delay = self._backoff[0]
        lost_at: float | None = None  # wall-clock time the connection was lost
        lost_log_said = False
        while True:
            connected = False
            started = loop.time()
            try:
                pubsub = self._listener.pubsub()
                try:
                    # Bounded: a frozen server accepts TCP connections but never answers.
                    await asyncio.wait_for(pubsub.connect(), self._timeout)
                    connected = True
                    if lost_at is not None:
                        self._reconnects += 1
                        self._say_missed(lost_at)
                        lost_at = None
                    await self._session(pubsub)
                finally:
                    self._requested.clear()
                    self._confirmed.clear()
                    await pubsub.aclose()
            except asyncio.CancelledError:
                raise
            except (self._redis_error, OSError, asyncio.TimeoutError) as exc:
                if connected or lost_at is None:
                    lost_at = time.time()
                    lost_log_said = False
                if not lost_log_said:
                    logger.warning(
                        "no subscriber connection to Redis at %s (%s): messages published "
                        "until it is back are missed; reconnecting with backoff",
                        self._where,
                        _describe(exc),
                    )
                    lost_log_said = True
                else:
                    logger.info("Redis at %s still unavailable (%s)", self._where, _describe(exc))
            except Exception:  # a bug, here or in redis-py: say so, and keep the hub alive
                logger.exception("the subscriber connection to Redis at %s failed", self._where)
                if connected or lost_at is None:
                    lost_at = time.time()
            # The backoff starts again after a session that lasted, not after one that failed
            # at once (e.g. refused SUBSCRIBE): that would reconnect and log in a tight loop.
            if connected and loop.time() - started > self._backoff[1]:
                delay = self._backoff[0]
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff[1])

    def _say_missed(self, lost_at: float) -> None:
        channels = sorted(self._channels)
        shown = ", ".join(repr(c) for c in channels[:10])
        if len(channels) > 10:
            shown += f" and {len(channels) - 10} more"
        logger.warning(
            "reconnected to Redis at %s after %.1f s: messages published in between "
            "(since %s) on the %d channel(s) listened to here, if any, were missed: %s",
            self._where,
            time.time() - lost_at,
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lost_at)),
            len(channels),
            shown or "none",
        )

    async def _session(self, pubsub: Any) -> None:
        """Run one subscriber connection until it fails: one task reads, one sends
        (UN)SUBSCRIBE commands; the first error ends both."""
        assert self._changed is not None
        self._changed.set()  # subscribe every channel listened to
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._read(pubsub)), loop.create_task(self._reconcile(pubsub))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()  # raises the error that ended the session
        raise ConnectionError("the subscriber connection ended")  # not reached: both loop

    async def _reconcile(self, pubsub: Any) -> None:
        """Make Redis's subscriptions follow the channels listened to here."""
        changed = self._changed
        assert changed is not None
        while True:
            await changed.wait()
            changed.clear()
            wanted = set(self._channels)
            added = wanted - self._requested
            removed = self._requested - wanted
            if added:
                self._requested |= added
                await pubsub.subscribe(*(self._prefix + c for c in sorted(added)))
            if removed:
                self._requested -= removed
                await pubsub.unsubscribe(*(self._prefix + c for c in sorted(removed)))

    async def _read(self, pubsub: Any) -> None:
        """Receive from the subscriber connection: messages, subscription confirmations and
        keepalive answers. Raises when the connection fails or stops answering."""
        prefix = self._prefix.encode("utf-8")
        pinged = False
        while True:
            item = await pubsub.get_message(timeout=self._keepalive)
            if item is None:
                if pinged:
                    raise ConnectionError(f"no answer to PING within {self._keepalive} s")
                await pubsub.ping()
                pinged = True
                continue
            pinged = False
            kind = item["type"]
            if kind == "message":
                self._receive(item["channel"][len(prefix) :], item["data"])
            elif kind == "subscribe":
                self._subscribed(item["channel"][len(prefix) :].decode("utf-8"))

    def _subscribed(self, channel: str) -> None:
        if channel in self._requested and channel in self._channels:
            self._confirmed.add(channel)
            waiter = self._waiting.pop(channel, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _receive(self, raw_channel: bytes, payload: bytes) -> None:
        channel = raw_channel.decode("utf-8", "replace")
        kind = payload[:1]
        if kind == _TEXT:
            try:
                message: Data = payload[1:].decode("utf-8")
            except UnicodeDecodeError:
                logger.warning("dropped a text message on %r: not UTF-8", channel)
                return
        elif kind == _BINARY:
            message = payload[1:]
        else:
            logger.warning("dropped a message on %r: not published by asyncws.fanout", channel)
            return
        self._deliver(channel, message)
