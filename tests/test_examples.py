"""The example programs in examples/ run as-is: the echo server serves, the client talks to it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="examples/ is not shipped with this copy")
def test_echo_server_and_client_examples() -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "echo_server.py"), "127.0.0.1", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == f"echo server listening on ws://127.0.0.1:{port}"
        client = subprocess.run(
            [sys.executable, str(EXAMPLES / "echo_client.py"), f"ws://localhost:{port}", "3"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert client.returncode == 0, client.stderr
        assert client.stdout.split() == ["hello", "hello", "hello"]
    finally:
        if os.name == "posix":
            server.send_signal(signal.SIGINT)
        else:
            server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    if os.name == "posix":
        assert server.returncode == 0, server.stderr.read() if server.stderr else ""


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="examples/ is not shipped with this copy")
@pytest.mark.skipif(os.name != "posix", reason="the example stops on SIGTERM (add_signal_handler)")
def test_chat_example_rooms_span_workers(redis_server: Any) -> None:
    """Two chat.py workers (two ports, as on two machines) share their rooms through Redis."""
    import asyncio

    import asyncws

    from .test_cli import read_line

    ports = [free_port(), free_port()]
    workers = [
        subprocess.Popen(
            [sys.executable, str(EXAMPLES / "chat.py"), "--redis", redis_server.url]
            + ["127.0.0.1", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for port in ports
    ]

    async def chat() -> None:
        alice = await asyncws.connect(f"ws://127.0.0.1:{ports[0]}/lobby")
        bob = await asyncws.connect(f"ws://127.0.0.1:{ports[1]}/lobby")
        carol = await asyncws.connect(f"ws://127.0.0.1:{ports[1]}/kitchen")
        for ws, name in [(alice, "alice"), (bob, "bob"), (carol, "carol")]:
            await ws.send(f"{name} here")  # back to the sender once its room is listened to
            while await ws.recv() != f"{name} here":
                pass
        # Two publishers' messages have no order between them: one after the other here.
        for sender, message in [(alice, "hi bob"), (bob, b"\x00binary")]:
            await sender.send(message)
            for ws in (alice, bob):
                got = await ws.recv()
                if got == "bob here":  # alice joined first and saw bob join
                    got = await ws.recv()
                assert got == message
        await carol.send("only the kitchen")
        assert await carol.recv() == "only the kitchen"
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for ws in (alice, bob, carol):
            assert await ws.recv() is None
            assert ws.close_code == 1001

    try:
        for worker in workers:
            assert "chat worker" in read_line(worker.stdout, 10)
        asyncio.run(asyncio.wait_for(chat(), 30))
        for worker in workers:
            assert worker.wait(timeout=10) == 0, worker.stderr.read() if worker.stderr else ""
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.communicate(timeout=10)
