"""The command line (``python -m asyncws``), run as a subprocess on 127.0.0.1.

The client form runs against asyncws servers started here in a background thread with their own
event loop; the ``serve --echo`` form is driven by an asyncws client in the test. Every wait is
bounded, so a hang shows up as a failure, not a stuck suite.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import pytest

import asyncws
from asyncws import cli

from ._proxies import tinyproxy
from .conftest import echo_handler, run

TIMEOUT = 10.0
POSIX = sys.platform != "win32"

# The subprocesses import the same asyncws as this process, with UTF-8 stdio everywhere.
ENV = dict(
    os.environ,
    PYTHONPATH=os.pathsep.join(
        [str(Path(asyncws.__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]
    ),
    PYTHONIOENCODING="utf-8",
)


def cli_run(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncws", *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**ENV, **(env or {})},
        timeout=TIMEOUT,
    )


def cli_popen(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "asyncws", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        env=ENV,
    )


def read_line(stream: Any, timeout: float = TIMEOUT) -> str:
    """One line from a subprocess pipe, or fail after ``timeout`` seconds."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"no line from the subprocess within {timeout} s")


@contextmanager
def thread_server(
    handler: Callable[[asyncws.Websocket], Awaitable[Any]] = echo_handler,
) -> Iterator[str]:
    """An asyncws server on 127.0.0.1 in a background thread; yields its ws:// URL."""
    ready: queue.Queue[Any] = queue.Queue()
    loop = asyncio.new_event_loop()
    stops: list[asyncio.Event] = []  # made on the server's loop (Python 3.9 binds it there)

    async def serve() -> None:
        stop = asyncio.Event()
        stops.append(stop)
        server = await asyncws.start_server(handler, "127.0.0.1", 0)
        ready.put(server.sockets[0].getsockname()[1])
        await stop.wait()
        server.close()
        await asyncio.wait_for(server.wait_closed(), TIMEOUT)

    def main() -> None:
        try:
            loop.run_until_complete(serve())
        except BaseException as exc:  # pragma: no cover - reported by the test below
            ready.put(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    port = ready.get(timeout=TIMEOUT)
    if isinstance(port, BaseException):
        raise port
    try:
        yield f"ws://127.0.0.1:{port}/"
    finally:
        loop.call_soon_threadsafe(stops[0].set)
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "the test server did not stop"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- --version, --help, arguments ----------------------------------------------------------------


def test_version() -> None:
    result = cli_run("--version")
    assert result.returncode == 0, result.stderr
    kernels = "Cython kernels" if asyncws.HAS_SPEEDUPS else "pure-Python kernels"
    if not sysconfig.get_config_var("Py_GIL_DISABLED"):
        build = "GIL"
    else:  # the suite must not turn the GIL back on, and neither must --version
        build = "free-threaded"
    assert result.stdout.strip() == f"asyncws {asyncws.__version__} ({kernels}, {build})"


def test_version_says_when_a_free_threaded_build_runs_with_the_gil() -> None:
    result = cli_run("--version", env={"PYTHON_GIL": "1"})
    assert result.returncode == 0, result.stderr
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        assert result.stdout.strip().endswith(", free-threaded build, GIL enabled)")
    else:  # PYTHON_GIL means nothing to a GIL build
        assert result.stdout.strip().endswith(", GIL)")


def test_help() -> None:
    top = cli_run("--help")
    assert top.returncode == 0, top.stderr
    assert "URL" in top.stdout and "ws://" in top.stdout
    assert "serve --echo" in top.stdout and "serve --help" in top.stdout
    serve = cli_run("serve", "--help")
    assert serve.returncode == 0, serve.stderr
    for word in ("--echo", "HOST", "PORT", "--certfile", "--max-size", "Serving on"):
        assert word in serve.stdout


@pytest.mark.parametrize(
    "argv",
    [
        [],  # no URL
        ["--header", "no colon", "ws://127.0.0.1/"],
        ["--header", "Bad Name: x", "ws://127.0.0.1/"],
        ["--header", "X-Injected: a\r\nHost: evil", "ws://127.0.0.1/"],
        ["--max-size", "-1", "ws://127.0.0.1/"],
        ["serve", "127.0.0.1", "0"],  # no --echo
        ["serve", "--echo", "127.0.0.1", "65536"],
        ["serve", "--echo", "--keyfile", "key.pem", "127.0.0.1", "0"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc_info:
        cli.main(argv)
    assert exc_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_header_parsing() -> None:
    assert cli._header("Authorization: Bearer x:y ") == ("Authorization", "Bearer x:y")
    assert cli._header("X-Empty:") == ("X-Empty", "")


# -- serve --echo ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_serve_echo_until_signal(sig: str) -> None:
    proc = cli_popen("serve", "--echo", "127.0.0.1", "0")
    try:
        line = read_line(proc.stdout)
        assert line.startswith("Serving on ws://127.0.0.1:"), (line, proc.stderr)
        port = int(line.rsplit(":", 1)[1])
        assert port != 0

        async def client() -> asyncws.Websocket:
            ws = await asyncws.connect(f"ws://127.0.0.1:{port}/")
            for payload in ["hello", b"\x00\xffbinary", "é" * 1000]:
                await ws.send(payload)
                assert await ws.recv() == payload
            if POSIX:
                # Stopping the server closes the open connection with 1001 (going away).
                proc.send_signal(getattr(signal, sig))
                assert await ws.recv() is None
                assert ws.close_code == 1001
            else:
                await ws.close()
            return ws

        run(client(), TIMEOUT)
        if not POSIX:
            pytest.skip("no SIGINT/SIGTERM to send to a subprocess on Windows")
        assert proc.wait(TIMEOUT) == 0
        assert proc.stderr is not None
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            assert stream is not None
            stream.close()


def test_serve_port_in_use() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = cli_run("serve", "--echo", "127.0.0.1", str(port))
    assert result.returncode == 1
    assert "cannot listen" in result.stderr and "Traceback" not in result.stderr


# -- the interactive client ------------------------------------------------------------------------


def test_client_sends_stdin_lines_and_closes_on_eof() -> None:
    with thread_server() as url:
        result = cli_run(url, stdin="hello\nworld\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"Connected to {url}.",
        "< hello",
        "< world",
        "Connection closed: 1000.",
    ]
    assert result.stderr == ""


def test_client_against_serve_subprocess() -> None:
    server = cli_popen("serve", "--echo", "127.0.0.1", "0")
    try:
        line = read_line(server.stdout)
        url = line.split()[-1]
        result = cli_run(url, stdin="un\r\ndeux\ntrois sans fin de ligne")
        assert result.returncode == 0, result.stderr
        assert "< un\n< deux\n< trois sans fin de ligne\n" in result.stdout
    finally:
        server.kill()
        server.wait(TIMEOUT)
        for stream in (server.stdin, server.stdout, server.stderr):
            assert stream is not None
            stream.close()


def test_client_reports_server_close_and_binary() -> None:
    async def handler(ws: asyncws.Websocket) -> None:
        await ws.send("welcome")
        await ws.send(bytes(range(40)))
        await ws.close(4000, "bye")

    with thread_server(handler) as url:
        # stdin stays open: the client must end because the server closed, not on EOF.
        proc = cli_popen(url)
        try:
            assert proc.wait(TIMEOUT) == 0
            assert proc.stdout is not None and proc.stderr is not None
            out, err = proc.stdout.read(), proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(TIMEOUT)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                assert stream is not None
                stream.close()
    assert out.splitlines() == [
        f"Connected to {url}.",
        "< welcome",
        f"< (binary) 40 bytes: {bytes(range(32)).hex()}",
        "Connection closed: 4000 bye.",
    ]
    assert err == ""  # in particular no fatal error from the stdin thread at exit


def test_client_escapes_terminal_controls_from_the_peer() -> None:
    """A server's messages and close reason cannot drive the terminal: escape sequences
    (clear screen, cursor moves, window title), BEL, DEL and C1 controls come out escaped;
    newline and tab stay."""
    hostile = "\x1b[2J\x1b[1;1Hgone\x1b]0;pwned\x07 \x9b31mred\x7f\r!"

    async def handler(ws: asyncws.Websocket) -> None:
        await ws.send(hostile)
        await ws.send("two\nlines\tand a tab")
        await ws.close(4000, "bye\x1b[H\x1bc")

    with thread_server(handler) as url:
        proc = cli_run(url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"Connected to {url}.",
        "< \\x1b[2J\\x1b[1;1Hgone\\x1b]0;pwned\\x07 \\x9b31mred\\x7f\\x0d!",
        "< two",
        "lines\tand a tab",
        "Connection closed: 4000 bye\\x1b[H\\x1bc.",
    ]
    controls = {
        c for c in proc.stdout if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) < 0xA0
    }
    assert not controls


def test_client_headers_and_max_size() -> None:
    async def handler(ws: asyncws.Websocket) -> None:
        assert ws.request is not None
        await ws.send(f"{ws.request.headers.get('X-One')}|{ws.request.headers.get('X-Two')}")
        await ws.send("x" * 100)  # over the client's --max-size
        await ws.recv()

    with thread_server(handler) as url:
        result = cli_run(
            "--header", "X-One: 1", "--header", "X-Two:two words", "--max-size", "50", url
        )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1] == "< 1|two words"
    assert lines[-1].startswith("Connection closed: 1009")


@pytest.mark.parametrize(
    "url_of", [lambda port: "http://127.0.0.1/", lambda port: f"ws://127.0.0.1:{port}/"]
)
def test_client_connection_errors_exit_1(url_of: Callable[[int], str]) -> None:
    result = cli_run(url_of(free_port()), stdin="never sent\n")
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and "failed to connect" in result.stderr


def test_client_handshake_refused_exits_1() -> None:
    async def main() -> None:
        async def not_websocket(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(not_websocket, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "asyncws", f"ws://127.0.0.1:{port}/",
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=ENV,
            )  # fmt: skip
            out, err = await proc.communicate()
        assert proc.returncode == 1
        assert out == b"" and b"403" in err and len(err.splitlines()) == 1

    run(main(), TIMEOUT)


def test_client_through_proxy(tmp_path: Path) -> None:
    with thread_server() as url, tinyproxy(tmp_path, connect_ports=[]) as proxy:
        result = cli_run("--proxy", proxy.url, url, stdin="via the proxy\n")
        log = proxy.log_text()
    assert result.returncode == 0, result.stderr
    assert "< via the proxy" in result.stdout.splitlines()
    assert f"CONNECT {url[5:-1]} HTTP/1.1" in log
    with tinyproxy(tmp_path, connect_ports=[1]) as refusing:  # CONNECT to port 1 only
        result = cli_run("--proxy", refusing.url, url, stdin="never sent\n")
    assert result.returncode == 1
    assert "failed to connect" in result.stderr and "403" in result.stderr


# -- wss:// ----------------------------------------------------------------------------------------


def test_wss_serve_and_insecure_client(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    cert = trustme.CA().issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(certfile)
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(certfile, append=True)
    cert.private_key_pem.write_to_path(keyfile)
    server = cli_popen(
        "serve", "--echo", "--certfile", str(certfile), "--keyfile", str(keyfile), "127.0.0.1", "0"
    )
    try:
        line = read_line(server.stdout)
        assert line.startswith("Serving on wss://127.0.0.1:"), line
        url = line.split()[-1]
        # The test CA is not trusted: verification fails without --insecure.
        refused = cli_run(url, stdin="hello\n")
        assert refused.returncode == 1 and "certificate" in refused.stderr.lower()
        result = cli_run("--insecure", url, stdin="hello\n")
        assert result.returncode == 0, result.stderr
        assert "< hello" in result.stdout.splitlines()
    finally:
        server.kill()
        server.wait(TIMEOUT)
        for stream in (server.stdin, server.stdout, server.stderr):
            assert stream is not None
            stream.close()
