#!/usr/bin/env python
"""Server memory per idle WebSocket connection, per library.

For each implementation (and each round, interleaved A, B, C, A, B, C, ...):

1. start its echo server (``echo.py _server``, the same servers as the echo benchmark) in a
   subprocess on 127.0.0.1;
2. open and close a few connections (so that lazily imported handshake code is loaded), wait,
   and read the server's RSS (``VmRSS`` in /proc/PID/status);
3. from a separate client process, open ``--connections`` (1,000) connections, each completing
   the WebSocket opening handshake with a minimal raw HTTP client (the same bytes for every
   server; the tcp floor gets plain TCP connections), then leave them idle;
4. wait ``--settle`` seconds, read the server's RSS again; report (after - before) / N.

The client process raises its RLIMIT_NOFILE (and so does the server process); everything is
bounded by timeouts and the server exits by itself after ``--max-lifetime``.

Example:
  python benchmarks/memory.py --connections 1000 --rounds 3 --json mem.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import select
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import echo_harness as harness  # noqa: E402  (env, machine description, ratios)
from echo_libraries import DEFAULT_LIBRARIES, LIBRARIES  # noqa: E402

ECHO = harness.ECHO_SCRIPT

HOST = "127.0.0.1"


def vm_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


# ---------------------------------------------------------------------------------------------
# Client process: opens N connections, reports, keeps them idle until stdin closes.
async def open_one(port: int, websocket: bool):
    reader, writer = await asyncio.open_connection(HOST, port)
    if websocket:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET / HTTP/1.1\r\n"
                f"Host: {HOST}:{port}\r\n"
                "Upgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n"
                "\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"handshake refused: {head[:60]!r}")
    return writer


async def client(port: int, n: int, websocket: bool, batch: int, hold: float) -> None:
    conns: list[asyncio.StreamWriter] = []
    t0 = time.monotonic()
    for start in range(0, n, batch):
        conns += await asyncio.wait_for(
            asyncio.gather(*(open_one(port, websocket) for _ in range(min(batch, n - start)))),
            30,
        )
    print(f"OPEN {len(conns)} {time.monotonic() - t0:.2f}", flush=True)
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    try:
        loop.add_reader(sys.stdin.fileno(), lambda: done.done() or done.set_result(None))
    except (OSError, ValueError):
        pass
    try:
        await asyncio.wait_for(done, hold)
    except asyncio.TimeoutError:
        pass
    for w in conns:
        w.close()


def client_main(a) -> None:
    harness.raise_nofile(a.connections + 256)
    try:
        asyncio.run(client(a.port, a.connections, a.websocket, a.batch, a.hold))
    except BaseException as exc:  # noqa: BLE001
        print(f"ERROR {type(exc).__name__}: {exc}", flush=True)


# ---------------------------------------------------------------------------------------------
# Orchestrator
def start_server(impl: str, lifetime: float):
    srv = subprocess.Popen(
        [sys.executable, ECHO, "_server", "--impl", impl, "--max-lifetime", str(lifetime)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=harness.library_env(LIBRARIES[impl], None),
        text=True,
    )
    ready, _, _ = select.select([srv.stdout], [], [], 30)
    line = srv.stdout.readline() if ready else ""
    if not line.startswith("PORT "):
        srv.kill()
        raise RuntimeError(f"{impl} server did not start: {line!r} {srv.stderr.read()[-500:]}")
    return srv, int(line.split()[1])


def run_clients(port: int, n: int, websocket: bool, batch: int, hold: float):
    cmd = [
        sys.executable, __file__, "_client", "--port", str(port), "--connections", str(n),
        "--batch", str(batch), "--hold", str(hold),
    ] + (["--websocket"] if websocket else [])
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def wait_line(proc, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else ""


def measure(impl: str, args) -> dict[str, Any]:
    websocket = impl != "tcp"
    lifetime = 120 + args.settle
    srv, port = start_server(impl, lifetime)
    try:
        # Warm-up: a few connections opened and closed, so the first-use imports are loaded.
        warm = run_clients(port, 10, websocket, 10, 30)
        line = wait_line(warm, 30)
        harness.stop_process(warm, 10)
        if not line.startswith("OPEN"):
            return {"error": f"warm-up: {line or 'no answer'}"}
        time.sleep(args.settle)
        before = vm_rss(srv.pid)
        cli = run_clients(port, args.connections, websocket, args.batch, 60 + args.settle)
        try:
            line = wait_line(cli, 90)
            if not line.startswith("OPEN"):
                return {"error": f"client: {line or 'no answer in 90 s'}"}
            opened, open_s = int(line.split()[1]), float(line.split()[2])
            time.sleep(args.settle)
            after = vm_rss(srv.pid)
        finally:
            harness.stop_process(cli, 10)
        return {
            "rss_before": before,
            "rss_after": after,
            "connections": opened,
            "open_seconds": open_s,
            "bytes_per_conn": (after - before) / opened,
        }
    finally:
        harness.stop_process(srv, 10)


def orchestrate(args) -> int:
    impls = [i.strip() for i in args.impl.split(",")] if args.impl else list(DEFAULT_LIBRARIES)
    impls = [i for i in impls if LIBRARIES[i].available()]
    results: dict[str, dict[str, Any]] = {i: {"impl": i, "rounds": [], "errors": []} for i in impls}
    t0 = time.time()
    for rnd in range(args.rounds):
        for impl in impls:  # interleaved
            res = measure(impl, args)
            if "error" in res:
                results[impl]["errors"].append(res["error"])
                print(f"# {impl} round {rnd}: ERROR {res['error']}", file=sys.stderr)
            else:
                results[impl]["rounds"].append(res)
                if args.verbose:
                    print(f"# {impl} round {rnd}: {res}", file=sys.stderr)
    for r in results.values():
        per = [x["bytes_per_conn"] for x in r["rounds"]]
        r["median_bytes_per_conn"] = statistics.median(per) if per else None
        r["median_rss_before"] = (
            statistics.median(x["rss_before"] for x in r["rounds"]) if per else None
        )

    print(f"# memory benchmark: {' '.join(sys.argv)}")
    print(f"# {harness.machine_line()}")
    print(f"# versions: {json.dumps(harness.versions())}")
    print(f"# wall time {time.time() - t0:.0f}s")
    print()
    print(
        f"### Server RSS per idle connection, {args.connections} connections, "
        f"median of {args.rounds}"
    )
    print()
    print("| impl | RSS before (MiB) | bytes/connection | vs tcp | vs picows | min-max |")
    print("|---|---:|---:|---:|---:|---:|")
    ref_tcp = results.get("tcp", {}).get("median_bytes_per_conn")
    ref_picows = results.get("picows", {}).get("median_bytes_per_conn")
    for impl in impls:
        r = results[impl]
        m = r["median_bytes_per_conn"]
        if m is None:
            print(f"| {impl} | - | error | - | - | - |")
            continue
        per = [x["bytes_per_conn"] for x in r["rounds"]]
        print(
            f"| {impl} | {r['median_rss_before'] / 2**20:.1f} | {m:,.0f} | "
            f"{harness.fmt_ratio(m, ref_tcp)} | {harness.fmt_ratio(m, ref_picows)} | "
            f"{min(per):,.0f}-{max(per):,.0f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "argv": sys.argv,
                    "machine": harness.machine_info(),
                    "versions": harness.versions(),
                    "results": list(results.values()),
                },
                f,
                indent=1,
            )
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_client":
        p = argparse.ArgumentParser(prog="memory.py _client")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--connections", type=int, default=1000)
        p.add_argument("--batch", type=int, default=50)
        p.add_argument("--hold", type=float, default=60)
        p.add_argument("--websocket", action="store_true")
        client_main(p.parse_args(argv[1:]))
        return 0
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--impl", help=f"comma-separated subset of {','.join(LIBRARIES)}")
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--batch", type=int, default=50, help="connections opened concurrently")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--settle", type=float, default=1.0, help="seconds to wait before reading RSS")
    p.add_argument("--json", help="write all rounds to this file")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if not 1 <= args.connections <= 10000 or not 1 <= args.rounds <= 20:
        p.error("--connections must be in [1, 10000] and --rounds in [1, 20]")
    harness.raise_nofile(args.connections + 256)
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
