"""The documentation (docs/): it builds without a warning, and its examples run.

The quickstart's code blocks (``.. code-block:: python`` with a ``:name:``) are extracted from
docs/quickstart.rst and run as they are, servers and clients in subprocesses against each other,
with only the port (and ``localhost``) replaced: everything binds and connects to 127.0.0.1, and
every wait is bounded. The tables of close codes and options are checked against the code.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import asyncws
from asyncws import frames

DOCS = Path(__file__).resolve().parent.parent / "docs"

# cibuildwheel copies tests/ without docs/: there is nothing to check then.
pytestmark = pytest.mark.skipif(
    not (DOCS / "quickstart.rst").is_file(),
    reason="docs/ is not next to tests/ (installed-wheel run)",
)

TIMEOUT = 15.0  # seconds: a hang guard for each wait, never a speed assertion


# -- helpers -------------------------------------------------------------------------------------


def code_blocks(page: str) -> dict[str, str]:
    """The named ``.. code-block:: python`` blocks of docs/PAGE, dedented: {name: code}."""
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    blocks: dict[str, str] = {}
    i = 0
    while i < len(lines):
        head = re.match(r"^(\s*)\.\. code-block:: python\s*$", lines[i])
        i += 1
        if not head:
            continue
        indent = len(head.group(1))
        name = None
        while i < len(lines) and re.match(r"^\s+:\w[\w-]*:", lines[i]):  # the options
            option = re.match(r"^\s+:name:\s*(\S+)", lines[i])
            if option:
                name = option.group(1)
            i += 1
        body: list[str] = []
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > indent):
            body.append(lines[i])
            i += 1
        if name:
            blocks[name] = textwrap.dedent("\n".join(body)).strip() + "\n"
    return blocks


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def localize(code: str, default_port: int, port: int) -> str:
    """Point an example at 127.0.0.1:PORT instead of its documented port."""
    code = code.replace("localhost", "127.0.0.1")
    return code.replace(str(default_port), str(port))


def run_script(tmp: Path, name: str, code: str, **kwds: object) -> subprocess.Popen[str]:
    path = tmp / f"{name}.py"
    path.write_text(code, encoding="utf-8")
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, str(path)],
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwds,
    )


def wait_listening(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"server exited with {proc.returncode}:\n{out}\n{err}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"nothing listening on 127.0.0.1:{port} after {TIMEOUT} s")


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Stop a server the way Ctrl-C would (terminate on Windows); return its output."""
    if proc.poll() is None:
        if sys.platform == "win32":
            proc.terminate()
        else:
            proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"process did not stop within {TIMEOUT} s:\n{out}\n{err}")


@contextmanager
def server_process(tmp: Path, code: str, port: int) -> Iterator[subprocess.Popen[str]]:
    proc = run_script(tmp, "server", code)
    try:
        wait_listening(port, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def read_lines(proc: subprocess.Popen[str], count: int) -> list[str]:
    """The first COUNT lines of a process's output, waiting at most TIMEOUT seconds."""
    lines: list[str] = []

    def reader() -> None:
        assert proc.stdout is not None
        while len(lines) < count:
            line = proc.stdout.readline()
            if not line:
                return
            lines.append(line.rstrip("\n"))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    return lines


# -- the build -----------------------------------------------------------------------------------


def test_sphinx_build_has_no_warnings(tmp_path: Path) -> None:
    pytest.importorskip("sphinx", reason="sphinx is not installed (pip install sphinx myst-parser)")
    pytest.importorskip("myst_parser", reason="myst-parser is not installed")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-E",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    for page in (
        "index",
        "quickstart",
        "options",
        "deployment",
        "cli",
        "migration",
        "api",
        "conformance",
        "hostile",
    ):
        assert (tmp_path / "html" / f"{page}.html").is_file(), page
    api = (tmp_path / "html" / "api.html").read_text(encoding="utf-8")
    for name in (
        "connect",
        "unix_connect",
        "start_server",
        "start_unix_server",
        "broadcast",
        "Websocket.recv",
        "Websocket.close_reason",
        "Server.wait_closed",
        "Deflate",
        "ConnectionClosed",
        "InvalidHandshake",
        "InvalidURI",
        "OpenTimeout",
        "WebSocketError",
        "Request",
        "Response",
        "Headers",
        "fanout.LocalFanout",
        "fanout.RedisFanout",
        "fanout.RedisFanout.subscribe",
        "fanout.FanoutStats",
        "fanout.FanoutUnavailable",
    ):
        assert f'id="asyncws.{name}"' in api, name


# -- the quickstart ------------------------------------------------------------------------------


def test_quickstart_has_the_examples() -> None:
    blocks = code_blocks("quickstart.rst")
    assert {
        "qs-echo-server",
        "qs-echo-client",
        "qs-async-with",
        "qs-echo-server-async-for",
        "qs-tls-server",
        "qs-tls-client",
        "qs-broadcast",
    } <= set(blocks)
    for code in blocks.values():
        compile(code, "<quickstart>", "exec")
        assert "yield from" not in code and "@asyncio.coroutine" not in code


def test_quickstart_echo_server_and_client(tmp_path: Path) -> None:
    """asyncws 0.1's two examples: the client echoes until the server is stopped."""
    blocks = code_blocks("quickstart.rst")
    port = free_port()
    with server_process(tmp_path, localize(blocks["qs-echo-server"], 8000, port), port) as srv:
        client = run_script(tmp_path, "client", localize(blocks["qs-echo-client"], 8000, port))
        try:
            assert read_lines(client, 3) == ["hello"] * 3
            stop(srv)  # closes the connection (1001): recv() returns None, the loop ends
            out, err = client.communicate(timeout=TIMEOUT)
        finally:
            if client.poll() is None:
                client.kill()
                client.communicate()
        assert client.returncode == 0, err
        assert set(out.split()) <= {"hello"}


def test_quickstart_async_with_and_async_for(tmp_path: Path) -> None:
    blocks = code_blocks("quickstart.rst")
    port = free_port()
    server = localize(blocks["qs-echo-server-async-for"], 8000, port)
    with server_process(tmp_path, server, port) as srv:
        client = run_script(tmp_path, "client", localize(blocks["qs-async-with"], 8000, port))
        out, err = client.communicate(timeout=TIMEOUT)
        assert client.returncode == 0, err
        assert out.splitlines() == ["one", "two", "three", "closed with 1000"]
        stop(srv)


def test_quickstart_tls(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(tmp_path / "cert.pem"), append=True)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    blocks = code_blocks("quickstart.rst")
    port = free_port()
    with server_process(tmp_path, localize(blocks["qs-tls-server"], 8443, port), port) as srv:
        client = run_script(tmp_path, "client", localize(blocks["qs-tls-client"], 8443, port))
        out, err = client.communicate(timeout=TIMEOUT)
        assert client.returncode == 0, err
        assert out.splitlines() == ["hello over TLS"]
        stop(srv)


def test_quickstart_broadcast(tmp_path: Path) -> None:
    blocks = code_blocks("quickstart.rst")
    port = free_port()

    async def chat() -> None:
        url = f"ws://127.0.0.1:{port}/"
        async with asyncws.connect(url) as alice, asyncws.connect(url) as bob:
            await asyncio.sleep(0.2)  # both handlers are running: both are in server.connections
            await alice.send("hi all")
            assert await alice.recv() == "hi all"
            assert await bob.recv() == "hi all"

    with server_process(tmp_path, localize(blocks["qs-broadcast"], 8000, port), port) as srv:
        asyncio.run(asyncio.wait_for(chat(), TIMEOUT))
        stop(srv)


# -- the options page ----------------------------------------------------------------------------


def test_process_request_example() -> None:
    """The authentication example of docs/options.rst, run in-process."""
    code = code_blocks("options.rst")["options-process-request"]
    namespace: dict[str, object] = {"__name__": "docs_example"}
    exec(compile(code, "options-process-request", "exec"), namespace)

    async def main() -> None:
        server = await asyncws.start_server(
            namespace["handler"],  # type: ignore[arg-type]
            "127.0.0.1",
            0,
            process_request=namespace["authenticate"],  # type: ignore[arg-type]
        )
        async with server:
            url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            with pytest.raises(asyncws.InvalidHandshake) as refused:
                await asyncws.connect(url + "/chat")
            assert refused.value.status == 401
            with pytest.raises(asyncws.InvalidHandshake) as health:
                await asyncws.connect(url + "/healthz")
            assert health.value.status == 200
            headers = {"Authorization": f"Bearer {namespace['TOKEN']}"}
            async with asyncws.connect(url + "/chat", extra_headers=headers) as ws:
                await ws.send("hello")
                assert await ws.recv() == "hello"

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))


KEYWORD_FUNCTIONS = (
    asyncws.connect,
    asyncws.unix_connect,
    asyncws.start_server,
    asyncws.start_unix_server,
)


def documented_defaults() -> dict[str, object]:
    """The summary table of docs/options.rst: keyword -> the default it shows, as a value (the
    first ``literal`` of the default column, or its first word: None, True)."""
    text = (DOCS / "options.rst").read_text(encoding="utf-8")
    rows = re.findall(r"\n   \* - ``(\w+)``\n     - (.*)\n", text)
    assert rows
    defaults: dict[str, object] = {}
    for name, shown in rows:
        literal = re.match(r"``([^`]+)``", shown)
        source = literal.group(1) if literal else shown.split()[0]
        source = source.replace("VERSION", asyncws.__version__)
        defaults[name] = eval(source, {})  # a literal of our own docs: 2**20, "...", None
    return defaults


def test_every_keyword_is_documented() -> None:
    import inspect

    text = (DOCS / "options.rst").read_text(encoding="utf-8")
    documented = documented_defaults()
    for function in KEYWORD_FUNCTIONS:
        for name, param in inspect.signature(function).parameters.items():
            if param.kind is inspect.Parameter.KEYWORD_ONLY:
                assert name in documented, f"{function.__name__}({name}=...)"
                prose = text.split("Limits\n------", 1)[1]
                assert re.search(rf"``{name}(``|=)", prose), f"{name} is not explained"


def test_defaults_are_defined_once() -> None:
    """Every signature's default, the docs table and the CLI come from asyncws.options."""
    import inspect

    defaults = asyncws.options.DEFAULTS
    assert documented_defaults() == defaults
    for function in KEYWORD_FUNCTIONS:
        for name, param in inspect.signature(function).parameters.items():
            if param.kind is inspect.Parameter.KEYWORD_ONLY:
                assert param.default == defaults[name], f"{function.__name__}({name}=...)"
    # The Unix-socket functions take the same keywords as their TCP twins (no proxy there).
    def keywords(function: object) -> set[str]:
        return {
            n
            for n, p in inspect.signature(function).parameters.items()  # type: ignore[arg-type]
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }

    assert keywords(asyncws.unix_connect) == keywords(asyncws.connect) - {"proxy", "proxy_ssl"}
    assert keywords(asyncws.start_unix_server) == keywords(asyncws.start_server)
    assert keywords(asyncws.connect) | keywords(asyncws.start_server) == set(defaults)
    from asyncws import cli

    assert cli.DEFAULT_MAX_SIZE == defaults["max_size"]


# -- the API page: the close codes table ---------------------------------------------------------


def test_close_codes_table_matches_frames() -> None:
    text = (DOCS / "api.rst").read_text(encoding="utf-8").split(".. _close-codes:", 1)[1]
    rows = re.findall(r"   \* - ([\d, -]+)\n     - (.*)\n     - (yes|no)\n", text)
    assert rows
    seen = set()
    for codes, name, wire in rows:
        for part in codes.split(","):
            low, _, high = part.strip().partition("-")
            for code in range(int(low), int(high or low) + 1):
                if code == 1005:
                    assert wire == "no"  # ws.close(1005) sends no code: see the table
                    assert not frames.is_valid_close_code(code)
                else:
                    assert frames.is_valid_close_code(code) is (wire == "yes"), code
                seen.add(code)
        constant = re.match(r"``(CLOSE_\w+)``", name)
        if constant:
            assert getattr(frames, constant.group(1)) == int(codes)
    assert set(range(0, 65536)) == seen
    documented = set(re.findall(r"``(CLOSE_\w+)``", text))
    assert documented == {n for n in frames.__all__ if n.startswith("CLOSE_")}


# -- the deployment page: several processes on one port ------------------------------------------


def start_example(name: str, args: list[str], **kwds: Any) -> subprocess.Popen[str]:
    """Start docs/examples/NAME with ARGS, its output piped as text."""
    return subprocess.Popen(
        [sys.executable, str(DOCS / "examples" / name), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwds,
    )


def echo_then_stop(
    proc: subprocess.Popen[str], port: int, header: str, workers: set[str]
) -> int:
    """Six echoes through the shared ``port``, each answered by one of ``workers`` (named in the
    101 response's ``header``); then SIGTERM to ``proc`` while a connection is open. Returns
    the close code that connection gets."""

    async def clients() -> int:
        for i in range(6):
            async with asyncws.connect(f"ws://127.0.0.1:{port}/") as ws:
                await ws.send(f"m{i}")
                assert await ws.recv() == f"m{i}"
                assert ws.response is not None
                assert ws.response.headers[header] in workers
        ws = await asyncws.connect(f"ws://127.0.0.1:{port}/")
        proc.send_signal(signal.SIGTERM)
        assert await ws.recv() is None
        return ws.close_code or 0

    return asyncio.run(asyncio.wait_for(clients(), TIMEOUT))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the example forks its workers")
def test_multiprocess_example(tmp_path: Path) -> None:
    port = free_port()
    proc = start_example(
        "multiprocess_server.py",
        ["--workers", "2", "127.0.0.1", str(port)],
        start_new_session=True,  # its own process group: the cleanup reaches the workers too
    )
    try:
        started = read_lines(proc, 2)
        assert len(started) == 2 and all("serving on" in line for line in started), started
        workers = {line.split()[1] for line in started}
        # SIGTERM: the parent stops the workers gracefully.
        assert echo_then_stop(proc, port, "X-Worker-PID", workers) == 1001
        proc.wait(TIMEOUT)
        assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        # The parent and its workers; they hold the output pipes, so communicate() would wait
        # for a worker left behind.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.communicate(timeout=TIMEOUT)


# -- the deployment page: the fan-out example ----------------------------------------------------


def test_fanout_example(tmp_path: Path, redis_server: Any) -> None:
    """docs/deployment.rst's RedisFanout server, against a real Redis: a room spans clients."""
    code = code_blocks("deployment.rst")["deployment-fanout"]
    code = code.replace("redis://127.0.0.1:6379", redis_server.url).replace("0.0.0.0", "127.0.0.1")
    port = free_port()

    async def chat() -> None:
        url = f"ws://127.0.0.1:{port}/lobby"
        async with asyncws.connect(url) as alice, asyncws.connect(url) as bob:
            for ws, name in [(alice, "alice"), (bob, "bob")]:
                await ws.send(name)  # back to the sender once it is in the room
                while await ws.recv() != name:
                    pass
            assert await alice.recv() == "bob"  # alice was in the room when bob joined
            await alice.send(b"\x00binary")
            assert await alice.recv() == b"\x00binary"
            assert await bob.recv() == b"\x00binary"

    with server_process(tmp_path, localize(code, 8000, port), port) as srv:
        asyncio.run(asyncio.wait_for(chat(), TIMEOUT))
        srv.kill()


# -- the deployment page: several threads on one port, one event loop each -------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="Windows has no SO_REUSEPORT")
def test_multithread_example() -> None:
    port = free_port()
    proc = start_example("multithread_server.py", ["--threads", "2", "127.0.0.1", str(port)])
    try:
        gil_line, *started = read_lines(proc, 3)
        gil = getattr(sys, "_is_gil_enabled", lambda: True)()
        assert gil_line.startswith("GIL enabled" if gil else "free-threaded"), gil_line
        assert len(started) == 2 and all("serving on" in line for line in started), started
        workers = {line.split()[0] for line in started}
        assert workers == {"worker-0", "worker-1"}
        # SIGTERM: every thread closes its connections with 1001.
        assert echo_then_stop(proc, port, "X-Worker-Thread", workers) == 1001
        proc.wait(TIMEOUT)
        assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=TIMEOUT)
