"""The echo benchmark's harness: cells, load, timing, pinning, interleaving and results.

It holds everything that is the same for every library: the configuration of one measured cell
(loop, TLS, compression, mode, kind, size), the message payloads, the client-side load drivers
that time the echoes (``Driver``, ``drive_async`` for ``await send()/recv()`` libraries,
``CallbackRun`` for callback ones), the server and client process bodies, the orchestrator that
starts a fresh pinned server and client process per round and interleaves the libraries
(A, B, C, A, B, C, ...), and the medians, tables and JSON it reports. It must not know any
library: adapters (``echo_libraries``) are handed to it, and the command line (``echo.py``)
chooses what to run.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import platform
import random
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, NamedTuple

HOST = "127.0.0.1"
# Largest message any server or client accepts: above the 16 MiB deflate cell.
MAX_SIZE = 2**25
# The script every server and client process runs (its ``_server`` / ``_client`` commands).
ECHO_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "echo.py")


class Cell(NamedTuple):
    """One configuration measured for every library, round after round."""

    loop: str  # "asyncio" or "uvloop"
    tls: bool
    deflate: bool  # permessage-deflate negotiated by both sides
    mode: str  # "pingpong" or "pipelined"
    kind: str  # "binary" or "text"
    size: int

    def key(self, impl: str) -> str:
        return "|".join(map(str, (*self, impl)))


# =============================================================================================
# What runs inside the server and client processes
def pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def raise_nofile(n: int = 16384) -> None:
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n if hard == resource.RLIM_INFINITY else min(n, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def run_loop(coro_fn: Callable[[], Any], loop_name: str) -> Any:
    if loop_name == "uvloop":
        import uvloop

        if sys.version_info >= (3, 11):
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(coro_fn())
        uvloop.install()  # pragma: no cover - Python < 3.11
    return asyncio.run(coro_fn())


def is_uvloop(loop: asyncio.AbstractEventLoop) -> bool:
    return type(loop).__module__.startswith("uvloop")


def server_ssl(tls_dir: str | None):
    if not tls_dir:
        return None
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(os.path.join(tls_dir, "server.pem"))
    return ctx


def client_ssl(tls_dir: str | None):
    if not tls_dir:
        return None
    import ssl

    return ssl.create_default_context(cafile=os.path.join(tls_dir, "ca.pem"))


def make_tls_dir() -> str:
    """A throw-away CA and a server certificate for 127.0.0.1 (trustme, else cryptography)."""
    d = tempfile.mkdtemp(prefix="asyncws-bench-tls-")
    try:
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert(HOST, "localhost")
        ca.cert_pem.write_to_path(os.path.join(d, "ca.pem"))
        cert.private_key_and_cert_chain_pem.write_to_path(os.path.join(d, "server.pem"))
        return d
    except ImportError:
        pass
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "asyncws-bench")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    keypem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with open(os.path.join(d, "ca.pem"), "wb") as f:
        f.write(pem)
    with open(os.path.join(d, "server.pem"), "wb") as f:
        f.write(keypem + pem)
    return d


# Text messages are JSON-like records drawn from a small vocabulary: ASCII, and compressible
# the way application text is (about 5.7x with zlib at level 6), not a repetition that deflate
# reduces to nothing.
# A 256 KiB block (longer than deflate's 32 KiB window) is repeated up to the size.
_TEXT_BLOCK = 256 * 1024
_WORDS = (
    "alpha beta gamma delta order price quantity status open closed pending user account "
    "session token region north south east west update insert delete query result value"
).split()


def _text_block() -> str:
    rng = random.Random(12)
    records = []
    length = 0
    while length < _TEXT_BLOCK:
        record = (
            f'{{"id": {rng.randrange(10**7)}, "kind": "{rng.choice(_WORDS)}", '
            f'"user": "{rng.choice(_WORDS)}-{rng.randrange(1000)}", '
            f'"tags": ["{rng.choice(_WORDS)}", "{rng.choice(_WORDS)}"], '
            f'"price": {rng.randrange(100000) / 100}, "ok": {rng.choice(("true", "false"))}}}\n'
        )
        records.append(record)
        length += len(record)
    return "".join(records)[:_TEXT_BLOCK]


def make_message(kind: str, size: int) -> str | bytes:
    if kind == "text":
        block = _text_block()
        return (block * (size // len(block) + 1))[:size]
    return random.Random(size).randbytes(size)


class Driver:
    """Counts echoes in phases: warm-up, measure (timed), drain (no new sends)."""

    WARM, MEASURE, DRAIN = 0, 1, 2

    def __init__(self, msg, mode: str, inflight: int, warmup: float, duration: float):
        self.msg = msg
        self.n = len(msg)
        self.window = 1 if mode == "pingpong" else inflight
        self.warmup = warmup
        self.duration = duration
        self.phase = self.WARM
        self.sent = 0
        self.received = 0
        self.count0 = self.count1 = 0
        self.t0 = self.t1 = 0.0
        self.checked = False

    def start(self) -> None:
        self.t_warm_end = time.perf_counter() + self.warmup

    def check(self, got) -> None:
        if not self.checked:
            if got != self.msg:
                raise AssertionError(f"echo differs: {type(got).__name__} len {len(got)}")
            self.checked = True
        elif len(got) != self.n:
            raise AssertionError(f"echo of {len(got)} units, expected {self.n}")

    def on_echo(self) -> bool:
        """Called after each echo was received and checked; True if one more should be sent."""
        self.received += 1
        if self.phase != self.DRAIN:
            now = time.perf_counter()
            if self.phase == self.WARM:
                if now >= self.t_warm_end:
                    self.phase = self.MEASURE
                    self.count0, self.t0 = self.received, now
                    self.deadline = now + self.duration
            elif now >= self.deadline:
                self.phase = self.DRAIN
                self.count1, self.t1 = self.received, now
        return self.phase != self.DRAIN

    def result(self) -> dict[str, Any]:
        count = self.count1 - self.count0
        elapsed = self.t1 - self.t0
        return {"count": count, "elapsed": elapsed, "msgs_per_s": count / elapsed if elapsed else 0}


async def drive_async(send, recv, drv: Driver, drain_timeout: float) -> None:
    """Driver for libraries with ``await send(msg)`` / ``await recv()``."""
    drv.start()
    if drv.window == 1:
        while True:
            await send(drv.msg)
            drv.sent += 1
            got = await recv()
            drv.check(got)
            if not drv.on_echo():
                return
    sem = asyncio.Semaphore(drv.window)
    stop = False

    async def sender():
        while True:
            await sem.acquire()
            if stop:
                return
            await send(drv.msg)
            drv.sent += 1

    task = asyncio.ensure_future(sender())
    try:
        while True:
            got = await recv()
            drv.check(got)
            if not drv.on_echo():
                break
            sem.release()
        stop = True
        sem.release()
        await asyncio.wait_for(task, drain_timeout)

        async def drain():
            while drv.received < drv.sent:
                drv.check(await recv())
                drv.received += 1

        await asyncio.wait_for(drain(), drain_timeout)
    finally:
        if not task.done():
            task.cancel()


class CallbackRun:
    """Driver glue for callback libraries (tcp, picows): ``send`` is synchronous."""

    paused = False
    owed = 0

    def __init__(self, drv: Driver):
        self.drv = drv
        self.done = asyncio.get_running_loop().create_future()
        self.send: Callable[[Any], None] = lambda m: None

    def send_one(self) -> None:
        # Honour the transport's flow control, as ``await send()`` does for the other clients.
        self.drv.sent += 1
        if self.paused:
            self.owed += 1
        else:
            self.send(self.drv.msg)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        while self.owed and not self.paused:
            self.owed -= 1
            self.send(self.drv.msg)

    def begin(self) -> None:
        self.drv.start()
        for _ in range(self.drv.window):
            self.send_one()

    def on_message(self, got) -> None:
        if self.done.done():
            return
        drv = self.drv
        try:
            drv.check(got)
            if drv.on_echo():
                self.send_one()
            elif drv.received >= drv.sent:
                self.done.set_result(None)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.done.set_exception(exc)

    def lost(self, exc=None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"connection lost: {exc!r}"))


def server_process(library, args) -> None:
    """Body of a ``_server`` process: serve until stdin closes or ``max_lifetime`` passes."""
    pin(args.cpu)
    raise_nofile()  # memory.py opens 1,000+ connections to these servers

    async def main():
        server, port = await library.serve(server_ssl(args.tls_dir), args.deflate)
        print(f"PORT {port} BACKEND {library.backend() or '-'}", flush=True)
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        # Exit when the parent closes our stdin (or dies), or after max_lifetime at the latest.
        try:
            loop.add_reader(sys.stdin.fileno(), lambda: stop.done() or stop.set_result(None))
        except (OSError, ValueError):  # stdin not pollable (e.g. /dev/null): lifetime only
            pass
        try:
            await asyncio.wait_for(stop, args.max_lifetime)
        except asyncio.TimeoutError:
            pass

    run_loop(main, args.loop)


def client_process(library, args) -> None:
    """Body of a ``_client`` process: one timed measurement, printed as one JSON line."""
    pin(args.cpu)
    out: dict[str, Any] = {"impl": library.name}
    try:
        msg = make_message(args.kind, args.size)
        drv = Driver(msg, args.mode, args.inflight, args.warmup, args.duration)
        timeout = args.warmup + args.duration + args.drain_timeout

        async def main():
            await library.client(
                args.port, client_ssl(args.tls_dir), drv, args.kind, timeout, args.deflate
            )

        run_loop(main, args.loop)
        out.update(drv.result())
        out["backend"] = library.backend()
    except BaseException as exc:  # noqa: BLE001 - reported to the orchestrator
        out["error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(out), flush=True)


# =============================================================================================
# The orchestrator: fresh processes per round, interleaved libraries
class Settings(NamedTuple):
    """What every measurement of a run shares."""

    cpu: int
    warmup: float
    duration: float
    drain_timeout: float
    inflight: int
    snapshot: str | None  # a private copy of asyncws for the whole run, or None


def library_env(library, snapshot: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if snapshot:
        env["PYTHONPATH"] = snapshot + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("ASYNCWS_NO_SPEEDUPS", None)
    env.update(library.env)
    return env


def measure(settings: Settings, server_lib, client_lib, cell: Cell, tls_dir) -> dict[str, Any]:
    """One round of one library in one cell: a fresh server process and client process."""
    common = ["--loop", cell.loop, "--cpu", str(settings.cpu)]
    if cell.tls:
        common += ["--tls-dir", tls_dir]
    if cell.deflate:
        common += ["--deflate"]
    budget = settings.warmup + settings.duration + settings.drain_timeout
    errfile = tempfile.TemporaryFile("w+")
    srv = subprocess.Popen(
        [sys.executable, ECHO_SCRIPT, "_server", "--impl", server_lib.name,
         "--max-lifetime", str(budget + 60)] + common,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=errfile,
        env=library_env(server_lib, settings.snapshot),
        text=True,
    )

    def server_err() -> str:
        errfile.seek(0)
        tail = errfile.read()[-600:].strip()
        return f" [server stderr: {tail}]" if tail else ""

    try:
        ready, _, _ = select.select([srv.stdout], [], [], 30)
        line = srv.stdout.readline() if ready else ""
        if not line.startswith("PORT "):
            srv.kill()
            srv.wait(5)
            return {"error": f"server did not start: {line!r}{server_err()}"}
        parts = line.split()
        port, server_backend = int(parts[1]), parts[3]
        cmd = [
            sys.executable, ECHO_SCRIPT, "_client", "--impl", client_lib.name,
            "--port", str(port), "--mode", cell.mode, "--kind", cell.kind,
            "--size", str(cell.size), "--inflight", str(settings.inflight),
            "--warmup", str(settings.warmup), "--duration", str(settings.duration),
            "--drain-timeout", str(settings.drain_timeout),
        ] + common
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=budget + 60,
                env=library_env(client_lib, settings.snapshot),
            )
        except subprocess.TimeoutExpired:
            return {"error": "client timed out (killed)" + server_err()}
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            return {
                "error": f"client printed no result; rc={proc.returncode} {proc.stderr[-800:]}"
                + server_err()
            }
        res = json.loads(lines[-1])
        if "error" in res:
            res["error"] += server_err()
        res["server_backend"] = server_backend
        if server_lib.needs_speedups and server_backend != "speedups":
            res["error"] = f"{server_lib.name} server runs without asyncws' Cython speedups"
        return res
    finally:
        stop_process(srv, 5)
        errfile.close()


def stop_process(proc: subprocess.Popen, timeout: float) -> None:
    """Close the process' stdin (a benchmark server's or idle client's signal to exit), wait
    ``timeout`` s, then kill it."""
    if proc.poll() is None:
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def keep_off_cpu(cpu: int | None) -> int:
    """Choose the measured CPU (default: the last one) and move this process off it."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    if cpu is None:
        cpu = cpus[-1]
    others = [c for c in cpus if c != cpu]
    if others:
        os.sched_setaffinity(0, set(others))
    return cpu


def run_cells(
    settings: Settings,
    cells: list[Cell],
    libraries: list,
    rounds: int,
    client_for: Callable[[Any, Cell], Any],
    verbose: bool = False,
) -> dict[str, dict[str, Any]]:
    """Measure every cell: within a cell, round after round, every library in turn (A, B, C,
    A, B, C, ...) so that the libraries compared in one table share the machine's noise.
    ``libraries`` lists, per cell, only those that can run it (``libraries_for``)."""
    tls_dir = make_tls_dir() if any(c.tls for c in cells) else None
    results: dict[str, dict[str, Any]] = {}
    total = sum(len(libraries_for(libraries, c)) for c in cells) * rounds
    done = 0
    try:
        for cell in cells:
            libs = libraries_for(libraries, cell)
            for rnd in range(rounds):
                for lib in libs:
                    client_lib = client_for(lib, cell)
                    res = measure(settings, lib, client_lib, cell, tls_dir)
                    key = cell.key(lib.name)
                    entry = results.setdefault(
                        key,
                        {**cell._asdict(), "impl": lib.name, "client": client_lib.name,
                         "rates": [], "errors": []},
                    )
                    done += 1
                    if "error" in res:
                        entry["errors"].append(res["error"])
                        print(f"# [{done}/{total}] {key} round {rnd}: ERROR {res['error']}",
                              file=sys.stderr)
                    else:
                        entry["rates"].append(res["msgs_per_s"])
                        if verbose:
                            print(f"# [{done}/{total}] {key} round {rnd}: "
                                  f"{res['msgs_per_s']:,.0f} msgs/s", file=sys.stderr)
    finally:
        if tls_dir:
            shutil.rmtree(tls_dir, ignore_errors=True)
    for entry in results.values():
        entry["median"] = statistics.median(entry["rates"]) if entry["rates"] else None
    return results


def libraries_for(libraries: list, cell: Cell) -> list:
    """The libraries that can run ``cell``: with deflate, those that negotiate it."""
    return [lib for lib in libraries if lib.deflate or not cell.deflate]


# =============================================================================================
# Results
def fmt_rate(x: float | None) -> str:
    if x is None:
        return "error"
    # Three significant digits below 100/s (16 MiB deflate echoes run at a few per second).
    return f"{x:.3g}" if x < 100 else f"{x:,.0f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    if a is None or not b:
        return "-"
    return f"{a / b:.2f}"


def print_tables(
    results: dict[str, dict[str, Any]],
    cells: list[Cell],
    libraries: list,
    ratio_to: list[str],
    title_suffix: str,
    inflight: int,
) -> None:
    """One markdown table per (loop, TLS, deflate, mode, kind), one row per size and library,
    with the ratio of each median to the median of every ``ratio_to`` library in that table."""
    tables: dict[tuple, list[Cell]] = {}
    for cell in cells:
        tables.setdefault(cell[:5], []).append(cell)
    for (loop_name, tls, deflate, mode, kind), table_cells in tables.items():
        names = [lib.name for lib in libraries_for(libraries, table_cells[0])]
        refs = [r for r in ratio_to if r in names]
        print()
        print(
            f"### {mode}, {kind}, loop={loop_name}, {'TLS' if tls else 'plain TCP'}"
            + (", permessage-deflate" if deflate else "")
            + f", {title_suffix}"
            + (f", {inflight} in flight" if mode == "pipelined" else "")
        )
        print()
        print("| size | impl | msgs/s | MB/s | " + "".join(f"vs {r} | " for r in refs)
              + "min-max msgs/s |")
        print("|---:|---|---:|---:|" + "---:|" * len(refs) + "---:|")
        for cell in table_cells:
            meds = {n: results[cell.key(n)]["median"] for n in names}
            for name in names:
                r = results[cell.key(name)]
                med = r["median"]
                mbs = f"{med * cell.size / 1e6:,.1f}" if med is not None else "-"
                rates = r["rates"]
                spread = f"{fmt_rate(min(rates))}-{fmt_rate(max(rates))}" if rates else "-"
                ratios = "".join(f"{fmt_ratio(med, meds[ref])} | " for ref in refs)
                print(f"| {cell.size} | {name} | {fmt_rate(med)} | {mbs} | {ratios}{spread} |")
    sys.stdout.flush()


def snapshot_asyncws() -> str | None:
    """Copy the importable asyncws package (with its compiled extension) to a temporary
    directory used by every server and client of this run, so that a working tree edited or
    rebuilt during a long run cannot mix versions (an editable install imports the tree)."""
    import importlib.util

    spec = importlib.util.find_spec("asyncws")
    if spec is None or not spec.submodule_search_locations:
        return None
    src = list(spec.submodule_search_locations)[0]
    dst = tempfile.mkdtemp(prefix="asyncws-bench-lib-")
    shutil.copytree(src, os.path.join(dst, "asyncws"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.c"))
    return dst


def git_describe() -> str:
    import importlib.util

    spec = importlib.util.find_spec("asyncws")
    if spec is None or not spec.submodule_search_locations:
        return ""
    src = os.path.dirname(list(spec.submodule_search_locations)[0])
    try:
        out = subprocess.run(["git", "-C", src, "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def machine_line() -> str:
    m = machine_info()
    return (
        f"machine: {m['nproc']} CPUs, {m['cpu']}, {m['implementation']} {m['python']}, "
        f"{m['platform']}"
    )


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("asyncws", "websockets", "aiohttp", "picows", "aiofastnet", "uvloop"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    rev = git_describe()
    if rev:
        out["asyncws_git"] = rev
    return out


def importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def cells_of(loops, tls_modes, deflate_modes, modes, kinds, sizes) -> list[Cell]:
    return [Cell(*c) for c in itertools.product(loops, tls_modes, deflate_modes, modes, kinds,
                                                 sizes)]
