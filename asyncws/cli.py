"""The command line: ``python -m asyncws URL`` (an interactive client), ``python -m asyncws serve
--echo HOST PORT`` (an echo server) and ``python -m asyncws --version``.

This module holds ``main()``, its two argument parsers, the interactive client (stdin lines are
sent as text messages, incoming messages are printed prefixed with ``< ``), the echo server and a
stdin reader that runs in a daemon thread so that reading never blocks the event loop, on every
platform. It is a user of the public API only (``connect``, ``start_server``, ``Websocket``, the
exceptions, ``HAS_SPEEDUPS``, ``__version__``): it must not touch the protocol core, the
handshake or the kernels, and nothing in the library may import it.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import functools
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

__all__ = ["main"]

PROG = "python -m asyncws"
DEFAULT_MAX_SIZE = 2**20
SHUTDOWN_TIMEOUT = 5.0  # seconds the echo server gives its connections to close on exit
BINARY_PREVIEW = 32  # bytes of a binary message shown in hex
# At the end of input the client lingers for replies to what it sent last: a Ping round trip,
# then until no message has arrived for LINGER_QUIET seconds, LINGER_MAX seconds at most.
LINGER_QUIET = 0.2
LINGER_MAX = 2.0

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
  python -m asyncws serve --echo 127.0.0.1 8000         (an echo server)
  python -m asyncws --version"""

SERVE_DESCRIPTION = """\
Run a WebSocket echo server on HOST:PORT: every message received is sent back unchanged. Prints
"Serving on ws://HOST:PORT" (with the port actually bound, so PORT may be 0) and runs until
SIGINT (Ctrl-C) or SIGTERM, then closes its connections with 1001 (a second signal drops them)
and exits 0."""

SERVE_EPILOG = """\
examples:
  python -m asyncws serve --echo 127.0.0.1 8000
  python -m asyncws serve --echo 0.0.0.0 0            (any free port; printed on start)
  python -m asyncws serve --echo --certfile cert.pem --keyfile key.pem 127.0.0.1 8443"""


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
    _add_max_size(parser)
    parser.add_argument(
        "--version", action="version", version=_version(), help="show the version and exit"
    )
    return parser


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} serve",
        usage=f"{PROG} serve --echo [options] HOST PORT",
        description=SERVE_DESCRIPTION,
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--echo",
        action="store_true",
        required=True,
        help="send every message back (the only server mode; required)",
    )
    parser.add_argument("host", metavar="HOST", help="address to listen on, e.g. 127.0.0.1")
    parser.add_argument("port", metavar="PORT", type=_port, help="TCP port; 0 for any free port")
    _add_max_size(parser)
    parser.add_argument("--certfile", metavar="PEM", help="certificate chain: serve wss://")
    parser.add_argument(
        "--keyfile", metavar="PEM", help="private key, if not in the --certfile file"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["serve"]:
            options = serve_parser().parse_args(args[1:])
            if options.keyfile and not options.certfile:
                serve_parser().error("--keyfile needs --certfile")
            return asyncio.run(_serve(options))
        options = client_parser().parse_args(args)
        return asyncio.run(_client(options))
    except KeyboardInterrupt:  # only where no signal handler could be installed
        return 130


# -- shared helpers ------------------------------------------------------------------------------


def _out(line: str) -> None:
    """Print a line now (stdout may be a pipe), whatever characters the terminal can show."""
    try:
        print(line, flush=True)
    except UnicodeEncodeError:
        encoding = sys.stdout.encoding or "utf-8"
        sys.stdout.buffer.write((line + "\n").encode(encoding, "backslashreplace"))
        sys.stdout.flush()


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _on_stop_signals(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` on SIGINT or SIGTERM; return a function that undoes it.

    ``loop.add_signal_handler`` where it exists (Unix); elsewhere a ``signal.signal`` handler
    that hands over to the loop (Windows' event loops wake up for it)."""
    loop = asyncio.get_running_loop()
    undo: list[Callable[[], object]] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
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
        return f"< {message}"
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
    try:
        ws = await asyncws.connect(url, **kwds)
    except (OSError, asyncio.TimeoutError, asyncws.WebSocketError, ValueError) as exc:
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
    code, reason = ws.close_code, ws.close_reason
    _out(f"Connection closed: {code}{' ' + reason if reason else ''}.")
    return 0


# -- the echo server -----------------------------------------------------------------------------


async def _serve(options: argparse.Namespace) -> int:
    context: ssl.SSLContext | None = None
    if options.certfile:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(options.certfile, options.keyfile)
        except (OSError, ssl.SSLError) as exc:
            _err(f"{PROG} serve: cannot load the certificate: {_describe(exc)}")
            return 1

    active: set[asyncws.Websocket] = set()
    idle = asyncio.Event()
    idle.set()

    async def echo(ws: asyncws.Websocket) -> None:
        active.add(ws)
        idle.clear()
        try:
            async for message in ws:
                await ws.send(message)
        finally:
            active.discard(ws)
            if not active:
                idle.set()

    try:
        server = await asyncws.start_server(
            echo, options.host, options.port, max_size=options.max_size, ssl=context
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

    restore = _on_stop_signals(on_signal)
    try:
        port = server.sockets[0].getsockname()[1]
        host = f"[{options.host}]" if ":" in options.host else options.host
        _out(f"Serving on {'wss' if context else 'ws'}://{host}:{port}")
        await stop.wait()
    finally:
        restore()
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
