"""The command line: ``python -m asyncws URL`` (an interactive client), ``python -m asyncws serve
--echo HOST PORT`` (an echo server), ``python -m asyncws serve --chat [--workers N] [--redis
URL] HOST PORT`` (a chat server, rooms by path) and ``python -m asyncws --version``.

This module holds ``main()``, its two argument parsers, the interactive client (stdin lines are
sent as text messages, incoming messages are printed prefixed with ``< ``), the echo and chat
servers, the parent of ``--workers`` processes and a stdin reader that runs in a daemon thread so
that reading never blocks the event loop, on every platform. It is a user of the public API only
(``connect``, ``start_server``, ``Websocket``, the exceptions, ``asyncws.fanout``,
``HAS_SPEEDUPS``, ``__version__``): it must not touch the protocol core, the handshake or the
kernels, and nothing in the library may import it.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import contextlib
import functools
import os
import re
import signal
import ssl
import sys
import sysconfig
import threading
from collections.abc import Sequence
from typing import Any, Callable
from urllib.parse import urlsplit

import asyncws
from asyncws.fanout import FanoutUnavailable, LocalFanout, RedisFanout

__all__ = ["main"]

PROG = "python -m asyncws"
DEFAULT_MAX_SIZE = asyncws.options.MAX_SIZE
SHUTDOWN_TIMEOUT = 5.0  # seconds the echo server gives its connections to close on exit
BINARY_PREVIEW = 32  # bytes of a binary message shown in hex
# At the end of input the client lingers for replies to what it sent last: a Ping round trip,
# then until no message has arrived for LINGER_QUIET seconds, LINGER_MAX seconds at most.
LINGER_QUIET = 0.2
LINGER_MAX = 2.0
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
PARENT_CHECK = 1.0  # seconds between a worker's checks that its parent (--workers) still runs

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an HTTP field name (RFC 9110 5.1)

CLIENT_DESCRIPTION = """\
An interactive WebSocket client: connects to URL, sends each line read from stdin as a text
message and prints each message received, prefixed with "< " (binary messages as their size and
the hex of their first 32 bytes). At the end of input (Ctrl-D; Ctrl-Z then Enter on Windows) it
waits briefly for replies (a ping round trip, then until the connection is quiet for 0.2 s, 2 s
at most) and closes the connection with code 1000; Ctrl-C closes it at once (a second Ctrl-C
drops it). Exits 0 once the connection is closed, by either side; 1 when the connection or the
handshake fails.

To run an echo server instead, see: python -m asyncws serve --help"""

CLIENT_EPILOG = """\
examples:
  python -m asyncws ws://localhost:8000/
  python -m asyncws --header "Authorization: Bearer TOKEN" wss://example.com/feed
  python -m asyncws --insecure wss://127.0.0.1:8443/   (self-signed certificate)
  python -m asyncws --proxy http://user:pw@proxy:3128 wss://example.com/feed
  python -m asyncws serve --echo 127.0.0.1 8000         (an echo server)
  python -m asyncws --version"""

SERVE_DESCRIPTION = """\
Run a WebSocket server on HOST:PORT. --echo: every message received is sent back unchanged.
--chat: the request path is a room, and every message received is sent to every connection in
the same room (the sender included), text as text and binary as binary. Prints "Serving on
ws://HOST:PORT" (with the port actually bound, so PORT may be 0) and runs until SIGINT (Ctrl-C)
or SIGTERM, then closes its connections with 1001 (a second signal drops them) and exits 0.

--workers N runs N processes that share the port (SO_REUSEPORT; not on Windows), each printing
"Serving on ws://HOST:PORT (worker PID)" and adding an X-Worker-PID header to its 101 responses;
SIGINT or SIGTERM to the parent stops them all. With --chat and --redis URL, rooms span every
worker and every machine using the same Redis (pip install asyncws[redis])."""

SERVE_EPILOG = """\
examples:
  python -m asyncws serve --echo 127.0.0.1 8000
  python -m asyncws serve --echo 0.0.0.0 0            (any free port; printed on start)
  python -m asyncws serve --echo --certfile cert.pem --keyfile key.pem 127.0.0.1 8443
  python -m asyncws serve --chat --workers 4 --redis redis://127.0.0.1:6379 127.0.0.1 8000"""


# -- arguments ---------------------------------------------------------------------------------


def _header(text: str) -> tuple[str, str]:
    """``NAME:VALUE`` -> ``(NAME, VALUE)``, refusing what would corrupt the request."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not _TOKEN.fullmatch(name):
        raise argparse.ArgumentTypeError(f"expected NAME:VALUE with an HTTP header name: {text!r}")
    if any(c in value for c in "\r\n\0"):
        raise argparse.ArgumentTypeError(f"header value contains a line break or NUL: {text!r}")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"header value is not Latin-1: {text!r}") from None
    return name, value


def _max_size(text: str) -> int | None:
    try:
        size = int(text)
    except ValueError:
        size = -1
    if size < 0:
        raise argparse.ArgumentTypeError(f"expected a number of bytes (0 for no limit): {text!r}")
    return size or None


def _workers(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a number of processes, at least 1: {text!r}")
    return count


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535: {text!r}")
    return port


def _version() -> str:
    kernels = "Cython kernels" if asyncws.HAS_SPEEDUPS else "pure-Python kernels"
    # sys._is_gil_enabled() exists from 3.13 on; before, every build has the GIL. A
    # free-threaded build turns the GIL back on for an extension not declared compatible.
    gil_enabled = getattr(sys, "_is_gil_enabled", lambda: True)()
    if not sysconfig.get_config_var("Py_GIL_DISABLED"):
        build = "GIL"
    elif gil_enabled:
        build = "free-threaded build, GIL enabled"
    else:
        build = "free-threaded"
    return f"asyncws {asyncws.__version__} ({kernels}, {build})"


def _add_max_size(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-size",
        type=_max_size,
        default=DEFAULT_MAX_SIZE,
        metavar="BYTES",
        help="largest message accepted, in bytes; a larger one closes the connection with "
        f"1009 (default {DEFAULT_MAX_SIZE}; 0 for no limit)",
    )


def client_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} [options] URL\n       {PROG} serve --echo [options] HOST PORT",
        description=CLIENT_DESCRIPTION,
        epilog=CLIENT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", metavar="URL", help="a ws:// or wss:// URL to connect to")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="for wss:// URLs: do not verify the server's certificate or host name",
    )
    parser.add_argument(
        "--header",
        dest="headers",
        action="append",
        type=_header,
        default=[],
        metavar="NAME:VALUE",
        help="an extra HTTP header for the opening handshake (repeatable)",
    )
    parser.add_argument(
        "--proxy",
        metavar="URL",
        help="connect through this proxy: http://[USER:PASSWORD@]HOST:PORT (or https://, "
        "socks5://, socks5h://, socks4://), or 'none' for a direct connection (default: the "
        "environment's https_proxy for wss://, http_proxy for ws://, minus no_proxy)",
    )
    _add_max_size(parser)
    parser.add_argument(
        "--version", action="version", version=_version(), help="show the version and exit"
    )
    return parser


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} serve",
        usage=f"{PROG} serve (--echo | --chat) [options] HOST PORT",
        description=SERVE_DESCRIPTION,
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--echo", action="store_true", help="send every message back")
    mode.add_argument(
        "--chat",
        action="store_true",
        help="send every message to every connection on the same path (a room)",
    )
    parser.add_argument("host", metavar="HOST", help="address to listen on, e.g. 127.0.0.1")
    parser.add_argument("port", metavar="PORT", type=_port, help="TCP port; 0 for any free port")
    _add_max_size(parser)
    parser.add_argument("--certfile", metavar="PEM", help="certificate chain: serve wss://")
    parser.add_argument(
        "--keyfile", metavar="PEM", help="private key, if not in the --certfile file"
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        metavar="N",
        help="run N processes sharing the port (reuse_port); PORT must not be 0",
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        help="with --chat: share the rooms between processes and machines through this Redis "
        "(redis://, rediss:// or unix://)",
    )
    return parser


def _check_serve_options(parser: argparse.ArgumentParser, options: argparse.Namespace) -> None:
    if options.keyfile and not options.certfile:
        parser.error("--keyfile needs --certfile")
    if options.redis and not options.chat:
        parser.error("--redis needs --chat")
    if options.workers is not None:
        if not hasattr(os, "fork"):
            parser.error("--workers needs os.fork and SO_REUSEPORT (Linux, macOS, BSD)")
        if options.port == 0:
            parser.error("--workers needs a port number: with 0 each worker gets its own port")
        if options.chat and options.workers > 1 and not options.redis:
            parser.error("--chat --workers N needs --redis URL: rooms must span the workers")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["serve"]:
            parser = serve_parser()
            options = parser.parse_args(args[1:])
            _check_serve_options(parser, options)
            if options.workers is not None:
                return _run_workers(options)
            return asyncio.run(_serve(options))
        options = client_parser().parse_args(args)
        return asyncio.run(_client(options))
    except KeyboardInterrupt:  # only where no signal handler could be installed
        return 130


# -- shared helpers ------------------------------------------------------------------------------


def _out(line: str) -> None:
    """Print a line now (stdout may be a pipe), whatever characters the terminal can show.

    One write per line, so that the lines of ``--workers`` processes do not interleave."""
    try:
        print(line + "\n", end="", flush=True)
    except UnicodeEncodeError:
        encoding = sys.stdout.encoding or "utf-8"
        sys.stdout.buffer.write((line + "\n").encode(encoding, "backslashreplace"))
        sys.stdout.flush()


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# What a peer sends must not drive the terminal: C0 controls but tab and newline (ESC starts
# the sequences that clear the screen, move the cursor or set the window title), DEL, C1
# controls (0x9B is a one-character CSI in some terminals) and lone surrogates.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _printable(text: str) -> str:
    """``text`` with every control character a peer could use on a terminal escaped."""
    return _UNPRINTABLE.sub(_escape_char, text)


def _describe(exc: BaseException) -> str:
    return _printable(str(exc) or type(exc).__name__)


def _on_stop_signals(
    callback: Callable[[], None], signals: Sequence[int] = _STOP_SIGNALS
) -> Callable[[], None]:
    """Call ``callback`` on SIGINT or SIGTERM (or ``signals``); return a function that undoes it.

    ``loop.add_signal_handler`` where it exists (Unix); elsewhere a ``signal.signal`` handler
    that hands over to the loop (Windows' event loops wake up for it)."""
    loop = asyncio.get_running_loop()
    undo: list[Callable[[], object]] = []
    for sig in signals:
        try:
            loop.add_signal_handler(sig, callback)
            undo.append(functools.partial(loop.remove_signal_handler, sig))
            continue
        except (NotImplementedError, RuntimeError, ValueError):
            pass
        try:
            previous = signal.signal(sig, lambda _s, _f: loop.call_soon_threadsafe(callback))
        except (ValueError, OSError):  # not the main thread
            continue
        undo.append(functools.partial(signal.signal, sig, previous))

    def restore() -> None:
        for step in undo:
            step()

    return restore


# -- the client ----------------------------------------------------------------------------------


def _read_stdin(loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]) -> None:
    """The stdin thread: put each line (without its line ending) on ``lines``, then None.

    It reads the unbuffered ``sys.stdin.buffer.raw`` where there is one, so that it holds no
    lock of ``sys.stdin`` when the interpreter exits while it is still blocked in a read (a
    daemon thread blocked in ``sys.stdin.readline()`` can abort the interpreter at exit)."""

    def put(item: str | None) -> None:
        try:
            loop.call_soon_threadsafe(lines.put_nowait, item)
        except RuntimeError:  # the loop is closed: the client is done
            pass

    stdin: Any = sys.stdin
    raw = getattr(getattr(stdin, "buffer", None), "raw", None)
    try:
        if raw is None:  # stdin replaced by a text-only object
            while stdin is not None:
                line = stdin.readline()
                if not line:
                    break
                put(line.rstrip("\r\n"))
            return
        encoding = getattr(stdin, "encoding", None) or "utf-8"
        decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        pending = ""
        while True:
            chunk = raw.read(65536)
            if chunk is None:  # non-blocking stdin with nothing yet: unusual, wait a little
                threading.Event().wait(0.05)
                continue
            pending += decoder.decode(chunk, final=not chunk)
            *complete, pending = pending.split("\n")
            for line in complete:
                put(line.rstrip("\r"))
            if not chunk:
                if pending:
                    put(pending.rstrip("\r"))
                return
    except (OSError, ValueError):
        pass  # stdin closed or unreadable: that is the end of input too
    finally:
        put(None)


def _show(message: str | bytes) -> str:
    if isinstance(message, str):
        return f"< {_printable(message)}"
    return f"< (binary) {len(message)} bytes: {message[:BINARY_PREVIEW].hex()}"


async def _print_incoming(ws: asyncws.Websocket, activity: asyncio.Event) -> None:
    async for message in ws:
        _out(_show(message))
        activity.set()


async def _linger(ws: asyncws.Websocket, activity: asyncio.Event) -> None:
    """Give the server time to answer the last lines before the client closes (a server may not
    send anything after it has received the client's Close)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LINGER_MAX
    try:
        pong = await ws.ping()
        await asyncio.wait_for(pong, LINGER_MAX)
    except (asyncio.TimeoutError, asyncio.CancelledError, asyncws.ConnectionClosed):
        if ws.closed.done() or loop.time() >= deadline:
            return
    while ws.open:
        activity.clear()
        left = deadline - loop.time()
        if left <= 0:
            return
        try:
            await asyncio.wait_for(activity.wait(), min(LINGER_QUIET, left))
        except asyncio.TimeoutError:
            return  # quiet


async def _send_lines(ws: asyncws.Websocket, lines: asyncio.Queue[str | None]) -> None:
    """Send each line as a text message; return at the end of input."""
    while True:
        line = await lines.get()
        if line is None:
            return
        try:
            await ws.send(line)
        except asyncws.ConnectionClosed:
            return


def _ssl_for(url: str, insecure: bool) -> ssl.SSLContext | None:
    try:
        secure = urlsplit(url).scheme.lower() == "wss"
    except ValueError:
        return None  # connect() reports the bad URL
    if not (secure and insecure):
        return None
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _client(options: argparse.Namespace) -> int:
    url: str = options.url
    kwds: dict[str, Any] = {"max_size": options.max_size}
    if options.headers:
        kwds["extra_headers"] = options.headers
    context = _ssl_for(url, options.insecure)
    if context is not None:
        kwds["ssl"] = context
    if options.proxy is not None:
        kwds["proxy"] = None if options.proxy.lower() == "none" else options.proxy
    try:
        ws = await asyncws.connect(url, **kwds)
    except (
        OSError,
        asyncio.TimeoutError,
        asyncws.WebSocketError,
        ValueError,
        ImportError,
    ) as exc:
        _err(f"{PROG}: failed to connect to {url}: {_describe(exc)}")
        return 1
    _out(f"Connected to {url}.")

    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    threading.Thread(
        target=_read_stdin, args=(loop, lines), name="asyncws-stdin", daemon=True
    ).start()
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():  # a second Ctrl-C: don't wait for the closing handshake
            ws.writer.abort()
        stop.set()

    restore = _on_stop_signals(on_signal)
    activity = asyncio.Event()
    incoming = asyncio.ensure_future(_print_incoming(ws, activity))
    outgoing = asyncio.ensure_future(_send_lines(ws, lines))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({incoming, outgoing, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if outgoing.done() and not incoming.done() and ws.open:  # end of input
            lingering = asyncio.ensure_future(_linger(ws, activity))
            await asyncio.wait({lingering, incoming, stopped}, return_when=asyncio.FIRST_COMPLETED)
            lingering.cancel()
        outgoing.cancel()
        stopped.cancel()
        if not incoming.done():
            # Messages that arrive while closing are still printed.
            await ws.close(1000)
        await incoming
    finally:
        restore()
        for task in (incoming, outgoing, stopped):
            task.cancel()
        ws.writer.abort()  # a no-op once closed; cuts the connection if we were interrupted
    code, reason = ws.close_code, _printable(ws.close_reason)
    _out(f"Connection closed: {code}{' ' + reason if reason else ''}.")
    return 0


# -- the echo and chat servers ------------------------------------------------------------------


def _chat(hub: LocalFanout | RedisFanout) -> Callable[[asyncws.Websocket], Any]:
    """The chat handler: the request path is the room; what a connection sends goes to the room."""

    async def chat(ws: asyncws.Websocket) -> None:
        assert ws.request is not None
        room = ws.request.path
        # Messages are read once the room is listened to, so a sender gets its own messages
        # back: a client knows it is in the room when its first message comes back.
        listening = hub.subscribe(ws, room)
        await asyncio.wait([listening, ws.closed], return_when=asyncio.FIRST_COMPLETED)
        async for message in ws:
            try:
                await hub.publish(room, message)
            except FanoutUnavailable as exc:  # Redis is down: this message is lost, not the peer
                _err(f"{PROG} serve: {exc}")

    return chat


async def _echo(ws: asyncws.Websocket) -> None:
    async for message in ws:
        await ws.send(message)


async def _serve(options: argparse.Namespace, parent: int | None = None) -> int:
    """One server process; ``parent`` is the pid of the ``--workers`` parent, if any."""
    context: ssl.SSLContext | None = None
    if options.certfile:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(options.certfile, options.keyfile)
        except (OSError, ssl.SSLError) as exc:
            _err(f"{PROG} serve: cannot load the certificate: {_describe(exc)}")
            return 1

    hub: LocalFanout | RedisFanout | None = None
    if options.chat:
        try:
            hub = RedisFanout(options.redis) if options.redis else LocalFanout()
        except ImportError as exc:
            _err(f"{PROG} serve: {exc}")
            return 1
    async with contextlib.AsyncExitStack() as stack:
        if hub is not None:
            await stack.enter_async_context(hub)
        return await _serve_with(options, context, _echo if hub is None else _chat(hub), parent)


async def _serve_with(
    options: argparse.Namespace,
    context: ssl.SSLContext | None,
    handler: Callable[[asyncws.Websocket], Any],
    parent: int | None,
) -> int:
    active: set[asyncws.Websocket] = set()
    idle = asyncio.Event()
    idle.set()

    async def tracked(ws: asyncws.Websocket) -> None:
        active.add(ws)
        idle.clear()
        try:
            await handler(ws)
        finally:
            active.discard(ws)
            if not active:
                idle.set()

    worker: dict[str, Any] = {}
    if parent is not None:
        worker = {"reuse_port": True, "extra_headers": {"X-Worker-PID": str(os.getpid())}}
    try:
        server = await asyncws.start_server(
            tracked, options.host, options.port, max_size=options.max_size, ssl=context, **worker
        )
    except OSError as exc:
        _err(f"{PROG} serve: cannot listen on {options.host}:{options.port}: {_describe(exc)}")
        return 1

    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():  # a second Ctrl-C: drop the connections still closing
            for ws in list(active):
                ws.writer.abort()
        stop.set()

    # A worker stops on SIGTERM from its parent only: Ctrl-C reaches the whole process group,
    # and the parent turns it into one SIGTERM per worker.
    restore = _on_stop_signals(on_signal, (signal.SIGTERM,) if parent else _STOP_SIGNALS)
    watcher = None if parent is None else asyncio.ensure_future(_watch_parent(parent, stop))
    try:
        port = server.sockets[0].getsockname()[1]
        host = f"[{options.host}]" if ":" in options.host else options.host
        which = "" if parent is None else f" (worker {os.getpid()})"
        _out(f"Serving on {'wss' if context else 'ws'}://{host}:{port}{which}")
        await stop.wait()
    finally:
        restore()
        if watcher is not None:
            watcher.cancel()
        server.close()
        # Since Python 3.12 wait_closed() also waits for the connections: close them first.
        closing = [ws.close(1001, "server shutting down") for ws in list(active)]
        try:
            await asyncio.wait_for(
                asyncio.gather(*closing, idle.wait(), server.wait_closed(), return_exceptions=True),
                SHUTDOWN_TIMEOUT,
            )
        except asyncio.TimeoutError:
            for ws in list(active):
                ws.writer.abort()
    return 0


# -- --workers: the parent process ---------------------------------------------------------------


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    """Stop a worker whose parent died without stopping it (SIGKILL): no orphans."""
    while os.getppid() == parent:
        await asyncio.sleep(PARENT_CHECK)
    stop.set()


def _run_workers(options: argparse.Namespace) -> int:
    """Fork ``options.workers`` servers on one port; forward SIGINT/SIGTERM to them as SIGTERM;
    return 0 once all have exited 0, else 1 (one failing stops the others)."""
    parent = os.getpid()
    sys.stdout.flush()
    children: list[int] = []
    for _ in range(options.workers):
        pid = os.fork()  # before any event loop exists here: a child must not inherit one
        if pid == 0:
            status = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent forwards it
                status = asyncio.run(_serve(options, parent))
            except BaseException as exc:  # never return into the parent's code
                _err(f"{PROG} serve: worker {os.getpid()} failed: {_describe(exc)}")
            finally:
                sys.stdout.flush()
                os._exit(status)
        children.append(pid)

    def stop_workers(_signum: int = signal.SIGTERM, _frame: object = None) -> None:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    for sig in _STOP_SIGNALS:
        signal.signal(sig, stop_workers)
    status = 0
    remaining = set(children)
    while remaining:
        pid, wait_status = os.wait()
        remaining.discard(pid)
        if os.waitstatus_to_exitcode(wait_status) != 0 and status == 0:
            status = 1
            stop_workers()
    return status
