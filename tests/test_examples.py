"""The example programs in examples/ run as-is: the echo server serves, the client talks to it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

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
