"""asyncws.fanout: LocalFanout and RedisFanout, against real connections and a real redis-server.

The tests of one process run on both hubs (parametrized): text and binary kept, each message
delivered once and in order, unsubscribe and close, a slow reader skipped while the others get
everything. The multi-process tests run ``python -m asyncws serve --chat --workers 2 --redis URL``
(clients on each worker) and kill and restart Redis mid-stream. redis-server is Debian's, started
on 127.0.0.1 on a free port (tests/_redis.py); where it is missing these tests skip, except on CI.
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Callable, Union

import pytest

import asyncws
from asyncws import cli
from asyncws.fanout import FanoutUnavailable, LocalFanout, RedisFanout

from ._redis import RedisServer, free_port, redis_server_binary
from .conftest import run
from .test_cli import ENV, read_line

TIMEOUT = 20.0  # seconds: a hang guard for each test's event loop, never a speed assertion
WAIT = 10.0  # seconds for one expected message
Hub = Union[LocalFanout, RedisFanout]


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(params=["local", "redis"])
def make_hub(request: pytest.FixtureRequest) -> Callable[[], Hub]:
    """A new hub of either kind (not started: ``async with make_hub() as hub``)."""
    if request.param == "local":
        return LocalFanout
    server: RedisServer = request.getfixturevalue("redis_server")
    return lambda: RedisFanout(server.url, backoff=(0.05, 0.5))


async def subscriber(hub: Hub, ws: asyncws.Websocket) -> None:
    """Server handler: subscribe to the request path, say so, and obey "leave" and "ping"."""
    assert ws.request is not None
    channel = ws.request.path
    await hub.subscribe(ws, channel)
    await ws.send("subscribed")
    async for message in ws:
        if message == "leave":
            hub.unsubscribe(ws, channel)
            await ws.send("left")
        elif message == "ping":
            await ws.send("pong")


@asynccontextmanager
async def serving(hub: Hub, **kwds: Any) -> AsyncIterator[str]:
    """An asyncws server whose connections subscribe to their path; yields ws://HOST:PORT."""
    server = await asyncws.start_server(lambda ws: subscriber(hub, ws), "127.0.0.1", 0, **kwds)
    async with server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def join(url: str, **kwds: Any) -> asyncws.Websocket:
    ws = await asyncws.connect(url, **kwds)
    assert await asyncio.wait_for(ws.recv(), WAIT) == "subscribed"
    return ws


async def receive(ws: asyncws.Websocket, count: int) -> list[str | bytes]:
    return [await asyncio.wait_for(ws.recv(), WAIT) for _ in range(count)]


def mixed(n: int, tag: str) -> list[str | bytes]:
    """Text and binary messages, including non-ASCII text and bytes that are not UTF-8."""
    return [f"{tag} {i} é" if i % 2 else f"{tag} {i}".encode() + b"\xff\x00" for i in range(n)]


# -- one process: both hubs ----------------------------------------------------------------------


def test_delivers_text_and_binary_once_in_order(make_hub: Callable[[], Hub]) -> None:
    async def main() -> None:
        async with make_hub() as hub, serving(hub) as url:
            room = [await join(url + "/room") for _ in range(3)]
            other = await join(url + "/other")
            sent = mixed(40, "m")
            for message in sent:
                await hub.publish("/room", message)
            await hub.publish("/other", b"elsewhere")
            await hub.publish("/room", "end")  # right after the 40: nothing was sent twice
            for ws in room:
                got = await receive(ws, 41)
                assert got == [*sent, "end"]
                assert [type(m) for m in got] == [type(m) for m in [*sent, "end"]]
            assert await receive(other, 1) == [b"elsewhere"]
            stats = hub.stats()
            assert (stats.channels, stats.subscribers) == (2, 4)
            assert (stats.published, stats.delivered, stats.skipped) == (42, 3 * 41 + 1, 0)
            for ws in [*room, other]:
                await ws.close()

    run(main(), TIMEOUT)


def test_unsubscribe_and_close_end_subscriptions(
    make_hub: Callable[[], Hub], request: pytest.FixtureRequest
) -> None:
    async def redis_subscribers(channel: str) -> int:
        """How many connections Redis has subscribed to ``channel`` (RedisFanout only)."""
        import redis.asyncio

        server: RedisServer = request.getfixturevalue("redis_server")
        client = redis.asyncio.Redis.from_url(server.url)
        try:
            [(_, count)] = await client.pubsub_numsub(f"asyncws:{channel}")
            return int(count)
        finally:
            await client.aclose()

    async def main() -> None:
        async with make_hub() as hub, serving(hub) as url:
            is_redis = isinstance(hub, RedisFanout)
            alice, bob = await join(url + "/room"), await join(url + "/room")
            if is_redis:  # one subscriber connection for the process, however many websockets
                assert await redis_subscribers("/room") == 1
            await alice.send("leave")
            assert await receive(alice, 1) == ["left"]
            await hub.publish("/room", "after alice left")
            assert await receive(bob, 1) == ["after alice left"]
            # Bob got it, so the same delivery would have written it to Alice before her pong.
            await alice.send("ping")
            assert await receive(alice, 1) == ["pong"]
            assert (hub.stats().channels, hub.stats().subscribers) == (1, 1)

            await bob.close()
            for _ in range(200):  # the close reaches the server, then the hub
                if hub.stats().subscribers == 0:
                    break
                await asyncio.sleep(0.01)
            assert (hub.stats().channels, hub.stats().subscribers) == (0, 0)
            await hub.publish("/room", "nobody listens")
            assert hub.stats().delivered == 1
            if is_redis:  # the Redis channel is unsubscribed once nobody listens here
                for _ in range(200):
                    if await redis_subscribers("/room") == 0:
                        break
                    await asyncio.sleep(0.01)
                assert await redis_subscribers("/room") == 0
            await alice.close()

    run(main(), TIMEOUT)


def test_slow_reader_is_skipped_and_the_others_get_everything(
    make_hub: Callable[[], Hub],
) -> None:
    size = 256 * 1024
    most = 400  # publishes at most: buffers on loopback fill long before

    async def main() -> None:
        async with make_hub() as hub, serving(hub, write_limit=size) as url:
            fast = [await join(url + "/feed", max_size=2 * size) for _ in range(2)]
            slow = await join(url + "/feed", max_size=2 * size, max_queue=1)  # never reads
            published = 0
            while published < most:
                message = published.to_bytes(4, "big") * (size // 4)
                await hub.publish("/feed", message)
                published += 1
                for ws in fast:  # in step with the fast readers: the slow one falls behind
                    assert await receive(ws, 1) == [message]
                if hub.stats().skipped >= 3:
                    break
            stats = hub.stats()
            assert stats.skipped >= 3, f"the slow reader was never skipped in {published}"
            assert stats.delivered + stats.skipped == 3 * published
            assert stats.delivered >= 2 * published
            slow.writer.abort()
            for ws in fast:
                await ws.close()

    run(main(), 120.0)


# -- API edges -----------------------------------------------------------------------------------


def test_refuses_what_it_cannot_do() -> None:
    async def main() -> None:
        hub = LocalFanout()
        with pytest.raises(RuntimeError, match="async with"):
            await hub.publish("c", "not started")
        async with hub:
            with pytest.raises(TypeError):
                await hub.publish("c", 42)  # type: ignore[arg-type]
            await hub.publish("c", "nobody listens")
            assert hub.stats().published == 1

    run(main(), TIMEOUT)


def test_redis_fanout_without_redis_py_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)  # what a missing package looks like
    with pytest.raises(ImportError, match=r"pip install asyncws\[redis\]"):
        RedisFanout("redis://127.0.0.1:1")


def test_publish_while_redis_is_down_raises(tmp_path: Path) -> None:
    async def main() -> None:
        async with RedisFanout(f"redis://:secret@127.0.0.1:{free_port()}", timeout=2.0) as hub:
            with pytest.raises(FanoutUnavailable) as raised:
                await hub.publish("c", "lost")
            assert "secret" not in str(raised.value)
            assert hub.stats().published == 0

    redis_server_binary()  # the same environment as the other Redis tests
    run(main(), TIMEOUT)


def test_rediss_and_unix_urls(tmp_path: Path) -> None:
    """``rediss://`` (TLS, a private CA given through a redis-py keyword) and ``unix://``: two
    hubs on one Redis, each reaching the other's subscribers."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(files[0]))
    cert.private_key_pem.write_to_path(str(files[1]))
    ca.cert_pem.write_to_path(str(files[2]))
    redis = RedisServer(redis_server_binary(), tmp_path, tls=files)

    async def main() -> None:
        tls = RedisFanout(redis.tls_url, ssl_ca_certs=str(files[2]))
        unix = RedisFanout(redis.unix_url)
        async with tls, unix, serving(tls) as tls_url, serving(unix) as unix_url:
            over_tls, over_unix = await join(tls_url + "/c"), await join(unix_url + "/c")
            await tls.publish("/c", "from tls")
            await unix.publish("/c", b"from unix")
            for ws in (over_tls, over_unix):
                assert await receive(ws, 2) == ["from tls", b"from unix"]
                await ws.close()

    with redis:
        run(main(), TIMEOUT)


def test_frozen_redis_is_found_by_the_keepalive(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis that stops answering (SIGSTOP) without closing its connections: publish fails
    within ``timeout``, the keepalive drops the subscriber connection, and once Redis answers
    again the channel is resubscribed and delivery resumes."""
    redis = RedisServer(redis_server_binary(), tmp_path)

    async def main() -> None:
        assert redis.process is not None
        hub = RedisFanout(redis.url, keepalive=0.3, timeout=1.0, backoff=(0.05, 0.3))
        async with hub, serving(hub) as url:
            ws = await join(url + "/feed")
            await hub.publish("/feed", "before")
            assert await receive(ws, 1) == ["before"]
            redis.process.send_signal(signal.SIGSTOP)
            try:
                with pytest.raises(FanoutUnavailable):
                    await hub.publish("/feed", "frozen")
                await asyncio.sleep(1.0)  # > 2 x keepalive: the subscriber gave up on it
            finally:
                redis.process.send_signal(signal.SIGCONT)
            for _ in range(100):  # until the subscriber is back and a probe gets through
                await hub.publish("/feed", "probe")
                try:
                    assert await asyncio.wait_for(ws.recv(), 0.2) == "probe"
                    break
                except asyncio.TimeoutError:
                    pass
            await hub.publish("/feed", "after")
            [message] = await receive(ws, 1)
            while message == "probe":  # probes still on their way
                [message] = await receive(ws, 1)
            assert message == "after"
            assert hub.stats().reconnects == 1
            await ws.close()

    with caplog.at_level("WARNING", logger="asyncws.fanout"), redis:
        run(main(), TIMEOUT)
    assert any("no answer to PING" in r.getMessage() for r in caplog.records)
    assert any("were missed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--echo", "--redis", "redis://127.0.0.1", "127.0.0.1", "8000"],
        ["serve", "--chat", "--workers", "2", "127.0.0.1", "8000"],  # rooms need --redis
        ["serve", "--echo", "--workers", "2", "127.0.0.1", "0"],
        ["serve", "--echo", "--workers", "0", "127.0.0.1", "8000"],
    ],
)
def test_serve_refuses_worker_options_that_cannot_work(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc_info:
        cli.main(argv)
    assert exc_info.value.code == 2
    assert "error:" in capsys.readouterr().err


# -- several worker processes over Redis ---------------------------------------------------------

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="--workers forks")


@contextmanager
def chat_workers(redis_url: str, port: int) -> Iterator[subprocess.Popen[str]]:
    """``python -m asyncws serve --chat --workers 2 --redis URL`` on 127.0.0.1:PORT."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "asyncws", "serve", "--chat", "--workers", "2"]
        + ["--redis", redis_url, "127.0.0.1", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        start_new_session=True,  # its own process group: the cleanup reaches the workers too
    )
    try:
        for _ in range(2):
            assert "Serving on" in read_line(proc.stdout, WAIT)
        yield proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.communicate(timeout=WAIT)


async def clients_on_both_workers(url: str, each: int) -> dict[str, list[asyncws.Websocket]]:
    """Connect until each of the two workers holds ``each`` clients; each has joined the room
    (its own first message came back) before this returns."""
    by_worker: dict[str, list[asyncws.Websocket]] = {}
    extra: list[asyncws.Websocket] = []
    for _ in range(200):  # the kernel spreads connections by a hash of the client's port
        ws = await asyncws.connect(url)
        assert ws.response is not None
        held = by_worker.setdefault(ws.response.headers["X-Worker-PID"], [])
        (held if len(held) < each else extra).append(ws)
        if len(by_worker) == 2 and all(len(v) == each for v in by_worker.values()):
            break
    for ws in extra:
        await ws.close()
    assert sorted(len(v) for v in by_worker.values()) == [each, each], by_worker
    for number, ws in enumerate(ws for v in by_worker.values() for ws in v):
        await ws.send(f"join {number}")
        while await asyncio.wait_for(ws.recv(), WAIT) != f"join {number}":
            pass  # others' joins
    return by_worker


async def collect(ws: asyncws.Websocket, count: int) -> list[str | bytes]:
    """The next ``count`` messages that are not joins."""
    got: list[str | bytes] = []
    while len(got) < count:
        message = await asyncio.wait_for(ws.recv(), WAIT)
        assert message is not None, (ws.close_code, got)
        if not (isinstance(message, str) and message.startswith("join ")):
            got.append(message)
    return got


def only(tag: str, messages: list[str | bytes]) -> list[str | bytes]:
    """The messages of one publisher (see ``mixed``), in the order received."""
    prefix = tag + " "
    return [
        m for m in messages if (m if isinstance(m, str) else m.decode("latin-1")).startswith(prefix)
    ]


async def stop_workers(proc: subprocess.Popen[str], clients: list[asyncws.Websocket]) -> None:
    """SIGTERM to the parent: every client is closed with 1001."""
    proc.send_signal(signal.SIGTERM)
    for ws in clients:
        while await asyncio.wait_for(ws.recv(), WAIT) is not None:
            pass
        assert ws.close_code == 1001


@needs_fork
def test_workers_deliver_every_publish_once_in_order(redis_server: RedisServer) -> None:
    port = free_port()
    with chat_workers(redis_server.url, port) as proc:

        async def main() -> None:
            by_worker = await clients_on_both_workers(f"ws://127.0.0.1:{port}/room", 3)
            a, b = by_worker.values()
            clients = a + b
            expected = {"A": mixed(15, "A"), "B": mixed(15, "B"), "T": mixed(15, "T")}

            async def send_all(ws: asyncws.Websocket, messages: list[str | bytes]) -> None:
                for message in messages:
                    await ws.send(message)

            async def publish_all(hub: RedisFanout, messages: list[str | bytes]) -> None:
                for message in messages:  # one publisher: each publish awaited in turn
                    await hub.publish("/room", message)

            # One publisher on each worker and one outside (this process), all at once.
            async with RedisFanout(redis_server.url) as hub:
                await asyncio.gather(
                    send_all(a[0], expected["A"]),
                    send_all(b[0], expected["B"]),
                    publish_all(hub, expected["T"]),
                )
                got = await asyncio.gather(*(collect(ws, 45) for ws in clients))
                await hub.publish("/room", "end")
            for messages in got:
                for tag, sent in expected.items():
                    assert only(tag, messages) == sent  # each once, in its publisher's order
            for ws in clients:  # and nothing more: the next message is the last one published
                assert await collect(ws, 1) == ["end"]
            await stop_workers(proc, clients)

        run(main(), 60.0)
        assert proc.wait(WAIT) == 0
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read()


@needs_fork
def test_redis_killed_and_restarted_mid_stream(tmp_path: Path) -> None:
    redis = RedisServer(redis_server_binary(), tmp_path)
    port = free_port()
    with redis, chat_workers(redis.url, port) as proc:

        async def main() -> None:
            by_worker = await clients_on_both_workers(f"ws://127.0.0.1:{port}/room", 2)
            clients = [ws for group in by_worker.values() for ws in group]
            async with RedisFanout(redis.url, backoff=(0.05, 0.5), timeout=2.0) as hub:
                before = mixed(10, "before")
                for message in before:
                    await hub.publish("/room", message)
                for ws in clients:
                    assert await collect(ws, 10) == before

                redis.kill()
                with pytest.raises(FanoutUnavailable):
                    await hub.publish("/room", "while down")
                await clients[0].send("sent while down")  # the worker drops it, not the client
                await asyncio.sleep(0.5)
                redis.start()

                # The workers reconnect with backoff: probe until every client hears again.
                heard = [False] * len(clients)

                async def listen(i: int, ws: asyncws.Websocket) -> None:
                    while not (await collect(ws, 1))[0] == "probe":
                        pass
                    heard[i] = True

                listeners = [asyncio.ensure_future(listen(i, ws)) for i, ws in enumerate(clients)]
                for _ in range(150):
                    if all(heard):
                        break
                    try:
                        await hub.publish("/room", "probe")
                    except FanoutUnavailable:  # this process's own publisher, reconnecting
                        pass
                    await asyncio.sleep(0.1)
                await asyncio.gather(*listeners)
                await hub.publish("/room", "marker")
                for ws in clients:  # skip the probes still on their way
                    while (await collect(ws, 1))[0] != "marker":
                        pass
                after = mixed(10, "after")
                for message in after:
                    await hub.publish("/room", message)
                for ws in clients:
                    assert await collect(ws, 10) == after
                assert hub.stats().reconnects == 1
            for pid in by_worker:  # no worker crashed: all are still serving
                os.kill(int(pid), 0)
            assert proc.poll() is None
            assert all(ws.open for ws in clients)
            await stop_workers(proc, clients)

        run(main(), 90.0)
        assert proc.wait(WAIT) == 0
        assert proc.stderr is not None
        errors = proc.stderr.read()
        assert "Traceback" not in errors
        assert "unavailable" in errors  # the dropped message, said on stderr
        assert errors.count("were missed") == 2, errors  # each worker said what it missed
