"""Run the Autobahn|Testsuite (the real ``wstest``) against asyncws and grade the result.

For each selected backend (the Cython extension, ``speedups``, and the pure-Python fallback,
``purepython``, chosen by ``ASYNCWS_NO_SPEEDUPS=1`` at import time, hence one subprocess per
run) and each selected mode it runs one suite, one at a time: in ``server`` mode an asyncws
echo server is tested by ``wstest -m fuzzingclient``; in ``client`` mode an asyncws client
is driven through ``wstest -m fuzzingserver``. Everything listens on 127.0.0.1, every
subprocess has a timeout, ``--tls`` runs over wss:// with a throw-away certificate made by
trustme. Each suite writes into ``OUTDIR/<mode>-<backend>[-tls]/`` (spec, logs, wstest's
reports), which is emptied first so stale results can never pass. The verdict comes from
``summary.py``; ``--write-docs`` regenerates ``docs/conformance.md`` from the run.
``--transport aiofastnet`` runs the asyncws peer on aiofastnet's transports (``--transport
asyncio`` on the loop's own; the default, auto, is what asyncws chooses) and adds the name to
the suite's folder. Usage: ``python compliance/run.py [--mode both] [--backend both]
[--cases 1.*,2.*] [--tls] [--transport auto]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import summary  # noqa: E402  (sibling module, importable once HERE is on sys.path)

VENV = Path(os.environ.get("WSTEST_VENV", HERE / ".venv-wstest"))
WSTEST_PY = VENV / "bin" / "python"
LAUNCHER = HERE / "wstest_loopback.py"
PEER = HERE / "asyncws_peer.py"
INSTALLER = HERE / "install_wstest.sh"
DOCS = ROOT / "docs" / "conformance.md"
DEFAULT_CASES = ",".join(f"{n}.*" for n in range(1, 11))
NO_PYTHON27 = 3  # exit code of install_wstest.sh when there is no Python 2.7


def log(msg: str) -> None:
    print(f"[compliance] {msg}", flush=True)


@dataclass
class Suite:
    mode: str  # "server" (asyncws server under test) or "client"
    backend: str  # "speedups" or "purepython"
    tls: bool
    transport: str = "auto"  # ASYNCWS_TRANSPORT for the asyncws peer: auto, asyncio, aiofastnet

    @property
    def name(self) -> str:
        transport = "" if self.transport == "auto" else f"-{self.transport}"
        return f"{self.mode}-{self.backend}" + ("-tls" if self.tls else "") + transport

    @property
    def agent(self) -> str:
        return f"asyncws-{self.name}"


def asyncws_env(backend: str, transport: str = "auto") -> dict:
    """Environment for an asyncws subprocess using ``backend`` on ``transport`` (what
    ``transport="auto"`` means there: see asyncws.transports)."""
    env = dict(os.environ)
    env.pop("ASYNCWS_NO_SPEEDUPS", None)
    env.pop("ASYNCWS_TRANSPORT", None)
    if backend == "purepython":
        env["ASYNCWS_NO_SPEEDUPS"] = "1"
    if transport != "auto":
        env["ASYNCWS_TRANSPORT"] = transport
    env["PYTHONUNBUFFERED"] = "1"
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start(
    cmd: list[str],
    logfile: IO[bytes],
    env: dict | None = None,
    stdout: int | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen:
    """Start ``cmd`` in its own process group (so stopping it stops all it started)."""
    return subprocess.Popen(
        cmd,
        stdout=stdout if stdout is not None else logfile,
        stderr=logfile,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the process group of ``proc`` (started by us), SIGKILL after ``grace``."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(grace)
    except ProcessLookupError:
        pass


def wait_bounded(proc: subprocess.Popen, timeout: float, what: str) -> int | None:
    """Wait for ``proc``; on timeout stop it and return None."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log(f"TIMEOUT: {what} still running after {timeout:.0f} s; stopping it")
        stop(proc)
        return None


def read_listening_line(proc: subprocess.Popen, timeout: float) -> int | None:
    """Read ``LISTENING <port>`` from the echo server's stdout, or None."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buf = b""
    try:
        while time.monotonic() < deadline:
            if not sel.select(max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                return None  # the process closed stdout (it exited)
            buf += chunk
            for line in buf.decode("utf-8", "replace").splitlines():
                if line.startswith("LISTENING "):
                    return int(line.split()[1])
    finally:
        sel.close()
    return None


def make_certs(workdir: Path) -> dict:
    """Issue a throw-away CA and a certificate for 127.0.0.1; return the PEM file paths."""
    try:
        import trustme
    except ImportError:
        sys.exit("--tls needs trustme (pip install -e '.[test]')")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {k: workdir / f"{k}.pem" for k in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    return paths


def write_spec(path: Path, spec: dict) -> None:
    path.write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")


def run_server_suite(
    suite: Suite, outdir: Path, base_spec: dict, certs: dict | None, timeout: float
) -> str | None:
    """asyncws echo server under test, wstest fuzzingclient as the peer. Returns an error."""
    cmd = [sys.executable, str(PEER), "--expect-backend", suite.backend, "server"]
    if certs:
        cmd += ["--certfile", str(certs["cert"]), "--keyfile", str(certs["key"])]
    with open(outdir / "asyncws.log", "wb") as alog, open(outdir / "wstest.log", "wb") as wlog:
        env = asyncws_env(suite.backend, suite.transport)
        echo = start(cmd, alog, env=env, stdout=subprocess.PIPE)
        try:
            port = read_listening_line(echo, 30)
            if port is None:
                return "the asyncws echo server did not start (see asyncws.log)"
            scheme = "wss" if certs else "ws"
            spec = dict(
                base_spec, servers=[{"agent": suite.agent, "url": f"{scheme}://127.0.0.1:{port}"}]
            )
            write_spec(outdir / "spec.json", spec)
            log(f"{suite.name}: echo server on 127.0.0.1:{port}, running wstest fuzzingclient")
            wstest = start(
                [str(WSTEST_PY), str(LAUNCHER), "-m", "fuzzingclient", "-s", "spec.json"],
                wlog,
                cwd=outdir,
            )
            rc = wait_bounded(wstest, timeout, "wstest fuzzingclient")
            if rc is None:
                return f"wstest fuzzingclient timed out after {timeout:.0f} s"
            if rc != 0:
                return f"wstest fuzzingclient exited with {rc} (see wstest.log)"
            if echo.poll() is not None:
                return f"the asyncws echo server died during the run (exit {echo.returncode})"
            return None
        finally:
            stop(echo)


def run_client_suite(
    suite: Suite, outdir: Path, base_spec: dict, certs: dict | None, timeout: float
) -> str | None:
    """wstest fuzzingserver as the peer, asyncws client under test. Returns an error."""
    with open(outdir / "asyncws.log", "wb") as alog, open(outdir / "wstest.log", "wb") as wlog:
        for _attempt in range(3):  # a free port can be taken between probe and bind: retry
            port = free_port()
            scheme = "wss" if certs else "ws"
            spec = dict(base_spec, url=f"{scheme}://127.0.0.1:{port}")
            if certs:
                spec.update(cert=str(certs["cert"]), key=str(certs["key"]))
            write_spec(outdir / "spec.json", spec)
            wstest = start(
                [str(WSTEST_PY), str(LAUNCHER), "-m", "fuzzingserver", "-s", "spec.json"],
                wlog,
                cwd=outdir,
            )
            deadline = time.monotonic() + 30
            while wstest.poll() is None and not port_open(port) and time.monotonic() < deadline:
                time.sleep(0.1)
            if wstest.poll() is None and port_open(port):
                break
            stop(wstest)
        else:
            return "wstest fuzzingserver did not start listening (see wstest.log)"
        try:
            log(f"{suite.name}: wstest fuzzingserver on 127.0.0.1:{port}, running asyncws client")
            cmd = [
                sys.executable,
                str(PEER),
                "--expect-backend",
                suite.backend,
                "client",
                "--url",
                f"{scheme}://127.0.0.1:{port}",
                "--agent",
                suite.agent,
            ]
            if certs:
                cmd += ["--cafile", str(certs["ca"])]
            client = start(cmd, alog, env=asyncws_env(suite.backend, suite.transport))
            rc = wait_bounded(client, timeout, "asyncws fuzzing client")
            if rc is None:
                return f"the asyncws client timed out after {timeout:.0f} s"
            if rc != 0:
                return f"the asyncws client exited with {rc} (see asyncws.log)"
            return None
        finally:
            stop(wstest)


def run_suite(
    suite: Suite,
    outroot: Path,
    cases: list[str],
    exclude: list[str],
    certs: dict | None,
    timeout: float,
) -> str | None:
    outdir = outroot / suite.name
    shutil.rmtree(outdir, ignore_errors=True)  # stale reports must never count
    outdir.mkdir(parents=True)
    base_spec = {
        "outdir": str(outdir),
        "cases": cases,
        "exclude-cases": exclude,
        "options": {"failByDrop": False},
    }
    began = time.monotonic()
    runner = run_server_suite if suite.mode == "server" else run_client_suite
    error = runner(suite, outdir, base_spec, certs, timeout)
    took = time.monotonic() - began
    if error is None and not (outdir / "index.json").exists():
        error = "wstest wrote no index.json"
    log(f"{suite.name}: {'done' if error is None else 'ERROR: ' + error} in {took:.1f} s")
    return error


def ensure_wstest() -> None:
    rc = subprocess.call(["bash", str(INSTALLER)], timeout=600)
    if rc == NO_PYTHON27:
        log("!!! no Python 2.7: cannot run the Autobahn Testsuite (see above) !!!")
        sys.exit(NO_PYTHON27)
    if rc != 0:
        sys.exit(f"installing wstest failed (exit {rc})")


def version_of(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def write_docs(
    agents: list[summary.AgentResult], args: argparse.Namespace, cmdline: str, passed: bool
) -> None:
    wstest_version = version_of(
        [str(WSTEST_PY), "-c", "import autobahntestsuite as a; print(a.__version__)"]
    )
    asyncws_version = version_of(
        [sys.executable, "-c", "import asyncws as a; print(getattr(a, '__version__', '?'))"]
    )
    commit = version_of(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = version_of(["git", "-C", str(ROOT), "status", "--porcelain", "--", "asyncws"])
    if dirty not in ("", "?"):
        commit += " plus uncommitted changes in asyncws/"
    race_note = ""
    if any(c.behavior == "NON-STRICT" for a in agents for c in a.cases):
        race_note = (
            " NON-STRICT here means a valid message sent just before a bad frame was not"
            "\nechoed before the connection was failed; whether that happens depends on how the"
            "\nbytes arrive, so the exact set of such cases can differ between runs."
        )
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    text = f"""# Autobahn Testsuite conformance

asyncws is tested with the real [Autobahn|Testsuite](https://github.com/crossbario/autobahn-testsuite)
`wstest` (PyPI `autobahntestsuite` 25.10.1, which runs on Python 2.7 only), as a server (wstest's
`fuzzingclient` against an asyncws echo server) and as a client (an asyncws client driven by
wstest's `fuzzingserver`), for both framing backends: the Cython extension (`speedups`) and the
pure-Python fallback (`purepython`, `ASYNCWS_NO_SPEEDUPS=1`).

## Running it

```sh
python -m pip install -e '.[test]'
python compliance/run.py
```

`compliance/run.py` first runs `compliance/install_wstest.sh`, which builds a Python 2.7 virtualenv
at `compliance/.venv-wstest` from the pinned `compliance/requirements-*.txt` (it looks for pyenv's
2.7.18 or `python2.7` on PATH, and exits with code 3 and a loud message when there is none; a
second run is a no-op). Then it runs the suites one at a time, everything on 127.0.0.1, and grades
them with `compliance/summary.py`: the exit status is non-zero when any case's behavior is FAILED
or NON-STRICT, its close is FAILED, WRONG CODE or UNCLEAN, or a suite produced no results.

Options: `--mode server|client|both`, `--backend speedups|purepython|both`, `--cases` (wstest
case patterns, comma separated; default `1.*` to `10.*`: 12.* and 13.* need permessage-deflate),
`--tls` (wss:// with a throw-away certificate from trustme), `--outdir` (default
`compliance/reports`; wstest's HTML and JSON reports land in `OUTDIR/<mode>-<backend>/`),
`--allow-non-strict`, `--timeout` (seconds per suite), `--write-docs` (regenerate this file).
CI runs `bash compliance/ci.sh` (both modes, both backends, cases 1 to 10; and a subset of the
permessage-deflate cases, whose full results are in `docs/conformance-deflate.md`).
`python compliance/summary.py compliance/reports` re-grades existing reports.

## Latest results

Generated by `{cmdline}` on {today} (asyncws {asyncws_version} at commit {commit},
autobahntestsuite {wstest_version}, CPython {platform.python_version()}, {platform.system()}
{platform.machine()}); cases `{args.cases}`{", over wss://" if args.tls else ""}.
Overall: **{"PASS" if passed else "FAIL"}**.

`behavior` counts (columns OK to FAILED) and the closing handshake (`behaviorClose`):

{summary.markdown_table(agents)}

Cases that are not OK (the reason is taken from the first listed agent's report; full reports:
`OUTDIR/<mode>-<backend>/index.html`).{race_note}

{summary.not_ok_markdown(agents, args.allow_non_strict)}
"""
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(text, encoding="utf-8")
    log(f"wrote {DOCS}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["server", "client", "both"], default="both")
    parser.add_argument("--backend", choices=["speedups", "purepython", "both"], default="both")
    parser.add_argument(
        "--cases",
        default=DEFAULT_CASES,
        help=f"wstest case patterns, comma separated (default {DEFAULT_CASES})",
    )
    parser.add_argument("--exclude-cases", default="", help="case patterns to leave out")
    parser.add_argument("--outdir", type=Path, default=HERE / "reports")
    parser.add_argument("--tls", action="store_true", help="run over wss://")
    parser.add_argument(
        "--transport",
        choices=["auto", "asyncio", "aiofastnet"],
        default="auto",
        help="the asyncws peer's transports (ASYNCWS_TRANSPORT; auto: asyncws' choice)",
    )
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per suite")
    parser.add_argument(
        "--allow-non-strict", action="store_true", help="do not count NON-STRICT as a failure"
    )
    parser.add_argument("--write-docs", action="store_true", help=f"regenerate {DOCS}")
    args = parser.parse_args(argv)

    ensure_wstest()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if any(c.split(".")[0] in ("12", "13") for c in cases):
        # permessage-deflate cases: the asyncws client offers compression (asyncws_peer.py).
        os.environ["ASYNCWS_AUTOBAHN_DEFLATE"] = "1"
    exclude = [c.strip() for c in args.exclude_cases.split(",") if c.strip()]
    modes = ["server", "client"] if args.mode == "both" else [args.mode]
    backends = ["speedups", "purepython"] if args.backend == "both" else [args.backend]
    outroot = args.outdir.resolve()
    outroot.mkdir(parents=True, exist_ok=True)
    certs = None
    if args.tls:
        (outroot / "certs").mkdir(exist_ok=True)
        certs = make_certs(outroot / "certs")

    suites = [Suite(m, b, args.tls, args.transport) for b in backends for m in modes]
    errors = {}
    began = time.monotonic()
    for suite in suites:  # one at a time: wstest takes one core, asyncws the other
        error = run_suite(suite, outroot, cases, exclude, certs, args.timeout)
        if error:
            errors[suite.name] = error

    agents = summary.load_all([outroot / s.name for s in suites])
    print()
    passed = summary.report(agents, args.allow_non_strict)
    seen = {a.agent for a in agents}
    for suite in suites:
        if suite.agent not in seen:
            errors.setdefault(suite.name, "no results")
    counts = {a.agent: len(a.cases) for a in agents}
    if len(set(counts.values())) > 1:
        errors["case counts"] = f"agents ran different numbers of cases: {counts}"
    for name, error in errors.items():
        print(f"ERROR {name}: {error}")
    passed = passed and not errors
    log(
        f"{len(suites)} suite(s) in {time.monotonic() - began:.1f} s: "
        + ("PASS" if passed else "FAIL")
    )
    if args.write_docs:
        cmdline = "python compliance/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_docs(agents, args, cmdline.strip(), passed)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
