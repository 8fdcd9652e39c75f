#!/usr/bin/env python
"""End-to-end echo benchmark: asyncws against its peers, interleaved, on one pinned CPU.

For every cell (loop x TLS x deflate x mode x kind x size) and every round, each library gets a
fresh echo *server* process and a fresh *client* process on 127.0.0.1, both pinned to the same
single CPU (``os.sched_setaffinity``), so the figure is the sum of the two sides' costs. Rounds
are interleaved across libraries (A, B, C, A, B, C, ...) and the median of the rounds is
reported; only ratios from one run mean anything on a shared machine.

Modes:
  pingpong   one message in flight: send, wait for the echo, repeat (round trips per second)
  pipelined  ``--inflight`` (100) messages in flight: a new one is sent per echo received

Libraries (``--impl``; the server and the client of a row use the same library):
  tcp                the floor: an unframed TCP echo of the same bytes
  asyncws            asyncws with its Cython kernels (fails the row if they are not there)
  asyncws-pure       asyncws with ASYNCWS_NO_SPEEDUPS=1
  asyncws-deflate1   asyncws compressing at zlib level 1, aiohttp's level; opt-in
  websockets         websockets.asyncio server/client
  aiohttp            web.WebSocketResponse server, ClientSession.ws_connect client
  picows             ws_create_server / ws_connect with WSListener callbacks (on aiofastnet's
                     Cython transports when aiofastnet is installed, as picows does by default)
  picows.websockets  picows' awaitable, websockets-compatible API (serve / connect)
  picows-stdlib      picows forced onto asyncio's own transports (use_aiofastnet=False); opt-in

Compression is off unless ``--deflate`` is given: then every library that negotiates
permessage-deflate (asyncws, asyncws-pure, asyncws-deflate1, websockets, aiohttp,
picows.websockets) runs with it on, on both sides, and the others are left out of those cells.

``--common-client picows`` keeps the server varying but always uses a picows client, which
isolates the server's cost (the tcp row keeps its own tcp client as the floor).

Every measurement is bounded: ``--warmup`` + ``--duration`` seconds of load, a bounded drain,
and a hard subprocess timeout; servers exit by themselves after ``--max-lifetime``.

This file is the command line only: the adapters are in ``echo_libraries.py``, the harness
(cells, timing, pinning, interleaving, results) in ``echo_harness.py``.

Examples:
  python benchmarks/echo.py --sizes 32,256,8192 --kind binary --mode pingpong --rounds 3
  python benchmarks/echo.py --loop asyncio,uvloop --tls both --json out.json
  python benchmarks/echo.py --deflate --kind text --mode pingpong --sizes 1024,16777216
  python benchmarks/echo.py --common-client picows --impl asyncws,websockets,aiohttp,picows
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import echo_harness as harness  # noqa: E402  (a script beside its modules, not a package)
from echo_libraries import DEFAULT_LIBRARIES, LIBRARIES, add_baseline  # noqa: E402

DEFAULT_SIZES = [32, 256, 8192, 100_000, 1_048_576]
DEFAULT_RATIO_TO = ["tcp", "picows", "picows.websockets"]
ON_OFF_BOTH = {"off": [False], "on": [True], "both": [False, True]}


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


def process_main(command: str, argv: list[str]) -> int:
    """The ``_server`` and ``_client`` processes the orchestrator starts."""
    p = argparse.ArgumentParser(prog=f"echo.py {command}")
    p.add_argument("--impl", required=True, choices=list(LIBRARIES))
    p.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    p.add_argument("--cpu", type=int)
    p.add_argument("--tls-dir")
    p.add_argument("--deflate", action="store_true")
    p.add_argument("--max-lifetime", type=float, default=300)
    p.add_argument("--port", type=int)
    p.add_argument("--mode", default="pingpong")
    p.add_argument("--kind", default="binary")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--inflight", type=int, default=100)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--drain-timeout", type=float, default=30.0)
    a = p.parse_args(argv)
    body = harness.server_process if command == "_server" else harness.client_process
    body(LIBRARIES[a.impl], a)
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    # --baseline adds libraries that the other options (--impl, --ratio-to) may name.
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--baseline")
    known, _ = pre.parse_known_args(argv)
    if known.baseline:
        add_baseline(known.baseline)
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--impl", help=f"comma-separated subset of {','.join(LIBRARIES)} "
                   f"(default: {','.join(DEFAULT_LIBRARIES)}, those installed)")
    p.add_argument("--sizes", type=csv_ints, default=DEFAULT_SIZES,
                   help="comma-separated message sizes in bytes "
                   f"(default: {','.join(map(str, DEFAULT_SIZES))})")
    p.add_argument("--kind", type=csv_strs(["binary", "text"]), default=["binary", "text"],
                   help="binary,text (default both)")
    p.add_argument("--mode", type=csv_strs(["pingpong", "pipelined"]),
                   default=["pingpong", "pipelined"], help="pingpong,pipelined (default both)")
    p.add_argument("--loop", type=csv_strs(["asyncio", "uvloop"]), default=["asyncio"],
                   help="asyncio,uvloop (default asyncio)")
    p.add_argument("--tls", choices=list(ON_OFF_BOTH), default="off", nargs="?", const="on",
                   help="--tls alone means TLS only; --tls both runs plain and TLS")
    p.add_argument("--deflate", choices=list(ON_OFF_BOTH), default="off", nargs="?",
                   const="on", help="permessage-deflate on both sides: --deflate alone means "
                   "compressed cells only; --deflate both runs both")
    p.add_argument("--common-client", choices=["picows"], default=None,
                   help="always use this client; only the server varies")
    p.add_argument("--ratio-to", type=csv_strs(list(LIBRARIES)), default=DEFAULT_RATIO_TO,
                   help="libraries each row is divided by, one column each, where they ran "
                   f"(default: {','.join(DEFAULT_RATIO_TO)})")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=2.0, help="seconds measured per round")
    p.add_argument("--warmup", type=float, default=0.5, help="seconds of warm-up per round")
    p.add_argument("--inflight", type=int, default=100, help="messages in flight when pipelined")
    p.add_argument("--drain-timeout", type=float, default=30.0)
    p.add_argument("--cpu", type=int, default=None,
                   help="CPU for server and client (default: last)")
    p.add_argument("--json", help="write all rounds and medians to this file")
    p.add_argument("--note", action="append", default=[],
                   help="a line for the results' header, e.g. what else ran on the machine")
    p.add_argument("-v", "--verbose", action="store_true", help="print every round to stderr")
    p.add_argument("--no-snapshot", dest="snapshot_lib", action="store_false",
                   help="import asyncws from where it is installed instead of a per-run copy")
    p.add_argument("--baseline", metavar="DIR",
                   help="also run the asyncws build in DIR (benchmarks/build_baseline.sh) as "
                   "asyncws-baseline (and asyncws-baseline-pure, opt-in), for before/after "
                   "ratios from one run")
    args = p.parse_args(argv)
    if args.baseline and not os.path.isdir(os.path.join(args.baseline, "asyncws")):
        p.error(f"--baseline {args.baseline}: no asyncws package there")
    if args.duration <= 0 or args.duration > 60 or args.rounds < 1 or args.rounds > 50:
        p.error("--duration must be in (0, 60] and --rounds in [1, 50]")
    defaults = [*DEFAULT_LIBRARIES, *(["asyncws-baseline"] if args.baseline else [])]
    names = [i.strip() for i in args.impl.split(",")] if args.impl else defaults
    unknown = [i for i in names if i not in LIBRARIES]
    if unknown:
        p.error(f"unknown --impl {unknown}; choose from {list(LIBRARIES)}")
    args.impls = names
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("_server", "_client"):
        return process_main(argv[0], argv[1:])
    args = parse_args(argv)
    cpu = harness.keep_off_cpu(args.cpu)
    libraries = []
    for name in args.impls:
        if LIBRARIES[name].available():
            libraries.append(LIBRARIES[name])
        else:
            print(f"# skipping {name}: not installed", file=sys.stderr)
    common = LIBRARIES[args.common_client] if args.common_client else None
    if common is not None and not common.available():
        sys.exit(f"--common-client {args.common_client} is not installed")
    if "uvloop" in args.loop and not harness.importable("uvloop"):
        sys.exit("--loop uvloop needs uvloop installed")

    def client_for(lib, cell):
        return common if common is not None and lib.name != "tcp" else lib

    cells = harness.cells_of(args.loop, ON_OFF_BOTH[args.tls], ON_OFF_BOTH[args.deflate],
                             args.mode, args.kind, args.sizes)
    snapshot = harness.snapshot_asyncws() if args.snapshot_lib else None
    if snapshot:
        print(f"# asyncws copied to {snapshot} for this run", file=sys.stderr)
    settings = harness.Settings(cpu, args.warmup, args.duration, args.drain_timeout,
                                args.inflight, snapshot)
    t_start = time.time()
    load_start = os.getloadavg()
    try:
        results = harness.run_cells(settings, cells, libraries, args.rounds, client_for,
                                    verbose=args.verbose)
    finally:
        if snapshot:
            shutil.rmtree(snapshot, ignore_errors=True)

    client_note = (
        f"client: {args.common_client} for every server (tcp row: tcp client)"
        if args.common_client
        else "client: same library as the server"
    )
    print(f"# echo benchmark: python {shlex.join(sys.argv)}")
    for note in args.note:
        print(f"# note: {note}")
    print(f"# {harness.machine_line()}")
    loads = " ".join(f"{x:.2f}" for x in load_start), " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# load average (1, 5, 15 min): {loads[0]} at the start, {loads[1]} at the end")
    print(f"# versions: {json.dumps(harness.versions())}")
    print(f"# server and client pinned to CPU {cpu}; wall time {time.time() - t_start:.0f}s")
    harness.print_tables(
        results, cells, libraries, args.ratio_to,
        f"{client_note}, median of {args.rounds} x {args.duration:g}s", args.inflight,
    )
    if args.json:
        settings_out = {k: v for k, v in vars(args).items() if k != "snapshot_lib"}
        settings_out["cpu"] = cpu
        with open(args.json, "w") as f:
            json.dump(
                {
                    "argv": sys.argv,
                    "machine": harness.machine_info(),
                    "versions": harness.versions(),
                    "settings": settings_out,
                    "results": list(results.values()),
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
