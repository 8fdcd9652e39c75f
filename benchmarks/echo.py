#!/usr/bin/env python
"""End-to-end echo benchmark: asyncws against its peers, interleaved, on one pinned CPU.

For every configuration (loop x TLS x mode x kind x size) and every round, each implementation
gets a fresh echo *server* process and a fresh *client* process on 127.0.0.1, both pinned to
the same single CPU (``os.sched_setaffinity``), so the figure is the sum of the two sides'
costs. Rounds are interleaved across implementations (A, B, C, A, B, C, ...) and the median of
the rounds is reported; only ratios from one run mean anything on a shared machine.

Modes:
  pingpong   one message in flight: send, wait for the echo, repeat (round trips per second)
  pipelined  ``--inflight`` (100) messages in flight: a new one is sent per echo received

Implementations (``--impl``; the server and the client of a row use the same library):
  tcp           a plain asyncio.Protocol echo of the same bytes, unframed: the floor
  asyncws       asyncws with its Cython kernels (fails the row if they are not there)
  asyncws-pure  asyncws with ASYNCWS_NO_SPEEDUPS=1
  websockets    websockets.asyncio server/client, compression=None
  aiohttp       web.WebSocketResponse server, ClientSession.ws_connect client, no compression
  picows        ws_create_server / ws_connect with WSListener callbacks (on aiofastnet's Cython
                transports when aiofastnet is installed, as picows does by default)
  picows-stdlib picows forced onto asyncio's own transports (use_aiofastnet=False); opt-in

``--common-client picows`` keeps the server varying but always uses a picows client, which
isolates the server's cost (the tcp row keeps its own tcp client as the floor).

Every measurement is bounded: ``--warmup`` + ``--duration`` seconds of load, a bounded drain,
and a hard subprocess timeout; servers exit by themselves after ``--max-lifetime``.

Examples:
  python benchmarks/echo.py --sizes 32,256,8192 --kind binary --mode pingpong --rounds 3
  python benchmarks/echo.py --loop uvloop --tls --json out.json
  python benchmarks/echo.py --common-client picows --impl asyncws,websockets,aiohttp,picows
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import random
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

HOST = "127.0.0.1"
MAX_SIZE = 2**24
ALL_IMPLS = ["tcp", "asyncws", "asyncws-pure", "websockets", "aiohttp", "picows", "picows-stdlib"]
# picows-stdlib (picows on asyncio's own transports instead of aiofastnet's) is opt-in.
DEFAULT_IMPLS = ALL_IMPLS[:-1]
IMPL_MODULE = {
    "tcp": None,
    "asyncws": "asyncws",
    "asyncws-pure": "asyncws",
    "websockets": "websockets",
    "aiohttp": "aiohttp",
    "picows": "picows",
    "picows-stdlib": "picows",
}
DEFAULT_SIZES = [32, 256, 8192, 100_000, 1_048_576]


# =============================================================================================
# Helpers shared by the server and client processes
def pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def run_loop(coro_fn: Callable[[], Any], loop_name: str) -> Any:
    if loop_name == "uvloop":
        import uvloop

        if sys.version_info >= (3, 11):
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(coro_fn())
        uvloop.install()  # pragma: no cover - Python < 3.11
    return asyncio.run(coro_fn())


def server_ssl(tls_dir: str | None):
    if not tls_dir:
        return None
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(os.path.join(tls_dir, "server.pem"))
    return ctx


def client_ssl(tls_dir: str | None):
    if not tls_dir:
        return None
    import ssl

    return ssl.create_default_context(cafile=os.path.join(tls_dir, "ca.pem"))


def make_tls_dir() -> str:
    """A throw-away CA and a server certificate for 127.0.0.1 (trustme, else cryptography)."""
    d = tempfile.mkdtemp(prefix="asyncws-bench-tls-")
    try:
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert(HOST, "localhost")
        ca.cert_pem.write_to_path(os.path.join(d, "ca.pem"))
        cert.private_key_and_cert_chain_pem.write_to_path(os.path.join(d, "server.pem"))
        return d
    except ImportError:
        pass
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "asyncws-bench")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    keypem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with open(os.path.join(d, "ca.pem"), "wb") as f:
        f.write(pem)
    with open(os.path.join(d, "server.pem"), "wb") as f:
        f.write(keypem + pem)
    return d


def make_message(kind: str, size: int):
    if kind == "text":
        unit = '{"id": 12345, "name": "asyncws benchmark", "ok": true, "v": [1, 2, 3]} '
        return (unit * (size // len(unit) + 1))[:size]
    return random.Random(size).randbytes(size)


def backend_of(impl: str) -> str:
    if impl.startswith("asyncws"):
        import asyncws

        return "speedups" if getattr(asyncws, "HAS_SPEEDUPS", False) else "purepython"
    return ""


# =============================================================================================
# Servers: each returns an object with .close() (awaitable or not) and the bound port.
def tune_socket(transport) -> None:
    """TCP_NODELAY and TCP_QUICKACK, the options picows sets on its sockets (asyncio sets only
    TCP_NODELAY), so that the floor is not handicapped by socket options."""
    import socket

    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_QUICKACK"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    except OSError:
        pass


class TcpEchoServerProtocol(asyncio.Protocol):
    """The floor's server: every byte received is written back as it comes, with no framing
    and no parsing at all (the client knows the message size). On uvloop ``data_received`` is
    its cheapest read path (uvloop reads into its own buffer); asyncio's selector transports
    would allocate 256 KiB per read for a plain Protocol, so there ``_BufferedTcpEcho`` reads
    into one reusable buffer instead."""

    def connection_made(self, transport):
        self.transport = transport
        tune_socket(transport)

    def data_received(self, data):
        self.transport.write(data)

    # Back-pressure, as the WebSocket servers get from ``await send()``: without it a pipelined
    # client makes the transport's write buffer grow without bound, and CPython 3.11's bytearray
    # write buffer then costs O(buffer) per write.
    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


class _BufferedTcpEcho(TcpEchoServerProtocol, asyncio.BufferedProtocol):
    def connection_made(self, transport):
        super().connection_made(transport)
        self.view = memoryview(bytearray(262144))

    def get_buffer(self, sizehint):
        return self.view

    def buffer_updated(self, nbytes):
        self.transport.write(bytes(self.view[:nbytes]))


async def serve_tcp(ssl_ctx):
    loop = asyncio.get_running_loop()
    uv = type(loop).__module__.startswith("uvloop")
    proto = TcpEchoServerProtocol if uv else _BufferedTcpEcho
    server = await loop.create_server(proto, HOST, 0, ssl=ssl_ctx)
    return server, server.sockets[0].getsockname()[1]


async def serve_asyncws(ssl_ctx):
    import asyncws

    async def handler(ws):
        while True:
            msg = await ws.recv()
            if msg is None:
                break
            await ws.send(msg)

    kwargs: dict[str, Any] = {"max_size": MAX_SIZE}
    if ssl_ctx is not None:
        kwargs["ssl"] = ssl_ctx
    server = await asyncws.start_server(handler, HOST, 0, **kwargs)
    return server, server.sockets[0].getsockname()[1]


async def serve_websockets(ssl_ctx):
    from websockets.asyncio.server import serve

    async def handler(ws):
        async for msg in ws:
            await ws.send(msg)

    server = await serve(
        handler, HOST, 0, compression=None, max_size=MAX_SIZE, ping_interval=None, ssl=ssl_ctx
    )
    return server, server.sockets[0].getsockname()[1]


async def serve_aiohttp(ssl_ctx):
    from aiohttp import WSMsgType, web

    async def handler(request):
        ws = web.WebSocketResponse(compress=False, max_msg_size=MAX_SIZE)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0, ssl_context=ssl_ctx)
    await site.start()
    return runner, runner.addresses[0][1]


async def serve_picows(ssl_ctx, use_aiofastnet=None):
    from picows import WSListener, WSMsgType, ws_create_server

    class EchoListener(WSListener):
        def on_ws_connected(self, transport):
            self.transport = transport

        def pause_writing(self):
            self.transport.underlying_transport.pause_reading()

        def resume_writing(self):
            self.transport.underlying_transport.resume_reading()

        def on_ws_frame(self, transport, frame):
            t = frame.msg_type
            if t == WSMsgType.BINARY:
                transport.send(WSMsgType.BINARY, frame.get_payload_as_memoryview())
            elif t == WSMsgType.TEXT:
                # Decode (validates UTF-8), as every other WebSocket server here does.
                transport.send(WSMsgType.TEXT, frame.get_payload_as_utf8_text())
            elif t == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    kwargs: dict[str, Any] = {"max_frame_size": MAX_SIZE + 64}
    if use_aiofastnet is not None:
        kwargs["use_aiofastnet"] = use_aiofastnet
    if ssl_ctx is not None:
        kwargs["ssl"] = ssl_ctx
    server = await ws_create_server(lambda request: EchoListener(), HOST, 0, **kwargs)
    return server, server.sockets[0].getsockname()[1]


SERVERS = {
    "tcp": serve_tcp,
    "asyncws": serve_asyncws,
    "asyncws-pure": serve_asyncws,
    "websockets": serve_websockets,
    "aiohttp": serve_aiohttp,
    "picows": serve_picows,
    "picows-stdlib": lambda ssl_ctx: serve_picows(ssl_ctx, use_aiofastnet=False),
}


def raise_nofile(n: int = 16384) -> None:
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n if hard == resource.RLIM_INFINITY else min(n, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def server_main(args) -> None:
    pin(args.cpu)
    raise_nofile()  # memory.py opens 1,000+ connections to these servers

    async def main():
        server, port = await SERVERS[args.impl](server_ssl(args.tls_dir))
        print(f"PORT {port} BACKEND {backend_of(args.impl) or '-'}", flush=True)
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        # Exit when the parent closes our stdin (or dies), or after max_lifetime at the latest.
        try:
            loop.add_reader(sys.stdin.fileno(), lambda: stop.done() or stop.set_result(None))
        except (OSError, ValueError):  # stdin not pollable (e.g. /dev/null): lifetime only
            pass
        try:
            await asyncio.wait_for(stop, args.max_lifetime)
        except asyncio.TimeoutError:
            pass

    run_loop(main, args.loop)


# =============================================================================================
# Clients
class Driver:
    """Counts echoes in phases: warm-up, measure (timed), drain (no new sends)."""

    WARM, MEASURE, DRAIN = 0, 1, 2

    def __init__(self, msg, mode, inflight, warmup, duration):
        self.msg = msg
        self.n = len(msg)
        self.window = 1 if mode == "pingpong" else inflight
        self.warmup = warmup
        self.duration = duration
        self.phase = self.WARM
        self.sent = 0
        self.received = 0
        self.count0 = self.count1 = 0
        self.t0 = self.t1 = 0.0
        self.checked = False

    def start(self):
        now = time.perf_counter()
        self.t_warm_end = now + self.warmup

    def check(self, got) -> None:
        if not self.checked:
            if got != self.msg:
                raise AssertionError(f"echo differs: {type(got).__name__} len {len(got)}")
            self.checked = True
        elif len(got) != self.n:
            raise AssertionError(f"echo of {len(got)} units, expected {self.n}")

    def on_echo(self) -> bool:
        """Called after each echo was received and checked; True if one more should be sent."""
        self.received += 1
        if self.phase != self.DRAIN:
            now = time.perf_counter()
            if self.phase == self.WARM:
                if now >= self.t_warm_end:
                    self.phase = self.MEASURE
                    self.count0, self.t0 = self.received, now
                    self.deadline = now + self.duration
            elif now >= self.deadline:
                self.phase = self.DRAIN
                self.count1, self.t1 = self.received, now
        return self.phase != self.DRAIN

    def result(self) -> dict[str, Any]:
        count = self.count1 - self.count0
        elapsed = self.t1 - self.t0
        return {"count": count, "elapsed": elapsed, "msgs_per_s": count / elapsed if elapsed else 0}


async def drive_async(send, recv, drv: Driver, drain_timeout: float):
    """Driver for libraries with ``await send(msg)`` / ``await recv()``."""
    drv.start()
    if drv.window == 1:
        while True:
            await send(drv.msg)
            drv.sent += 1
            got = await recv()
            drv.check(got)
            if not drv.on_echo():
                return
    sem = asyncio.Semaphore(drv.window)
    stop = False

    async def sender():
        while True:
            await sem.acquire()
            if stop:
                return
            await send(drv.msg)
            drv.sent += 1

    task = asyncio.ensure_future(sender())
    try:
        while True:
            got = await recv()
            drv.check(got)
            more = drv.on_echo()
            if not more:
                break
            sem.release()
        stop = True
        sem.release()
        await asyncio.wait_for(task, drain_timeout)

        async def drain():
            while drv.received < drv.sent:
                drv.check(await recv())
                drv.received += 1

        await asyncio.wait_for(drain(), drain_timeout)
    finally:
        if not task.done():
            task.cancel()


class CallbackRun:
    """Driver glue for callback libraries (tcp, picows): ``send`` is synchronous."""

    def __init__(self, drv: Driver):
        self.drv = drv
        self.done = asyncio.get_running_loop().create_future()
        self.send: Callable[[Any], None] = lambda m: None

    paused = False
    owed = 0

    def send_one(self):
        # Honour the transport's flow control, as ``await send()`` does for the other clients.
        self.drv.sent += 1
        if self.paused:
            self.owed += 1
        else:
            self.send(self.drv.msg)

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        while self.owed and not self.paused:
            self.owed -= 1
            self.send(self.drv.msg)

    def begin(self):
        self.drv.start()
        for _ in range(self.drv.window):
            self.send_one()

    def on_message(self, got):
        if self.done.done():
            return
        drv = self.drv
        try:
            drv.check(got)
            if drv.on_echo():
                self.send_one()
            elif drv.received >= drv.sent:
                self.done.set_result(None)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.done.set_exception(exc)

    def lost(self, exc=None):
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"connection lost: {exc!r}"))


async def client_tcp(port, ssl_ctx, drv, kind, timeout):
    loop = asyncio.get_running_loop()
    run = CallbackRun(drv)
    payload = drv.msg.encode() if kind == "text" else drv.msg
    size = len(payload)

    class Proto(asyncio.Protocol):
        """Counts the echoed bytes: each ``size`` of them completes one message. The first
        echo is checked byte for byte (then handed on as the message it carries). The messages
        sent in answer to one read go out in one write, so that the floor is not handicapped
        against a library that coalesces its writes."""

        batch: list | None = None

        def connection_made(self, transport):
            tune_socket(transport)
            self.pending = 0
            self.first = bytearray()

        def data_received(self, data):
            self.batch = []
            try:
                self._count(data)
            finally:
                batch, self.batch = self.batch, None
                if batch:
                    transport.write(b"".join(batch))

        def _count(self, data):
            if self.first is not None:
                data = bytes(data)
                self.first += data
                if len(self.first) < size:
                    return
                if bytes(self.first[:size]) != payload:
                    run.lost("the first echo differs from the message")
                    return
                data, self.first = self.first[size:], None
                run.on_message(drv.msg)
            pending = self.pending + len(data)
            while pending >= size:
                pending -= size
                run.on_message(drv.msg)
            self.pending = pending

        def connection_lost(self, exc):
            run.lost(exc)

        def pause_writing(self):
            run.pause_writing()

        def resume_writing(self):
            run.resume_writing()

    class BufferedProto(Proto, asyncio.BufferedProtocol):
        """The same on asyncio's own loop, reading into one reusable buffer (a plain Protocol
        there gets a fresh 256 KiB bytes object per read)."""

        view = memoryview(bytearray(262144))

        def get_buffer(self, sizehint):
            return self.view

        def buffer_updated(self, nbytes):
            self.data_received(self.view[:nbytes])

    uv = type(loop).__module__.startswith("uvloop")
    transport, proto = await loop.create_connection(
        Proto if uv else BufferedProto,
        HOST,
        port,
        ssl=ssl_ctx,
        server_hostname=HOST if ssl_ctx else None,
    )

    def send(m):
        if proto.batch is not None:
            proto.batch.append(payload)
        else:
            transport.write(payload)

    run.send = send
    run.begin()
    try:
        await asyncio.wait_for(run.done, timeout)
    finally:
        transport.close()


async def client_picows(port, ssl_ctx, drv, kind, timeout, use_aiofastnet=None):
    from picows import WSListener, WSMsgType, ws_connect

    run = CallbackRun(drv)
    text = kind == "text"

    class Listener(WSListener):
        def on_ws_frame(self, transport, frame):
            t = frame.msg_type
            if t == WSMsgType.TEXT:
                run.on_message(frame.get_payload_as_utf8_text())
            elif t == WSMsgType.BINARY:
                run.on_message(frame.get_payload_as_bytes())
            elif t == WSMsgType.CLOSE:
                run.lost("close frame")

        def on_ws_disconnected(self, transport):
            run.lost("disconnected")

        def pause_writing(self):
            run.pause_writing()

        def resume_writing(self):
            run.resume_writing()

    scheme = "wss" if ssl_ctx else "ws"
    kwargs: dict[str, Any] = {}
    if use_aiofastnet is not None:
        kwargs["use_aiofastnet"] = use_aiofastnet
    transport, _ = await ws_connect(
        Listener, f"{scheme}://{HOST}:{port}/", ssl_context=ssl_ctx, max_frame_size=MAX_SIZE + 64,
        **kwargs,
    )
    mtype = WSMsgType.TEXT if text else WSMsgType.BINARY
    run.send = lambda m: transport.send(mtype, m)
    run.begin()
    try:
        await asyncio.wait_for(run.done, timeout)
    finally:
        transport.send_close()
        transport.disconnect()


async def client_asyncws(port, ssl_ctx, drv, kind, timeout):
    import asyncws

    scheme = "wss" if ssl_ctx else "ws"
    kwargs: dict[str, Any] = {"max_size": MAX_SIZE}
    if ssl_ctx is not None:
        kwargs["ssl"] = ssl_ctx
    ws = await asyncws.connect(f"{scheme}://{HOST}:{port}/", **kwargs)
    try:
        await asyncio.wait_for(drive_async(ws.send, ws.recv, drv, timeout), timeout)
    finally:
        await asyncio.wait_for(ws.close(), 10)


async def client_websockets(port, ssl_ctx, drv, kind, timeout):
    from websockets.asyncio.client import connect

    scheme = "wss" if ssl_ctx else "ws"
    ws = await connect(
        f"{scheme}://{HOST}:{port}/",
        compression=None,
        max_size=MAX_SIZE,
        ping_interval=None,
        ssl=ssl_ctx,
    )
    try:
        await asyncio.wait_for(drive_async(ws.send, ws.recv, drv, timeout), timeout)
    finally:
        await asyncio.wait_for(ws.close(), 10)


async def client_aiohttp(port, ssl_ctx, drv, kind, timeout):
    import aiohttp

    scheme = "wss" if ssl_ctx else "ws"
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(
            f"{scheme}://{HOST}:{port}/",
            compress=0,
            max_msg_size=MAX_SIZE,
            ssl=ssl_ctx if ssl_ctx is not None else False,
        )
        send = ws.send_str if kind == "text" else ws.send_bytes

        async def recv():
            msg = await ws.receive()
            if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                raise ConnectionError(f"unexpected {msg.type!r}")
            return msg.data

        try:
            await asyncio.wait_for(drive_async(send, recv, drv, timeout), timeout)
        finally:
            await asyncio.wait_for(ws.close(), 10)


CLIENTS = {
    "tcp": client_tcp,
    "asyncws": client_asyncws,
    "asyncws-pure": client_asyncws,
    "websockets": client_websockets,
    "aiohttp": client_aiohttp,
    "picows": client_picows,
    "picows-stdlib": lambda *a: client_picows(*a, use_aiofastnet=False),
}


def client_main(args) -> None:
    pin(args.cpu)
    out: dict[str, Any] = {"impl": args.impl}
    try:
        msg = make_message(args.kind, args.size)
        drv = Driver(msg, args.mode, args.inflight, args.warmup, args.duration)
        timeout = args.warmup + args.duration + args.drain_timeout

        async def main():
            await CLIENTS[args.impl](args.port, client_ssl(args.tls_dir), drv, args.kind, timeout)

        run_loop(main, args.loop)
        out.update(drv.result())
        out["backend"] = backend_of(args.impl)
    except BaseException as exc:  # noqa: BLE001 - reported to the orchestrator
        out["error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(out), flush=True)


# =============================================================================================
# Orchestrator
def impl_env(impl: str, snapshot: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if snapshot:
        env["PYTHONPATH"] = snapshot + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("ASYNCWS_NO_SPEEDUPS", None)
    if impl == "asyncws-pure":
        env["ASYNCWS_NO_SPEEDUPS"] = "1"
    return env


def available(impl: str) -> bool:
    mod = IMPL_MODULE[impl]
    if mod is None:
        return True
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def measure(args, impl, client_impl, cfg, tls_dir) -> dict[str, Any]:
    """One round of one implementation in one configuration: fresh server and client."""
    loop_name, tls, mode, kind, size = cfg
    common = ["--loop", loop_name, "--cpu", str(args.cpu)]
    if tls:
        common += ["--tls-dir", tls_dir]
    budget = args.warmup + args.duration + args.drain_timeout
    errfile = tempfile.TemporaryFile("w+")
    srv = subprocess.Popen(
        [sys.executable, __file__, "_server", "--impl", impl, "--max-lifetime", str(budget + 60)]
        + common,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=errfile,
        env=impl_env(impl, args.snapshot),
        text=True,
    )

    def server_err() -> str:
        errfile.seek(0)
        tail = errfile.read()[-600:].strip()
        return f" [server stderr: {tail}]" if tail else ""

    try:
        ready, _, _ = select.select([srv.stdout], [], [], 30)
        line = srv.stdout.readline() if ready else ""
        if not line.startswith("PORT "):
            srv.kill()
            srv.wait(5)
            return {"error": f"server did not start: {line!r}{server_err()}"}
        parts = line.split()
        port, server_backend = int(parts[1]), parts[3]
        cmd = [
            sys.executable, __file__, "_client", "--impl", client_impl, "--port", str(port),
            "--mode", mode, "--kind", kind, "--size", str(size),
            "--inflight", str(args.inflight), "--warmup", str(args.warmup),
            "--duration", str(args.duration), "--drain-timeout", str(args.drain_timeout),
        ] + common
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=budget + 60,
                env=impl_env(client_impl, args.snapshot),
            )
        except subprocess.TimeoutExpired:
            return {"error": "client timed out (killed)" + server_err()}
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            return {
                "error": f"client printed no result; rc={proc.returncode} {proc.stderr[-800:]}"
                + server_err()
            }
        res = json.loads(lines[-1])
        if "error" in res:
            res["error"] += server_err()
        res["server_backend"] = server_backend
        if impl == "asyncws" and server_backend != "speedups":
            res["error"] = "asyncws server runs without its Cython speedups"
        return res
    finally:
        if srv.poll() is None:
            try:
                srv.stdin.close()
            except OSError:
                pass
            try:
                srv.wait(5)
            except subprocess.TimeoutExpired:
                srv.kill()
                srv.wait(5)
        errfile.close()


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "error"
    return f"{x:,.0f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    if a is None or not b:
        return "-"
    return f"{a / b:.2f}"


def print_tables(args, results: dict[str, Any], impls: list[str]) -> None:
    client_note = (
        f"client: {args.common_client} for every server (tcp row: tcp client)"
        if args.common_client
        else "client: same library as the server"
    )
    for loop_name, tls, mode in itertools.product(args.loop, args.tls_modes, args.mode):
        for kind in args.kind:
            print()
            print(
                f"### {mode}, {kind}, loop={loop_name}, {'TLS' if tls else 'plain TCP'}, "
                f"{client_note}, median of {args.rounds} x {args.duration:g}s"
                + (f", {args.inflight} in flight" if mode == "pipelined" else "")
            )
            print()
            print("| size | impl | msgs/s | MB/s | vs tcp | vs picows | min-max msgs/s |")
            print("|---:|---|---:|---:|---:|---:|---:|")
            for size in args.sizes:
                def key(impl, parts=(loop_name, tls, mode, kind, size)):
                    return "|".join(map(str, (*parts, impl)))
                meds = {impl: results[key(impl)]["median"] for impl in impls}
                for impl in impls:
                    r = results[key(impl)]
                    med = r["median"]
                    mbs = f"{med * size / 1e6:,.1f}" if med is not None else "-"
                    spread = (
                        f"{min(r['rates']):,.0f}-{max(r['rates']):,.0f}" if r["rates"] else "-"
                    )
                    print(
                        f"| {size} | {impl} | {fmt_rate(med)} | {mbs} | "
                        f"{fmt_ratio(med, meds.get('tcp'))} | {fmt_ratio(med, meds.get('picows'))}"
                        f" | {spread} |"
                    )
    sys.stdout.flush()


def orchestrate(args) -> int:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    if args.cpu is None:
        args.cpu = cpus[-1]
    others = [c for c in cpus if c != args.cpu]
    if others:
        os.sched_setaffinity(0, set(others))  # keep this process off the measured CPU
    impls = [i.strip() for i in args.impl.split(",")] if args.impl else list(DEFAULT_IMPLS)
    unknown = [i for i in impls if i not in ALL_IMPLS]
    if unknown:
        sys.exit(f"unknown --impl {unknown}; choose from {ALL_IMPLS}")
    missing = [i for i in impls if not available(i)]
    for i in missing:
        print(f"# skipping {i}: not installed", file=sys.stderr)
    impls = [i for i in impls if i not in missing]
    if args.common_client and not available(args.common_client):
        sys.exit(f"--common-client {args.common_client} is not installed")
    if "uvloop" in args.loop and not available_mod("uvloop"):
        sys.exit("--loop uvloop needs uvloop installed")
    tls_dir = make_tls_dir() if any(args.tls_modes) else None
    args.snapshot = snapshot_asyncws() if args.snapshot_lib else None
    if args.snapshot:
        print(f"# asyncws copied to {args.snapshot} for this run",
              file=sys.stderr)

    configs = list(itertools.product(args.loop, args.tls_modes, args.mode, args.kind, args.sizes))
    results: dict[str, Any] = {}
    total = len(configs) * args.rounds * len(impls)
    done = 0
    t_start = time.time()
    try:
        for cfg in configs:
            for rnd in range(args.rounds):
                for impl in impls:  # interleaved: A, B, C, A, B, C, ...
                    client_impl = impl
                    if args.common_client and impl != "tcp":
                        client_impl = args.common_client
                    res = measure(args, impl, client_impl, cfg, tls_dir)
                    key = "|".join(map(str, cfg + (impl,)))
                    entry = results.setdefault(
                        key,
                        {
                            "loop": cfg[0], "tls": cfg[1], "mode": cfg[2], "kind": cfg[3],
                            "size": cfg[4], "impl": impl, "client": client_impl,
                            "rates": [], "errors": [],
                        },
                    )
                    done += 1
                    if "error" in res:
                        entry["errors"].append(res["error"])
                        print(f"# [{done}/{total}] {key} round {rnd}: ERROR {res['error']}",
                              file=sys.stderr)
                    else:
                        entry["rates"].append(res["msgs_per_s"])
                        if args.verbose:
                            print(f"# [{done}/{total}] {key} round {rnd}: "
                                  f"{res['msgs_per_s']:,.0f} msgs/s", file=sys.stderr)
    finally:
        if tls_dir:
            shutil.rmtree(tls_dir, ignore_errors=True)
        if args.snapshot:
            shutil.rmtree(args.snapshot, ignore_errors=True)
    for entry in results.values():
        entry["median"] = statistics.median(entry["rates"]) if entry["rates"] else None

    print(f"# echo benchmark: {' '.join(sys.argv)}")
    print(f"# {machine_line()}")
    print(f"# versions: {json.dumps(versions())}")
    print(f"# server and client pinned to CPU {args.cpu}; wall time {time.time() - t_start:.0f}s")
    print_tables(args, results, impls)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "argv": sys.argv,
                    "machine": machine_info(),
                    "versions": versions(),
                    "settings": {
                        k: v for k, v in vars(args).items() if k not in ("func", "snapshot")
                    },
                    "results": list(results.values()),
                },
                f,
                indent=1,
            )
    return 0


def snapshot_asyncws() -> str | None:
    """Copy the importable asyncws package (with its compiled extension) to a temporary
    directory used by every server and client of this run, so that a working tree edited or
    rebuilt during a long run cannot mix versions (an editable install imports the tree)."""
    import importlib.util

    spec = importlib.util.find_spec("asyncws")
    if spec is None or not spec.submodule_search_locations:
        return None
    src = list(spec.submodule_search_locations)[0]
    dst = tempfile.mkdtemp(prefix="asyncws-bench-lib-")
    shutil.copytree(src, os.path.join(dst, "asyncws"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.c"))
    return dst


def git_describe() -> str:
    import importlib.util

    spec = importlib.util.find_spec("asyncws")
    if spec is None or not spec.submodule_search_locations:
        return ""
    src = os.path.dirname(list(spec.submodule_search_locations)[0])
    try:
        out = subprocess.run(["git", "-C", src, "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def available_mod(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def machine_line() -> str:
    m = machine_info()
    return (
        f"machine: {m['nproc']} CPUs, {m['cpu']}, {m['implementation']} {m['python']}, "
        f"{m['platform']}"
    )


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("asyncws", "websockets", "aiohttp", "picows", "aiofastnet", "uvloop"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    rev = git_describe()
    if rev:
        out["asyncws_git"] = rev
    return out


def csv_ints(s: str) -> list[int]:
    return [int(float(x)) for x in s.split(",") if x]


def csv_strs(choices):
    def parse(s: str) -> list[str]:
        items = [x.strip() for x in s.split(",") if x.strip()]
        for x in items:
            if x not in choices:
                raise argparse.ArgumentTypeError(f"{x!r} not in {choices}")
        return items

    return parse


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("_server", "_client"):
        p = argparse.ArgumentParser(prog=f"echo.py {argv[0]}")
        p.add_argument("--impl", required=True, choices=ALL_IMPLS)
        p.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
        p.add_argument("--cpu", type=int)
        p.add_argument("--tls-dir")
        p.add_argument("--max-lifetime", type=float, default=300)
        p.add_argument("--port", type=int)
        p.add_argument("--mode", default="pingpong")
        p.add_argument("--kind", default="binary")
        p.add_argument("--size", type=int, default=32)
        p.add_argument("--inflight", type=int, default=100)
        p.add_argument("--warmup", type=float, default=0.5)
        p.add_argument("--duration", type=float, default=2.0)
        p.add_argument("--drain-timeout", type=float, default=30.0)
        a = p.parse_args(argv[1:])
        (server_main if argv[0] == "_server" else client_main)(a)
        return 0

    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--impl", help=f"comma-separated subset of {','.join(ALL_IMPLS)} "
                   f"(default: {','.join(DEFAULT_IMPLS)}, those installed)")
    p.add_argument("--sizes", type=csv_ints, default=DEFAULT_SIZES,
                   help="comma-separated message sizes in bytes "
                   "(default: 32,256,8192,100000,1048576)")
    p.add_argument("--kind", type=csv_strs(["binary", "text"]), default=["binary", "text"],
                   help="binary,text (default both)")
    p.add_argument("--mode", type=csv_strs(["pingpong", "pipelined"]),
                   default=["pingpong", "pipelined"], help="pingpong,pipelined (default both)")
    p.add_argument("--loop", type=csv_strs(["asyncio", "uvloop"]), default=["asyncio"],
                   help="asyncio,uvloop (default asyncio)")
    p.add_argument("--tls", choices=["off", "on", "both"], default="off", nargs="?", const="on",
                   help="--tls alone means TLS only; --tls both runs plain and TLS")
    p.add_argument("--common-client", choices=["picows"], default=None,
                   help="always use this client; only the server varies")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=2.0, help="seconds measured per round")
    p.add_argument("--warmup", type=float, default=0.5, help="seconds of warm-up per round")
    p.add_argument("--inflight", type=int, default=100, help="messages in flight when pipelined")
    p.add_argument("--drain-timeout", type=float, default=30.0)
    p.add_argument("--cpu", type=int, default=None,
                   help="CPU for server and client (default: last)")
    p.add_argument("--json", help="write all rounds and medians to this file")
    p.add_argument("-v", "--verbose", action="store_true", help="print every round to stderr")
    p.add_argument("--no-snapshot", dest="snapshot_lib", action="store_false",
                   help="import asyncws from where it is installed instead of a per-run copy")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.duration > 60 or args.rounds < 1 or args.rounds > 50:
        p.error("--duration must be in (0, 60] and --rounds in [1, 50]")
    args.tls_modes = {"off": [False], "on": [True], "both": [False, True]}[args.tls]
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
