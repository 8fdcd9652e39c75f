"""A real Redis server for the fan-out tests and benchmark (not a test module).

This module holds ``RedisServer``: Debian's ``redis-server`` started on 127.0.0.1 on a free port
and on a Unix socket (and, given certificate files, on a TLS port too), without persistence, that
a test can kill and start again on the same port; and ``redis_server_binary()``, which skips a
test where the binary is missing, except on CI on Linux (the environment variable CI set), where
a missing binary fails it: CI must run these tests (``.ci/run`` and the Linux jobs of
.github/workflows/ci.yml install the package). Elsewhere (macOS and Windows runners, the
manylinux containers of the wheel builds, which do not see CI) a missing binary skips. Nothing
here asserts: tests do.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import pytest

START_TIMEOUT = 10.0  # seconds for redis-server to answer PING: a hang guard


def redis_server_binary() -> str:
    """The path of ``redis-server``; skip the test (fail it on CI) when there is none."""
    path = shutil.which("redis-server")
    if path is None:
        reason = "redis-server is not installed (Debian: apt-get install redis-server)"
        if os.environ.get("CI") and sys.platform.startswith("linux"):
            pytest.fail(f"{reason}; on CI these tests must run")
        pytest.skip(reason)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``redis-server`` on 127.0.0.1:``port``, in ``directory``, for a ``with`` block."""

    def __init__(
        self, binary: str, directory: Path, tls: tuple[Path, Path, Path] | None = None
    ) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.tls = tls  # (certificate chain, key, CA) files
        self.tls_port = free_port() if tls else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.directory / 'redis.sock'}"

    @property
    def tls_url(self) -> str:
        return f"rediss://127.0.0.1:{self.tls_port}/0"

    def start(self) -> None:
        """Start the server (again, on the same port) and wait until it answers."""
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - the child keeps it
        with log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(self.directory),
                    "--daemonize", "no",
                    "--unixsocket", str(self.directory / "redis.sock"),
                    "--unixsocketperm", "700",
                    *self._tls_options(),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not answers_ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                tail = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{tail}")
            time.sleep(0.02)

    def _tls_options(self) -> list[str]:
        if self.tls is None:
            return []
        cert, key, ca = self.tls
        return [
            "--tls-port", str(self.tls_port),
            "--tls-cert-file", str(cert),
            "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(ca),
            "--tls-auth-clients", "no",
        ]  # fmt: skip

    def kill(self) -> None:
        """Stop the server at once (SIGKILL), as a crash would."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(START_TIMEOUT)
            self.process = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
