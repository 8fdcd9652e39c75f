"""One event loop per thread: four threads, each with its own loop, server and 50 clients, at once.

On a free-threaded build (3.14t, 3.15t; the wheels workflow runs this there) the threads run in
parallel, so state shared by accident between them (a read buffer, the masking-key pool, a cache)
is raced for real; with the GIL (3.9-3.13 here) they still interleave at every switch interval
and await, which catches state that belongs to the wrong thread. The suite runs once per kernel
set (``ASYNCWS_NO_SPEEDUPS=1``), so this does too. Every message carries its thread, client and
sequence number, so a message delivered to the wrong connection cannot pass for the right one.
Bounded in count (ROUNDS per client) and in time (DURATION); no speed is asserted.
"""

from __future__ import annotations

import asyncio
import os
import sys
import sysconfig
import threading
from typing import Any

import pytest

import asyncws

from .conftest import Server, run

THREADS = 4
CLIENTS = 50  # per thread
ROUNDS = 400  # echoes per client at most...
DURATION = 3.0  # ...and seconds of echoing at most
LARGE = 100_000  # every 16th message: spans reads (and, uncompressed, is read into place)


def _payload(thread: int, client: int, seq: int) -> str | bytes:
    head = f"{thread}:{client}:{seq}:"
    if seq % 16 == 15:
        return head.encode() + os.urandom(LARGE)  # incompressible: deflate cannot shrink it
    if seq % 2:
        return head.encode() + bytes([seq % 256]) * (seq % 300)
    return head + "é" * (seq % 200)


async def _echo_and_count(ws: asyncws.Websocket, closed: list[int | None]) -> None:
    async for message in ws:
        await ws.send(message)
    closed.append(ws.close_code)


async def _client(url: str, thread: int, client: int, deadline: float) -> dict[str, Any]:
    compress = client % 2 == 0
    ws = await asyncws.connect(
        url, compression="deflate" if compress else None, max_size=None, ping_interval=None
    )
    extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "") if ws.response else ""
    loop = asyncio.get_running_loop()
    wrong: list[tuple[int, Any]] = []
    rounds = 0
    for seq in range(ROUNDS):
        if seq and loop.time() > deadline:
            break
        message = _payload(thread, client, seq)
        await ws.send(message)
        if seq % 10 == 0:
            await asyncio.wait_for(await ws.ping(), 30)  # the Pong comes back between echoes
        answer = await asyncio.wait_for(ws.recv(), 30)
        if answer != message:
            wrong.append((seq, answer if answer is None else answer[:40]))
        rounds += 1
    code = 4000 + client  # a code of our own: the server must see exactly this one
    await ws.close(code)
    return {
        "compressed": "permessage-deflate" in extensions,
        "wrong": wrong,
        "rounds": rounds,
        "close_code": ws.close_code,
        "expected_code": code,
    }


def _thread_main(thread: int, start: threading.Barrier, results: dict[int, Any]) -> None:
    async def main() -> None:
        closed: list[int | None] = []

        async def handler(ws: asyncws.Websocket) -> None:
            await _echo_and_count(ws, closed)

        async with Server(handler, compression="deflate", max_size=None, ping_interval=None) as srv:
            # All four servers are up before any client starts: the threads overlap.
            await asyncio.get_running_loop().run_in_executor(None, start.wait, 30)
            deadline = asyncio.get_running_loop().time() + DURATION
            clients = await asyncio.gather(
                *(_client(srv.url(), thread, c, deadline) for c in range(CLIENTS))
            )
            for _ in range(500):  # the handlers finish after the closing handshakes
                if len(closed) == CLIENTS:
                    break
                await asyncio.sleep(0.01)
        results[thread] = {"clients": clients, "server_codes": sorted(c or 0 for c in closed)}

    try:
        run(main(), timeout=120)
    except BaseException as exc:  # reported by the test, in the main thread
        results[thread] = exc
        start.abort()


def test_one_event_loop_per_thread() -> None:
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        # A free-threaded build must still be running without the GIL once asyncws (and its
        # extension) are imported: else this test would not race anything.
        assert not sys._is_gil_enabled(), "importing asyncws re-enabled the GIL"
    results: dict[int, Any] = {}
    start = threading.Barrier(THREADS)
    threads = [
        threading.Thread(target=_thread_main, args=(t, start, results), name=f"loop-{t}")
        for t in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert not any(thread.is_alive() for thread in threads), "a thread did not finish"
    for t in range(THREADS):
        outcome = results[t]
        if isinstance(outcome, BaseException):
            raise outcome
        clients = outcome["clients"]
        assert len(clients) == CLIENTS
        for c, client in enumerate(clients):
            assert client["wrong"] == [], f"thread {t} client {c}: wrong echoes"
            assert client["rounds"] >= 1
            assert client["compressed"] == (c % 2 == 0)
            assert client["close_code"] == client["expected_code"]
        assert outcome["server_codes"] == sorted(4000 + c for c in range(CLIENTS))


def test_a_connection_refuses_calls_from_another_thread() -> None:
    """A connection belongs to its loop's thread: from any other thread, each call raises
    RuntimeError before it touches anything, and the connection goes on working."""

    async def main() -> None:
        async with Server() as server:
            ws = await asyncws.connect(server.url(), compression="deflate", ping_interval=None)
            loop = asyncio.get_running_loop()
            errors: list[str] = []
            sent_from_other_thread: list[Any] = []

            def other_thread() -> None:
                calls = [
                    lambda: ws.send("x"),
                    lambda: ws.send(b"x" * 300_000),  # the large-message path
                    lambda: ws.recv(),
                    lambda: ws.writer,
                    lambda: asyncws.broadcast([ws], "x"),
                    lambda: asyncio.run(ws.close()),  # coroutines run where awaited
                    lambda: asyncio.run(ws.ping()),
                    lambda: asyncio.run(ws.pong()),
                ]
                for call in calls:
                    try:
                        call()
                    except RuntimeError as exc:
                        errors.append(str(exc))

                async def send_there() -> None:
                    await ws.send("sent from another thread, on its own loop")

                # The way to reach it: run a coroutine on its loop.
                future = asyncio.run_coroutine_threadsafe(send_there(), loop)
                sent_from_other_thread.append(future.result(10))

            thread = threading.Thread(target=other_thread)
            thread.start()
            while thread.is_alive():
                await asyncio.sleep(0.01)
            assert len(errors) == 8, errors
            assert all("belongs to the event loop of thread" in e for e in errors), errors
            assert sent_from_other_thread == [None]
            assert await ws.recv() == "sent from another thread, on its own loop"
            # Nothing was sent, queued or half-compressed from the other thread.
            await ws.send("still in order")
            assert await ws.recv() == "still in order"
            await ws.close()
            assert ws.close_code == 1000

    run(main())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_masking_keys_are_not_shared_with_a_forked_child() -> None:
    """The key pool is emptied in a forked child: it never sends a key its parent sends."""
    from asyncws._kernels import build_header

    build_header(0x2, 0, mask=True)  # the parent has a pool now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next keys, through the pipe
        try:
            os.write(write, b"".join(build_header(0x2, 0, mask=True)[-4:] for _ in range(64)))
        finally:
            os._exit(0)
    os.close(write)
    child = b""
    while len(child) < 256:
        chunk = os.read(read, 256)
        if not chunk:
            break
        child += chunk
    os.close(read)
    os.waitpid(pid, 0)
    parent = b"".join(build_header(0x2, 0, mask=True)[-4:] for _ in range(64))
    assert len(child) == 256
    child_keys = {child[i : i + 4] for i in range(0, 256, 4)}
    parent_keys = {parent[i : i + 4] for i in range(0, 256, 4)}
    assert not child_keys & parent_keys
