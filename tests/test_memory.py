"""Memory and backpressure, measured on a server SUBPROCESS (VmRSS from /proc), plus live
object counts in-process.

* A client that floods data while the handler does not read: the server's RSS stays within
  about max_size x max_queue + buffers (max_size=64 KiB, max_queue=8: well under a few MiB).
* A client that does not read while the handler sends: ``send`` blocks (flush=False waits once
  the buffer is far above the high-water mark, flush=True at it), RSS stays bounded.
* A client that floods Pings without reading the Pongs: RSS stays bounded.
* Many connect/disconnect cycles: no RSS growth after warm-up, no live Websocket left.

Sizes are CI-sized; ``ASYNCWS_STRESS=1`` scales them up (4x the data, 10x the cycles).
No speed is measured: waits are bounded hang guards only.
"""

from __future__ import annotations

import asyncio
import gc

import pytest

import asyncws

from . import _raw
from ._raw import frame

pytestmark = [
    pytest.mark.skipif(not _raw.has_proc(), reason="needs /proc (Linux) to read VmRSS"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

MiB = 2**20
# Allowed RSS growth of the server process. The structural bound is far smaller (about 1 MiB of
# queued messages and buffers); the rest is allocator slack. Flooding without backpressure
# would grow by the whole flood (50 MiB in CI, 200 MiB under ASYNCWS_STRESS).
BOUND = 16 * MiB // 1024  # in KiB, as VmRSS is


def test_flood_while_handler_sleeps():
    """(a) 64 KiB messages sent as fast as possible while the handler sleeps, then reads."""
    total = _raw.scaled(50, 200) * MiB
    payload = b"\x5a" * 65536
    data = frame(0x2, payload)  # masked with a fixed key: build once, send many times

    async def main():
        with _raw.ServerProcess(mode="sleep_drain", delay=1.5, max_size=65536, max_queue=8) as srv:
            reader, writer = await _raw.open_raw(srv.port)
            await asyncio.sleep(0.2)
            base = srv.rss()
            with _raw.RssSampler(srv) as rss:
                sent = 0
                while sent < total:
                    writer.write(data)
                    sent += len(payload)
                    await asyncio.wait_for(writer.drain(), 30)
                writer.write(frame(0x1, b"done"))
                answer = await asyncio.wait_for(_raw.read_frame(reader), 60)
            assert int(answer.payload) == total  # nothing lost
            growth = rss.peak - base
            assert growth < BOUND, f"server RSS grew by {growth} KiB receiving {total} bytes"
            writer.close()

    _raw.run(main(), timeout=120)


@pytest.mark.parametrize("flush", [False, True], ids=["flush=False", "flush=True"])
def test_client_never_reads(flush):
    """(b) The handler sends 1 MiB messages to a client that does not read for a while: the
    sender blocks (its progress stalls), RSS stays bounded; then everything arrives."""
    total = _raw.scaled(50, 200) * MiB

    async def main():
        with _raw.ServerProcess(mode="send", total=total, chunk=MiB, flush=flush) as srv:
            reader, writer = await _raw.open_raw(srv.port)
            base = srv.rss()
            with _raw.RssSampler(srv) as rss:
                await asyncio.sleep(1.5)  # not reading
                stalled = srv.last_line("SENT")
                received = 0
                while True:
                    f = await asyncio.wait_for(_raw.read_frame(reader), 30)
                    if f.opcode == 0x8:
                        break
                    received += len(f.payload)
            # The sender was blocked: it had handed over far less than everything.
            stalled_at = int(stalled.split()[1]) if stalled else 0
            assert stalled_at < total // 2, stalled
            assert received == total
            growth = rss.peak - base
            assert growth < BOUND, f"server RSS grew by {growth} KiB sending {total} bytes"
            writer.close()

    _raw.run(main(), timeout=120)


def test_ping_flood_without_reading():
    """A client floods Pings and never reads: the Pongs must not pile up in the server's
    write buffer without bound (the server has to stop reading while it cannot write)."""
    total = _raw.scaled(50, 200) * MiB
    ping = frame(0x9, b"p" * 125)
    batch = ping * 512

    async def main():
        with _raw.ServerProcess(mode="sleep_drain", delay=3600) as srv:
            reader, writer = await _raw.open_raw(srv.port)
            await asyncio.sleep(0.2)
            base = srv.rss()
            with _raw.RssSampler(srv) as rss:
                sent = 0
                try:
                    while sent < total:
                        writer.write(batch)
                        sent += len(batch)
                        # Blocking here is the server applying backpressure: good. Stop then.
                        await asyncio.wait_for(writer.drain(), 3)
                except asyncio.TimeoutError:
                    pass
                await asyncio.sleep(0.3)
            growth = rss.peak - base
            assert growth < BOUND, f"server RSS grew {growth} KiB answering {sent} bytes of pings"
            writer.transport.abort()

    _raw.run(main(), timeout=120)


async def cycle(port: int, i: int) -> None:
    ws = await asyncws.connect(f"ws://127.0.0.1:{port}/", open_timeout=10)
    text = f"cycle {i}"
    await ws.send(text)
    assert await asyncio.wait_for(ws.recv(), 10) == text
    await ws.close()


async def cycles(port: int, n: int, concurrency: int = 10) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await cycle(port, i)

    await asyncio.gather(*(one(i) for i in range(n)))


def test_connect_disconnect_cycles_rss():
    """(c) Connect/echo/close cycles against the subprocess: no RSS growth after warm-up."""
    n = _raw.scaled(1500, 15000)

    async def main():
        with _raw.ServerProcess(mode="echo") as srv:
            await cycles(srv.port, 300)  # warm-up: allocator pools, caches
            await asyncio.sleep(0.2)
            base = srv.rss()
            await cycles(srv.port, n)
            await asyncio.sleep(0.2)
            growth = srv.rss() - base
            # A leaked connection costs kilobytes (Websocket, transport, socket, buffers):
            # 1,500 of them would be far over this margin.
            assert growth < 3 * 1024, f"server RSS grew by {growth} KiB over {n} cycles"

    _raw.run(main(), timeout=120)


def live(*classes):
    gc.collect()
    return sum(isinstance(o, classes) for o in gc.get_objects())


def test_connect_disconnect_cycles_objects():
    """(c) In-process: after the cycles and a gc, no Websocket (client or server side) nor
    handshake protocol object is alive."""
    from asyncws.client import ClientHandshake
    from asyncws.server import ServerHandshake

    n = _raw.scaled(500, 5000)
    classes = (asyncws.Websocket, ClientHandshake, ServerHandshake)
    before = live(*classes)

    async def main():
        async with _raw.serving() as port:
            await cycles(port, n)
            # Refused and abandoned handshakes too.
            for _ in range(20):
                await _raw.exchange(port, _raw.upgrade_request(port, method="POST"))
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
            await asyncio.sleep(0.1)
            assert await _raw.wait_no_other_tasks() == []

    _raw.run(main(), timeout=120)
    after = live(*classes)
    assert after <= before, f"{after - before} connection objects still alive after {n} cycles"


def test_sender_memory_when_peer_stops_reading_in_process():
    """send() with flush=False on a peer that never reads: it blocks once the transport's
    buffer is far above its high-water mark instead of buffering everything."""
    progress = []

    async def sender(ws):
        chunk = b"x" * 65536
        for i in range(2000):  # 125 MiB if nothing blocked
            await ws.send(chunk)
            progress.append(i)

    async def main():
        async with _raw.serving(sender) as port:
            reader, writer = await _raw.open_raw(port)
            await asyncio.sleep(1.0)
            n = len(progress)
            assert 0 < n < 2000
            assert n * 65536 < 64 * MiB
            writer.transport.abort()
            for _ in range(200):
                if not _raw.other_tasks():
                    break
                await asyncio.sleep(0.01)

    _raw.run(main(), timeout=60)
