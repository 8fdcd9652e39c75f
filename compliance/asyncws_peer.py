"""The asyncws side of an Autobahn|Testsuite run: an echo server and a fuzzing-server client.

``run.py`` starts this module as a subprocess, because asyncws picks its framing backend
(Cython extension or pure-Python fallback, ``ASYNCWS_NO_SPEEDUPS=1``) once, at import time.
``server`` serves an echo handler on 127.0.0.1 (port 0 by default) and prints one line
``LISTENING <port>`` once it accepts connections; it runs until terminated. ``client`` drives
every case of a running wstest fuzzingserver: ``/getCaseCount``, then ``/runCase`` for each
case (echoing every message until the peer closes), then ``/updateReports``. Both print the
backend actually in use and refuse to run if it differs from ``--expect-backend``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import ssl
import sys
from typing import Any
from urllib.parse import quote

import asyncws

MAX_SIZE = 16 * 2**20  # Autobahn 9.1.6 / 9.2.6 send 16 MiB messages.


def detect_backend() -> str:
    """Name the framing backend asyncws loaded: ``speedups`` or ``purepython``."""
    try:
        kernels = importlib.import_module("asyncws._kernels")
    except ImportError:
        kernels = None
    value = getattr(kernels, "BACKEND", None)
    if isinstance(value, str):
        return "speedups" if "speedup" in value.lower() else "purepython"
    return "speedups" if "asyncws._speedups" in sys.modules else "purepython"


def log(msg: str) -> None:
    print(f"[asyncws_peer] {msg}", file=sys.stderr, flush=True)


def check_transport(ws: Any) -> None:
    """With ASYNCWS_TRANSPORT set (run.py --transport), the connection must run on it."""
    wanted = os.environ.get("ASYNCWS_TRANSPORT")
    if wanted in ("asyncio", "aiofastnet"):
        on_aiofastnet = type(ws.writer).__module__.startswith("aiofastnet")
        if on_aiofastnet != (wanted == "aiofastnet"):
            raise RuntimeError(f"ASYNCWS_TRANSPORT={wanted} but the transport is {ws.writer!r}")


async def echo(ws: Any) -> None:
    """Echo every message back until the peer closes (``recv()`` returns None)."""
    check_transport(ws)
    while True:
        msg = await ws.recv()
        if msg is None:
            return
        await ws.send(msg)


# Keepalive pings would be stray frames in wstest's transcripts: off. The server accepts
# permessage-deflate when a case offers it (12.*, 13.*); the client offers it only when run.py
# asks (ASYNCWS_AUTOBAHN_DEFLATE=1), since the fuzzingserver's other cases do not expect it.
OPTIONS: dict = {"max_size": MAX_SIZE, "ping_interval": None}


async def serve(port: int, ssl_ctx: ssl.SSLContext | None) -> None:
    kwargs: dict = dict(OPTIONS, compression="deflate")
    if ssl_ctx is not None:
        kwargs["ssl"] = ssl_ctx
    server = await asyncws.start_server(echo, "127.0.0.1", port, **kwargs)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()[1]
    print(f"LISTENING {bound}", flush=True)
    await stop.wait()
    server.close()
    await asyncio.wait_for(server.wait_closed(), 5)


async def _connect(url: str, ssl_ctx: ssl.SSLContext | None) -> Any:
    kwargs: dict = dict(OPTIONS)
    if os.environ.get("ASYNCWS_AUTOBAHN_DEFLATE") == "1":
        kwargs["compression"] = "deflate"
    if ssl_ctx is not None:
        kwargs["ssl"] = ssl_ctx
    ws = await asyncws.connect(url, **kwargs)
    check_transport(ws)
    return ws


async def drive(base: str, agent: str, ssl_ctx: ssl.SSLContext | None, case_timeout: float) -> int:
    ws = await asyncio.wait_for(_connect(f"{base}/getCaseCount", ssl_ctx), 10)
    count_msg = await asyncio.wait_for(ws.recv(), 10)
    await ws.close()
    count = int(count_msg)
    log(f"fuzzingserver has {count} cases")
    timeouts = 0
    for case in range(1, count + 1):
        url = f"{base}/runCase?case={case}&agent={quote(agent)}"
        ws = None
        try:
            ws = await asyncio.wait_for(_connect(url, ssl_ctx), 10)
            await asyncio.wait_for(echo(ws), case_timeout)
        except asyncio.TimeoutError:
            # wstest grades the case; we only make sure one hung case cannot hang the run.
            timeouts += 1
            log(f"case {case}: timed out after {case_timeout} s, moving on")
            if ws is not None:
                try:
                    await asyncio.wait_for(ws.close(), 2)
                except Exception:  # noqa: BLE001 - best effort on a broken connection
                    pass
        except Exception as exc:  # noqa: BLE001 - wstest grades it; keep going
            log(f"case {case}: {type(exc).__name__}: {exc}")
    ws = await asyncio.wait_for(_connect(f"{base}/updateReports?agent={quote(agent)}", ssl_ctx), 10)
    while await asyncio.wait_for(ws.recv(), 60) is not None:
        pass
    log(f"ran {count} cases ({timeouts} timed out), reports updated")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--expect-backend", choices=["speedups", "purepython"])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_srv = sub.add_parser("server", help="echo server on 127.0.0.1")
    p_srv.add_argument("--port", type=int, default=0)
    p_srv.add_argument("--certfile")
    p_srv.add_argument("--keyfile")
    p_cli = sub.add_parser("client", help="drive a wstest fuzzingserver")
    p_cli.add_argument("--url", required=True, help="e.g. ws://127.0.0.1:9001")
    p_cli.add_argument("--agent", required=True)
    p_cli.add_argument("--cafile", help="CA to trust for wss://")
    p_cli.add_argument("--case-timeout", type=float, default=60.0)
    args = parser.parse_args()

    backend = detect_backend()
    log(
        f"asyncws {getattr(asyncws, '__version__', '?')} from {asyncws.__file__}, "
        f"backend {backend}, ASYNCWS_NO_SPEEDUPS={os.environ.get('ASYNCWS_NO_SPEEDUPS', '')!r}, "
        f"ASYNCWS_TRANSPORT={os.environ.get('ASYNCWS_TRANSPORT', '')!r}"
    )
    if args.expect_backend and backend != args.expect_backend:
        log(f"ERROR: expected backend {args.expect_backend}, got {backend}")
        return 2

    if args.cmd == "server":
        ctx = None
        if args.certfile:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(args.certfile, args.keyfile)
        asyncio.run(serve(args.port, ctx))
        return 0
    ctx = ssl.create_default_context(cafile=args.cafile) if args.cafile else None
    return asyncio.run(drive(args.url.rstrip("/"), args.agent, ctx, args.case_timeout))


if __name__ == "__main__":
    sys.exit(main())
