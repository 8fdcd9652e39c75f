"""Real proxy servers for the tests: tinyproxy (HTTP CONNECT), microsocks (SOCKS5) and Dante
(SOCKS4 and SOCKS5), each started on 127.0.0.1 on a free port with its own configuration in a
temporary directory, and stopped at the end of the ``with`` block.

A missing binary skips the test with the reason on a developer's machine; with ``CI`` set (the CI
machine, whose .ci/run installs them) it fails instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

START_TIMEOUT = 10.0  # seconds a proxy gets to listen: a hang guard, not a speed assertion


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def need(binary: str, package: str) -> str:
    """The path of ``binary``; skip (fail on CI) when it is not installed."""
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin")
    if path is None:
        reason = f"{binary} is not installed (apt-get install {package})"
        if os.environ.get("CI"):
            pytest.fail(reason + ": .ci/run must install it")
        pytest.skip(reason)
    return path


class Proxy:
    """A running proxy: its ``port``, ``url`` (with the credentials, if any) and its log."""

    def __init__(self, scheme: str, port: int, credentials: str, log: Path | None) -> None:
        self.port = port
        self.url = f"{scheme}://{credentials}127.0.0.1:{port}"
        self.log = log

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log is not None else ""


@contextmanager
def _running(command: Sequence[str], port: int, log: Path | None) -> Iterator[None]:
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                _, err = process.communicate()
                text = log.read_text(errors="replace") if log and log.exists() else ""
                pytest.fail(f"{command[0]} exited with {process.returncode}: {err!r} {text}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{command[0]} did not listen on 127.0.0.1:{port}")
                time.sleep(0.02)
        yield
    finally:
        process.terminate()
        try:
            process.communicate(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


@contextmanager
def tinyproxy(
    tmp: Path,
    *,
    user: str | None = None,
    password: str | None = None,
    connect_ports: Sequence[int] = (),
) -> Iterator[Proxy]:
    """tinyproxy as an HTTP CONNECT proxy; Basic authentication when ``user`` is given; CONNECT
    allowed to ``connect_ports`` only when some are given (to any port otherwise)."""
    binary = need("tinyproxy", "tinyproxy")
    port = free_port()
    directory = tmp / f"tinyproxy-{port}"
    directory.mkdir()
    log = directory / "tinyproxy.log"
    lines = [
        f"Port {port}",
        "Listen 127.0.0.1",
        "Timeout 30",
        "MaxClients 50",
        "Allow 127.0.0.1",
        "LogLevel Info",
        f'LogFile "{log}"',
        f'PidFile "{directory / "tinyproxy.pid"}"',
        "DisableViaHeader Yes",
    ]
    if user is not None:
        lines.append(f"BasicAuth {user} {password}")
    lines += [f"ConnectPort {p}" for p in connect_ports]
    config = directory / "tinyproxy.conf"
    config.write_text("\n".join(lines) + "\n")
    credentials = f"{user}:{password}@" if user is not None else ""
    with _running([binary, "-d", "-c", str(config)], port, log):
        yield Proxy("http", port, credentials, log)


@contextmanager
def microsocks(*, user: str | None = None, password: str | None = None) -> Iterator[Proxy]:
    """microsocks as a SOCKS5 proxy, with username/password authentication when ``user`` is
    given."""
    binary = need("microsocks", "microsocks")
    port = free_port()
    command = [binary, "-i", "127.0.0.1", "-p", str(port)]
    if user is not None:
        command += ["-u", user, "-P", password or ""]
    credentials = f"{user}:{password}@" if user is not None else ""
    with _running(command, port, None):
        yield Proxy("socks5", port, credentials, None)


@contextmanager
def dante(tmp: Path, *, blocked_ports: Sequence[int] = ()) -> Iterator[Proxy]:
    """Dante's danted as a SOCKS4/SOCKS5 proxy without authentication; connections to
    ``blocked_ports`` are refused by its rules. ``url`` is socks4://."""
    binary = need("danted", "dante-server")
    port = free_port()
    directory = tmp / f"dante-{port}"
    directory.mkdir()
    log = directory / "danted.log"
    blocks = "".join(
        f"socks block {{\n    from: 0.0.0.0/0 to: 0.0.0.0/0 port = {p}\n}}\n"
        for p in blocked_ports
    )
    config = directory / "danted.conf"
    config.write_text(
        f"logoutput: {log}\n"
        f"internal: 127.0.0.1 port = {port}\n"
        "external: 127.0.0.1\n"
        "socksmethod: none\n"
        "clientmethod: none\n"
        "client pass {\n    from: 127.0.0.0/8 to: 0.0.0.0/0\n}\n"
        f"{blocks}"
        "socks pass {\n    from: 127.0.0.0/8 to: 0.0.0.0/0\n    command: connect\n}\n"
    )
    command = [binary, "-f", str(config), "-p", str(directory / "danted.pid")]
    with _running(command, port, log):
        yield Proxy("socks4", port, "", log)
