"""Library adapters of the echo benchmark: one echo server and one client per library.

Each ``Library`` says how to start that library's echo server (``serve(ssl_ctx, deflate)`` ->
``(server, port)``) and how its client drives the load (``client(port, ssl_ctx, driver, kind,
timeout, deflate)``, with the harness' ``drive_async`` or ``CallbackRun``), whether it can
negotiate permessage-deflate, and what its processes need in their environment. Libraries:
the plain TCP echo floor, asyncws (Cython kernels, its pure-Python backend, and deflate at
aiohttp's zlib level), websockets,
aiohttp, picows (callback API, on aiofastnet as picows chooses by default; and opt-in on
asyncio's own transports) and picows.websockets (picows' awaitable, websockets-compatible API).
It must not time, pin, schedule or report anything: that is the harness' (``echo_harness``).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import os
from typing import Any, Callable, NamedTuple

from echo_harness import HOST, MAX_SIZE, CallbackRun, drive_async, is_uvloop

# The zlib window aiohttp's client asks for when deflate is on: the largest, aiohttp's default.
# (The other libraries are left at their own defaults: see benchmarks/README.md.)
DEFLATE_WINDOW_BITS = 15


# =============================================================================================
# The floor: unframed TCP
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


async def serve_tcp(ssl_ctx, deflate):
    loop = asyncio.get_running_loop()
    proto = TcpEchoServerProtocol if is_uvloop(loop) else _BufferedTcpEcho
    server = await loop.create_server(proto, HOST, 0, ssl=ssl_ctx)
    return server, server.sockets[0].getsockname()[1]


async def client_tcp(port, ssl_ctx, drv, kind, timeout, deflate):
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

    transport, proto = await loop.create_connection(
        Proto if is_uvloop(loop) else BufferedProto,
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


# =============================================================================================
# asyncws
# aiohttp compresses at zlib level 1 (Z_BEST_SPEED); asyncws and websockets at zlib's default, 6.
# The opt-in asyncws-deflate1 row is asyncws at aiohttp's level, to tell the level from the rest.
AIOHTTP_DEFLATE_LEVEL = 1


def asyncws_compression(deflate: bool, level: int | None):
    if not deflate:
        return None
    if level is None:
        return "deflate"
    import asyncws

    return asyncws.Deflate(level=level)


async def serve_asyncws(ssl_ctx, deflate, level=None):
    import asyncws

    async def handler(ws):
        while True:
            msg = await ws.recv()
            if msg is None:
                break
            await ws.send(msg)

    server = await asyncws.start_server(
        handler, HOST, 0, max_size=MAX_SIZE, ssl=ssl_ctx,
        compression=asyncws_compression(deflate, level),
    )
    return server, server.sockets[0].getsockname()[1]


async def client_asyncws(port, ssl_ctx, drv, kind, timeout, deflate, level=None):
    import asyncws

    kwargs: dict[str, Any] = {
        "max_size": MAX_SIZE, "compression": asyncws_compression(deflate, level),
    }
    if ssl_ctx is not None:
        kwargs["ssl"] = ssl_ctx
    ws = await asyncws.connect(f"{'wss' if ssl_ctx else 'ws'}://{HOST}:{port}/", **kwargs)
    try:
        await asyncio.wait_for(drive_async(ws.send, ws.recv, drv, timeout), timeout)
    finally:
        await asyncio.wait_for(ws.close(), 10)


def asyncws_backend() -> str:
    import asyncws

    return "speedups" if getattr(asyncws, "HAS_SPEEDUPS", False) else "purepython"


# =============================================================================================
# websockets (its asyncio API) and picows.websockets (picows' copy of that API): one server
# and one client, given the module that provides ``serve`` and ``connect``.
async def serve_websockets_api(serve, ssl_ctx, deflate, **extra):
    async def handler(ws):
        async for msg in ws:
            await ws.send(msg)

    server = await serve(
        handler, HOST, 0, compression="deflate" if deflate else None, max_size=MAX_SIZE,
        ping_interval=None, ssl=ssl_ctx, **extra,
    )
    return server, server.sockets[0].getsockname()[1]


async def client_websockets_api(connect, port, ssl_ctx, drv, timeout, deflate, **extra):
    if ssl_ctx is not None:
        extra["ssl"] = ssl_ctx
    ws = await connect(
        f"{'wss' if ssl_ctx else 'ws'}://{HOST}:{port}/",
        compression="deflate" if deflate else None,
        max_size=MAX_SIZE,
        ping_interval=None,
        **extra,
    )
    try:
        await asyncio.wait_for(drive_async(ws.send, ws.recv, drv, timeout), timeout)
    finally:
        await asyncio.wait_for(ws.close(), 10)


async def serve_websockets(ssl_ctx, deflate):
    from websockets.asyncio.server import serve

    return await serve_websockets_api(serve, ssl_ctx, deflate)


async def client_websockets(port, ssl_ctx, drv, kind, timeout, deflate):
    from websockets.asyncio.client import connect

    await client_websockets_api(connect, port, ssl_ctx, drv, timeout, deflate)


async def serve_picows_websockets(ssl_ctx, deflate):
    from picows.websockets import serve

    return await serve_websockets_api(serve, ssl_ctx, deflate)


async def client_picows_websockets(port, ssl_ctx, drv, kind, timeout, deflate):
    from picows.websockets import connect

    # proxy=None: never route the loopback connection through a proxy from the environment.
    await client_websockets_api(connect, port, ssl_ctx, drv, timeout, deflate, proxy=None)


# =============================================================================================
# aiohttp
async def serve_aiohttp(ssl_ctx, deflate):
    from aiohttp import WSMsgType, web

    async def handler(request):
        ws = web.WebSocketResponse(compress=deflate, max_msg_size=MAX_SIZE)
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


async def client_aiohttp(port, ssl_ctx, drv, kind, timeout, deflate):
    import aiohttp

    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(
            f"{'wss' if ssl_ctx else 'ws'}://{HOST}:{port}/",
            compress=DEFLATE_WINDOW_BITS if deflate else 0,
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


# =============================================================================================
# picows, callback API
async def serve_picows(ssl_ctx, deflate, use_aiofastnet=None):
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


async def client_picows(port, ssl_ctx, drv, kind, timeout, deflate, use_aiofastnet=None):
    from picows import WSListener, WSMsgType, ws_connect

    run = CallbackRun(drv)

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

    kwargs: dict[str, Any] = {}
    if use_aiofastnet is not None:
        kwargs["use_aiofastnet"] = use_aiofastnet
    transport, _ = await ws_connect(
        Listener, f"{'wss' if ssl_ctx else 'ws'}://{HOST}:{port}/", ssl_context=ssl_ctx,
        max_frame_size=MAX_SIZE + 64, **kwargs,
    )
    mtype = WSMsgType.TEXT if kind == "text" else WSMsgType.BINARY
    run.send = lambda m: transport.send(mtype, m)
    run.begin()
    try:
        await asyncio.wait_for(run.done, timeout)
    finally:
        transport.send_close()
        transport.disconnect()


async def serve_picows_stdlib(ssl_ctx, deflate):
    return await serve_picows(ssl_ctx, deflate, use_aiofastnet=False)


async def client_picows_stdlib(port, ssl_ctx, drv, kind, timeout, deflate):
    await client_picows(port, ssl_ctx, drv, kind, timeout, deflate, use_aiofastnet=False)


# =============================================================================================
# The registry
class Library(NamedTuple):
    name: str
    module: str | None  # what must be importable for the library to run; None: stdlib only
    serve: Callable[..., Any]
    client: Callable[..., Any]
    deflate: bool  # negotiates permessage-deflate (runs the deflate cells)
    env: dict[str, str] = {}  # set in both its processes
    needs_speedups: bool = False  # a server without asyncws' Cython kernels is an error

    def available(self) -> bool:
        return self.module is None or importlib.util.find_spec(self.module) is not None

    def backend(self) -> str:
        return asyncws_backend() if self.name.startswith("asyncws") else ""


LIBRARIES = {
    lib.name: lib
    for lib in (
        Library("tcp", None, serve_tcp, client_tcp, deflate=False),
        Library("asyncws", "asyncws", serve_asyncws, client_asyncws, deflate=True,
                needs_speedups=True),
        Library("asyncws-pure", "asyncws", serve_asyncws, client_asyncws, deflate=True,
                env={"ASYNCWS_NO_SPEEDUPS": "1"}),
        Library("asyncws-deflate1", "asyncws",
                functools.partial(serve_asyncws, level=AIOHTTP_DEFLATE_LEVEL),
                functools.partial(client_asyncws, level=AIOHTTP_DEFLATE_LEVEL), deflate=True,
                needs_speedups=True),
        Library("websockets", "websockets", serve_websockets, client_websockets, deflate=True),
        Library("aiohttp", "aiohttp", serve_aiohttp, client_aiohttp, deflate=True),
        Library("picows", "picows", serve_picows, client_picows, deflate=False),
        Library("picows.websockets", "picows.websockets", serve_picows_websockets,
                client_picows_websockets, deflate=True),
        Library("picows-stdlib", "picows", serve_picows_stdlib, client_picows_stdlib,
                deflate=False),
        # asyncws with its transport choice forced (the asyncws row is transport="auto").
        Library("asyncws-asyncio", "asyncws", serve_asyncws, client_asyncws, deflate=True,
                env={"ASYNCWS_TRANSPORT": "asyncio"}, needs_speedups=True),
        Library("asyncws-aiofastnet", "aiofastnet", serve_asyncws, client_asyncws, deflate=True,
                env={"ASYNCWS_TRANSPORT": "aiofastnet"}, needs_speedups=True),
    )
}
# Another build of asyncws beside this one, for before/after ratios from one run: a directory
# holding it with its extension built in place (benchmarks/build_baseline.sh makes one from a
# git revision). echo.py --baseline DIR sets this; the processes of the run inherit it.
BASELINE_ENV = "ASYNCWS_BENCH_BASELINE"


def add_baseline(path: str) -> list[str]:
    """Register the baseline build at ``path`` as libraries (for this process and, through the
    environment, the server and client processes it starts); returns their names."""
    path = os.path.abspath(path)
    os.environ[BASELINE_ENV] = path
    added = [
        Library("asyncws-baseline", "asyncws", serve_asyncws, client_asyncws, deflate=True,
                env={"PYTHONPATH": path}, needs_speedups=True),
        Library("asyncws-baseline-pure", "asyncws", serve_asyncws, client_asyncws,
                deflate=True, env={"PYTHONPATH": path, "ASYNCWS_NO_SPEEDUPS": "1"}),
    ]
    for lib in added:
        LIBRARIES[lib.name] = lib
    return [lib.name for lib in added]


if os.environ.get(BASELINE_ENV):
    add_baseline(os.environ[BASELINE_ENV])
# Opt-in: picows-stdlib (picows on asyncio's own transports instead of aiofastnet's),
# asyncws-deflate1 (the same as asyncws unless deflate is on), asyncws-asyncio /
# asyncws-aiofastnet (asyncws with transport= forced, through ASYNCWS_TRANSPORT) and
# asyncws-baseline-pure.
OPT_IN = (
    "picows-stdlib", "asyncws-deflate1", "asyncws-asyncio", "asyncws-aiofastnet",
    "asyncws-baseline-pure",
)
DEFAULT_LIBRARIES = [n for n in LIBRARIES if n not in OPT_IN]
