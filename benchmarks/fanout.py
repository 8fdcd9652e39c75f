#!/usr/bin/env python
"""Fan-out benchmark: one publisher, N subscribed connections, over Redis across 2 workers
against broadcast() in one process.

Setups (``--setups``):
  redis      ``python -m asyncws serve --chat --workers 2 --redis URL``: two worker processes on
             one port (reuse_port), each with a RedisFanout, and a redis-server (Debian's,
             started here on 127.0.0.1 on a free port)
  broadcast  ``python -m asyncws serve --chat``: one process, LocalFanout, which delivers with
             asyncws.broadcast()

This process opens ``--connections`` (5,000) subscribers to the room ``/bench`` (the kernel
spreads them over the workers), plus one publisher connection in the same room. Subscribers are
minimal raw WebSocket clients (a frame parser in ``data_received``, pings answered), so that the
client side costs as little as possible; they run in this process, so the publisher knows when
every subscriber has a message. Each message is ``--size`` (256) bytes, binary, and carries its
sequence number and the CLOCK_MONOTONIC time at which it was sent.

Two phases per setup, each bounded in messages and in seconds:
  latency     one message in flight: the next is sent once every subscriber has the previous;
              p50/p99 of (receipt - send) over every (message, subscriber)
  throughput  ``--window`` (32) messages in flight; messages delivered per second (one per
              subscriber reached) and p50/p99 latency under that load

The machine these figures come from is stated with them: on a shared 2-core machine the two
workers, redis-server, the publisher and 5,000 clients all compete for the same two cores.

Example:
  python benchmarks/fanout.py                       (both setups, 5,000 connections)
  python benchmarks/fanout.py --connections 500 --setups redis --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import asyncws

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests._raw import raise_nofile, upgrade_request  # noqa: E402
from tests._redis import RedisServer, free_port  # noqa: E402

HOST = "127.0.0.1"
ROOM = "/bench"
STAMP = struct.Struct("!Id")  # sequence number, send time (time.monotonic())
CONNECT_BATCH = 200  # connections opened at once: the listen backlog is 100
START_TIMEOUT = 20.0  # seconds for the servers to print "Serving on"


class Subscriber(asyncio.Protocol):
    """A minimal WebSocket client: handshake, then frames parsed as they come; pings answered."""

    def __init__(self, bench: Bench, request: bytes) -> None:
        self.bench = bench
        self.request = request
        self.buffer = bytearray()
        self.upgraded = False
        self.ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1")
            del buf[: end + 4]
            if not head.startswith("HTTP/1.1 101"):
                self.ready.set_exception(RuntimeError(head.split("\r\n")[0]))
                return
            self.upgraded = True
            worker = [line.split(":", 1)[1].strip() for line in head.split("\r\n")
                      if line.lower().startswith("x-worker-pid:")]  # fmt: skip
            self.ready.set_result(worker[0] if worker else "single")
        now = time.monotonic()
        at = 0
        size = len(buf)
        while size - at >= 2:
            opcode = buf[at] & 0x0F
            length = buf[at + 1] & 0x7F
            start = at + 2
            if length == 126:
                if size - at < 4:
                    break
                length = int.from_bytes(buf[at + 2 : at + 4], "big")
                start = at + 4
            elif length == 127:
                if size - at < 10:
                    break
                length = int.from_bytes(buf[at + 2 : at + 10], "big")
                start = at + 10
            if size < start + length:
                break
            if opcode == 0x2:
                seq, sent = STAMP.unpack_from(buf, start)
                self.bench.received(seq, now - sent)
            elif opcode == 0x9 and self.transport is not None:  # ping: pong, masked, same data
                payload = bytes(buf[start : start + length])
                self.transport.write(bytes([0x8A, 0x80 | length]) + b"\0\0\0\0" + payload)
            at = start + length
        del buf[:at]


class Bench:
    """Counts receipts per message and keeps the latencies of the current phase."""

    def __init__(self, subscribers: int) -> None:
        self.subscribers = subscribers
        self.counts: dict[int, int] = {}
        self.latencies: list[float] = []
        self.complete = 0  # messages every subscriber has
        self.changed = asyncio.Event()

    def received(self, seq: int, latency: float) -> None:
        self.latencies.append(latency)
        count = self.counts.get(seq, 0) + 1
        if count == self.subscribers:
            del self.counts[seq]
            self.complete += 1
            self.changed.set()
        else:
            self.counts[seq] = count


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def phase(
    bench: Bench, publisher: asyncws.Websocket, size: int, window: int, messages: int,
    seconds: float, first_seq: int, servers: dict[str, int],
) -> dict[str, Any]:  # fmt: skip
    """Publish up to ``messages`` with at most ``window`` in flight, for ``seconds`` at most;
    ``servers`` names the server-side processes whose CPU time is measured."""
    cpu_before = {name: cpu_seconds(pid) for name, pid in servers.items()}
    bench.latencies = []
    done_before = bench.complete
    padding = b"\0" * (size - STAMP.size)
    started = time.monotonic()
    deadline = started + seconds
    sent = 0
    while sent < messages and time.monotonic() < deadline:
        while sent - (bench.complete - done_before) >= window:
            bench.changed.clear()
            try:
                await asyncio.wait_for(bench.changed.wait(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
        await publisher.send(STAMP.pack(first_seq + sent, time.monotonic()) + padding)
        sent += 1
    while bench.complete - done_before < sent and time.monotonic() < deadline + 10.0:
        bench.changed.clear()
        try:
            await asyncio.wait_for(bench.changed.wait(), 1.0)
        except asyncio.TimeoutError:
            pass
    elapsed = time.monotonic() - started
    latencies = sorted(bench.latencies)
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    # Server CPU per 1,000 messages delivered: what fan-out costs, whatever the client's speed.
    per_1000 = {
        name: round((cpu_seconds(pid) - cpu_before[name]) * 1e6 / max(1, len(latencies)), 2)
        for name, pid in servers.items()
    }
    return {
        "server_cpu_ms_per_1000": per_1000,
        "window": window,
        "published": sent,
        "complete": bench.complete - done_before,
        "delivered": len(latencies),
        "seconds": round(elapsed, 3),
        "delivered_per_s": round(len(latencies) / elapsed),
        "p50_ms": round(quantiles[49] * 1000, 2),
        "p99_ms": round(quantiles[98] * 1000, 2),
    }


def start_server(setup: str, port: int, redis_url: str | None) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "asyncws", "serve", "--chat"]
    if setup == "redis":
        command += ["--workers", "2", "--redis", str(redis_url)]
    command += [HOST, str(port)]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def wait_serving(proc: subprocess.Popen[str], count: int) -> None:
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        while len(lines) < count:
            line = proc.stdout.readline()
            if not line:
                return
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(START_TIMEOUT)
    if len(lines) < count:
        raise RuntimeError(f"the server did not start: {lines}")


def stop_server(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


async def measure(
    setup: str, port: int, options: argparse.Namespace, server_pid: int, redis_pid: int
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    bench = Bench(options.connections)
    request = upgrade_request(port, path=ROOM)
    subscribers: list[Subscriber] = []
    began = time.monotonic()
    for first in range(0, options.connections, CONNECT_BATCH):
        batch = [Subscriber(bench, request)
                 for _ in range(min(CONNECT_BATCH, options.connections - first))]  # fmt: skip
        for sub in batch:
            await loop.create_connection(lambda sub=sub: sub, HOST, port)  # type: ignore[misc]
        await asyncio.wait_for(asyncio.gather(*(s.ready for s in batch)), 60.0)
        subscribers += batch
    workers: dict[str, int] = {}
    for sub in subscribers:
        workers[sub.ready.result()] = workers.get(sub.ready.result(), 0) + 1
    connect_s = time.monotonic() - began
    servers = {f"worker {pid}": int(pid) for pid in workers if pid != "single"}
    if setup == "redis":
        servers["redis-server"] = redis_pid
    else:
        servers["server"] = server_pid
    publisher = await asyncws.connect(f"ws://{HOST}:{port}{ROOM}", max_size=None)
    drain = asyncio.ensure_future(_drain(publisher))  # it is in the room too: read and drop
    # Every subscriber is in the room once a first message reaches them all.
    warm = await phase(bench, publisher, options.size, 1, 5, 30.0, 0, servers)
    if warm["complete"] < 5:
        raise RuntimeError(f"warm-up incomplete: {warm}")
    latency = await phase(
        bench, publisher, options.size, 1, options.messages, options.seconds, 10, servers
    )
    seq = 10 + latency["published"]
    throughput = await phase(
        bench, publisher, options.size, options.window, 50 * options.messages, options.seconds,
        seq, servers,
    )  # fmt: skip
    drain.cancel()
    await publisher.close()
    for sub in subscribers:
        if sub.transport is not None:
            sub.transport.abort()
    return {
        "setup": setup,
        "connections": options.connections,
        "per_worker": sorted(workers.values()),
        "connect_s": round(connect_s, 2),
        "latency": latency,
        "throughput": throughput,
    }


async def _drain(ws: asyncws.Websocket) -> None:
    async for _ in ws:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--size", type=int, default=256, help="message size in bytes")
    parser.add_argument("--window", type=int, default=32, help="messages in flight (throughput)")
    parser.add_argument("--messages", type=int, default=200, help="messages, latency phase")
    parser.add_argument("--seconds", type=float, default=15.0, help="longest phase")
    parser.add_argument("--setups", default="redis,broadcast")
    parser.add_argument("--json", metavar="PATH")
    options = parser.parse_args()
    if options.size < STAMP.size:
        parser.error(f"--size must be at least {STAMP.size}")
    # This process holds every subscriber; the servers inherit the raised limit.
    have = raise_nofile(options.connections + 1000)
    if have < options.connections + 100:
        parser.error(f"open files limited to {have}: too few for {options.connections}")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, RedisServer(_redis_binary(), Path(tmp)) as redis:
        for setup in options.setups.split(","):
            port = free_port()
            server = start_server(setup, port, redis.url)
            try:
                wait_serving(server, 2 if setup == "redis" else 1)
                assert redis.process is not None
                result = asyncio.run(measure(setup, port, options, server.pid, redis.process.pid))
            finally:
                stop_server(server)
            results.append(result)
            print(json.dumps(result), flush=True)
    print(
        f"\nasyncws {asyncws.__version__}, HAS_SPEEDUPS={asyncws.HAS_SPEEDUPS}, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}"
    )
    print(f"{options.connections} subscribers, {options.size} B binary messages, one publisher")
    loaded = f"delivered/s, {options.window} in flight"
    idle = "latency p50/p99 (ms), 1 in flight"
    print(f"{'setup':<10} {idle:>34} {loaded:>28} {'p50/p99 (ms)':>16}  server CPU ms/1000")
    for r in results:
        lat, thr = r["latency"], r["throughput"]
        cpu = ", ".join(f"{k} {v}" for k, v in thr["server_cpu_ms_per_1000"].items())
        print(
            f"{r['setup']:<10} {lat['p50_ms']:>24} / {lat['p99_ms']:<7} "
            f"{thr['delivered_per_s']:>28,} {thr['p50_ms']:>8} / {thr['p99_ms']:<7} {cpu}"
        )
    if options.json:
        Path(options.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


def _redis_binary() -> str:
    import shutil

    path = shutil.which("redis-server")
    if path is None:
        sys.exit("redis-server is not installed (Debian: apt-get install redis-server)")
    return path


if __name__ == "__main__":
    sys.exit(main())
