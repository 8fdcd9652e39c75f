"""Shared helpers for the hostile-input, memory and load tests (not a test module).

This module holds what those tests share: building raw (possibly invalid) handshakes and frames,
reading and parsing the server's answers off a raw socket, in-process servers bound to
127.0.0.1 port 0, a subprocess server whose RSS can be measured (``ServerProcess``, which runs
this very file as a script), and raising ``RLIMIT_NOFILE``. Nothing here asserts: tests do.

Run as a script it is the subprocess server: ``python tests/_raw.py '{"mode": "echo"}'`` prints
``PORT <n>`` and serves until killed (see ``_serve_main`` for the modes).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Callable

import asyncws

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Scale factor for the long versions: ASYNCWS_STRESS=1 (or a larger integer) multiplies sizes.
STRESS = int(os.environ.get("ASYNCWS_STRESS", "0") or "0")

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3's sample nonce
MASK = b"\x37\xfa\x21\x3d"


_ROOTS: set[asyncio.Task[Any]] = set()


def run(coro: Awaitable[Any], timeout: float = 60.0) -> Any:
    """Run ``coro`` in a fresh event loop with a hang guard."""

    async def guarded() -> Any:
        root = asyncio.current_task()
        assert root is not None
        _ROOTS.add(root)
        try:
            return await asyncio.wait_for(coro, timeout)
        finally:
            _ROOTS.discard(root)

    return asyncio.run(guarded())


def scaled(ci: int, stress: int) -> int:
    """``ci`` normally, ``stress`` (times the ASYNCWS_STRESS factor) under ASYNCWS_STRESS."""
    return stress * STRESS if STRESS else ci


def load_fuzz(name: str) -> Any:
    """Import ``fuzz/<name>.py`` (the fuzz targets and their shared ``_common``)."""
    import importlib

    fuzz_dir = os.path.join(ROOT, "fuzz")
    if fuzz_dir not in sys.path:
        sys.path.insert(0, fuzz_dir)
    return importlib.import_module(name)


# -- file descriptors --------------------------------------------------------------------------


def raise_nofile(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards the hard limit; return the soft limit reached."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(wanted, soft)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- handshakes --------------------------------------------------------------------------------


def upgrade_request(
    port: int,
    *,
    method: str = "GET",
    path: str = "/",
    version: str = "HTTP/1.1",
    headers: dict[str, str | None] | None = None,
    extra: list[tuple[str, str]] | None = None,
) -> bytes:
    """A client upgrade request; ``headers`` overrides the defaults (None removes one),
    ``extra`` appends fields (repeats allowed)."""
    fields: dict[str, str | None] = {
        "Host": f"127.0.0.1:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    fields.update(headers or {})
    lines = [f"{method} {path} {version}"]
    lines += [f"{k}: {v}" for k, v in fields.items() if v is not None]
    lines += [f"{k}: {v}" for k, v in extra or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class HttpHead:
    """A parsed HTTP head as read off the wire: ``start`` line, ``headers`` (lowercased names)."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        text = raw.decode("latin-1")
        lines = text.split("\r\n")
        self.start = lines[0]
        self.headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                self.headers.append((name.strip().lower(), value.strip()))

    def get(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name.lower():
                return v
        return None

    def tokens(self, name: str) -> list[str]:
        """Comma-separated tokens of every ``name`` field, lowercased."""
        out = []
        for k, v in self.headers:
            if k == name.lower():
                out += [t.strip().lower() for t in v.split(",") if t.strip()]
        return out

    def __repr__(self) -> str:
        return f"HttpHead({self.raw!r})"


async def read_head(reader: asyncio.StreamReader, timeout: float = 10.0) -> HttpHead:
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    return HttpHead(raw)


async def read_to_eof(
    reader: asyncio.StreamReader, timeout: float = 10.0, *, allow_reset: bool = True
) -> bytes:
    """Everything until the peer closes (a reset counts as the end, unless ``allow_reset`` is
    false: then it raises ConnectionResetError)."""
    chunks = []

    async def go() -> None:
        while True:
            try:
                data = await reader.read(65536)
            except ConnectionError:
                if not allow_reset:
                    raise
                return
            if not data:
                return
            chunks.append(data)

    await asyncio.wait_for(go(), timeout)
    return b"".join(chunks)


async def exchange(port: int, data: bytes, timeout: float = 10.0) -> tuple[HttpHead, bytes]:
    """Send ``data`` on a fresh connection; return the response head and whatever followed it
    up to the end of the connection (which must come: the server closes after refusing)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        head = await read_head(reader, timeout)
        rest = await read_to_eof(reader, timeout)
        return head, rest
    finally:
        writer.close()


async def open_raw(
    port: int, *, ssl: Any = None, unix: str | None = None, **kw: Any
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection past a valid handshake: frames can be written by hand. ``ssl`` (a
    client context) for TLS; ``unix`` connects to that Unix socket path instead of ``port``."""
    if unix is not None:
        reader, writer = await asyncio.open_unix_connection(unix, limit=2**20)
    else:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20, ssl=ssl)
    writer.write(upgrade_request(port, **kw))
    head = await read_head(reader)
    if not head.start.startswith("HTTP/1.1 101 "):
        raise AssertionError(f"handshake refused: {head!r}")
    return reader, writer


# -- frames ------------------------------------------------------------------------------------


def naive_mask(data: bytes, key: bytes, offset: int = 0) -> bytes:
    """The reference byte loop of RFC 6455 section 5.3."""
    return bytes(b ^ key[(i + offset) % 4] for i, b in enumerate(data))


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = MASK,
    length: int | None = None,
) -> bytes:
    """A frame built by hand, valid or not: ``rsv`` sets RSV1-3 (0-7), ``mask=None`` sends it
    unmasked, ``length`` claims a payload length other than the real one."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0x0F)
    mbit = 0x80 if mask is not None else 0
    if n < 126:
        head = bytes((b0, mbit | n))
    elif n < 65536:
        head = bytes((b0, mbit | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, mbit | 127)) + n.to_bytes(8, "big")
    if mask is not None:
        return head + mask + naive_mask(payload, mask)
    return head + payload


def close_frame(code: int | None = 1000, reason: bytes = b"", **kw: Any) -> bytes:
    payload = b"" if code is None else code.to_bytes(2, "big") + reason
    return frame(0x8, payload, **kw)


class Frame:
    def __init__(self, fin: bool, rsv: int, opcode: int, masked: bool, payload: bytes) -> None:
        self.fin = fin
        self.rsv = rsv
        self.opcode = opcode
        self.masked = masked
        self.payload = payload

    @property
    def close_code(self) -> int | None:
        if len(self.payload) < 2:
            return None
        return int.from_bytes(self.payload[:2], "big")

    def __repr__(self) -> str:
        head = f"op={self.opcode}, fin={self.fin}, masked={self.masked}"
        return f"Frame({head}, {self.payload[:40]!r})"


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    """Read one frame (unmasking it if masked); IncompleteReadError at the end of the stream."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    key = await reader.readexactly(4) if b1 & 0x80 else None
    payload = await reader.readexactly(n)
    if key is not None:
        payload = naive_mask(payload, key)
    return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, key is not None, payload)


async def read_close(
    reader: asyncio.StreamReader, timeout: float = 10.0
) -> tuple[int | None, bytes, list[Frame]]:
    """Read frames until a Close; return (its code, its reason bytes, the frames before it).
    Then wait for the end of the stream (the server must close the TCP connection)."""

    async def go() -> tuple[int | None, bytes, list[Frame]]:
        before = []
        while True:
            f = await read_frame(reader)
            if f.opcode == 0x8:
                await read_to_eof(reader, timeout)
                return f.close_code, f.payload[2:], before
            before.append(f)

    return await asyncio.wait_for(go(), timeout)


# -- servers -----------------------------------------------------------------------------------


async def echo(ws: asyncws.Websocket) -> None:
    async for msg in ws:
        await ws.send(msg)


@contextlib.asynccontextmanager
async def serving(
    handler: Callable[[asyncws.Websocket], Awaitable[Any]] | None = None, **kw: Any
) -> AsyncIterator[int]:
    """An in-process asyncws server on 127.0.0.1, port 0; yields the port."""
    server = await asyncws.start_server(handler or echo, "127.0.0.1", 0, **kw)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5)


async def check_served(port: int, text: str = "still here") -> None:
    """A normal asyncws client gets an echo from the server at ``port``."""
    ws = await asyncws.connect(f"ws://127.0.0.1:{port}/", open_timeout=10)
    try:
        await ws.send(text)
        got = await asyncio.wait_for(ws.recv(), 10)
        if got != text:
            raise AssertionError(f"echo server answered {got!r}, not {text!r}")
    finally:
        await ws.close()


@contextlib.asynccontextmanager
async def raw_server(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    *,
    unix: str | None = None,
    **kw: Any,
) -> AsyncIterator[int]:
    """A plain asyncio TCP server on 127.0.0.1, port 0 (to play a hostile WebSocket server);
    on the Unix socket path ``unix`` instead when given. ``kw`` goes to asyncio (``ssl=``)."""
    tasks: list[asyncio.Task[None]] = []

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Swallowed: Python 3.11's start_server callback calls task.exception() on a
            # cancelled handler task, which logs an error.
            pass
        finally:
            writer.close()

    if unix is not None:
        server = await asyncio.start_unix_server(wrapped, unix, **kw)
        port = 0
    else:
        server = await asyncio.start_server(wrapped, "127.0.0.1", 0, **kw)
        port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def read_request_key(reader: asyncio.StreamReader) -> str:
    """Read a client's upgrade request; return its Sec-WebSocket-Key."""
    head = await read_head(reader)
    key = head.get("sec-websocket-key")
    assert key is not None, head
    return key


def accept_for(key: str) -> str:
    import hashlib

    digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    return base64.b64encode(digest).decode()


def response_101(key: str, *, accept: str | None = None, omit: tuple[str, ...] = ()) -> bytes:
    fields = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Accept": accept if accept is not None else accept_for(key),
    }
    lines = ["HTTP/1.1 101 Switching Protocols"]
    lines += [f"{k}: {v}" for k, v in fields.items() if k not in omit]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def other_tasks() -> list[asyncio.Task[Any]]:
    """Tasks of the running loop other than the current one that are not done."""
    me = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not me and t not in _ROOTS and not t.done()]


async def wait_no_other_tasks(timeout: float = 5.0) -> list[asyncio.Task[Any]]:
    """Wait (bounded) for every other task to finish; return those still pending."""
    deadline = time.monotonic() + timeout
    while other_tasks() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return other_tasks()


# -- a server in a subprocess, for RSS measurements --------------------------------------------


def rss_kib(pid: int) -> int:
    """Resident set size of process ``pid`` in KiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")  # pragma: no cover


def has_proc() -> bool:
    return os.path.exists(f"/proc/{os.getpid()}/status")


class ServerProcess:
    """``python tests/_raw.py <config>`` in a subprocess: ``port``, ``rss()``, and ``lines``, a
    queue of what the server prints after its ``PORT`` line (progress reports)."""

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.lines: queue.Queue[str] = queue.Queue()

    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), json.dumps(self.config)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()  # blocks until the server is listening (or died)
        if not first.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"server subprocess did not start: {first!r}")
        self.port = int(first.split()[1])
        threading.Thread(target=self._pump, daemon=True).start()
        return self

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def rss(self) -> int:
        assert self.proc is not None
        return rss_kib(self.proc.pid)

    def last_line(self, prefix: str) -> str | None:
        """The latest queued line starting with ``prefix`` (draining the queue)."""
        found = None
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return found
            if line.startswith(prefix):
                found = line

    def __exit__(self, *exc: Any) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class RssSampler:
    """Samples a subprocess's RSS every ``interval`` seconds in the running loop; ``peak``."""

    def __init__(self, server: ServerProcess, interval: float = 0.05) -> None:
        self.server = server
        self.interval = interval
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.server.rss())
            await asyncio.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self.peak = self.server.rss()
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._task is not None
        self._task.cancel()
        self.peak = max(self.peak, self.server.rss())


def _serve_main(config: dict[str, Any]) -> None:
    """The subprocess server. Modes:

    * ``echo``: echoes every message.
    * ``sleep_drain``: the handler sleeps ``delay`` seconds without reading, then reads every
      message, and sends back the total number of bytes received (as text) once the peer sends
      the text message ``"done"``.
    * ``send``: the handler sends ``total`` bytes as ``chunk``-byte binary messages with
      ``flush``, printing ``SENT <bytes>`` after each, then ``DONE``, and closes.
    """
    mode = config.get("mode", "echo")
    kw = {
        k: config[k]
        for k in ("max_size", "max_queue", "open_timeout", "close_timeout", "backlog")
        if k in config
    }

    async def sleep_drain(ws: asyncws.Websocket) -> None:
        await asyncio.sleep(config.get("delay", 1.0))
        total = 0
        async for msg in ws:
            if msg == "done":
                await ws.send(str(total))
                return
            total += len(msg)

    async def send(ws: asyncws.Websocket) -> None:
        chunk = b"\x00" * config.get("chunk", 2**20)
        flush = bool(config.get("flush", False))
        sent = 0
        while sent < config["total"]:
            await ws.send(chunk, flush=flush)
            sent += len(chunk)
            print(f"SENT {sent}", flush=True)
        print("DONE", flush=True)
        await ws.close()

    handlers = {"echo": echo, "sleep_drain": sleep_drain, "send": send}

    async def main() -> None:
        server = await asyncws.start_server(handlers[mode], "127.0.0.1", 0, **kw)
        print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
        async with server:
            await server.serve_forever()

    raise_nofile(config.get("nofile", 0))
    asyncio.run(main())


if __name__ == "__main__":
    _serve_main(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {})
