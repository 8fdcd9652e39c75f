"""Checks that the echo benchmark still works end to end: its modules import, every installed
library has both halves, and one tiny cell (plain and permessage-deflate) runs through the real
command line, with real server and client processes, and yields a measured echo rate.

These are not benchmarks (``--benchmark-only`` skips them) and assert nothing about speed: a
rate above zero only says that echoes were counted. Run them with
``python -m pytest benchmarks/test_echo_smoke.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import echo_harness
import pytest
from echo_libraries import DEFAULT_LIBRARIES, LIBRARIES


def test_every_library_has_a_server_and_a_client():
    assert "picows.websockets" in DEFAULT_LIBRARIES
    for lib in LIBRARIES.values():
        assert callable(lib.serve) and callable(lib.client), lib.name


def test_text_messages_are_ascii_of_the_asked_size():
    for size in (32, 300_000):
        msg = echo_harness.make_message("text", size)
        assert len(msg) == size and msg.isascii()


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
def test_one_tiny_cell_end_to_end(tmp_path, deflate):
    impls = [name for name in ("tcp", "asyncws", "websockets") if LIBRARIES[name].available()]
    out = tmp_path / "echo.json"
    cmd = [
        sys.executable, echo_harness.ECHO_SCRIPT, "--impl", ",".join(impls), "--sizes", "64",
        "--kind", "text", "--mode", "pingpong,pipelined", "--rounds", "1", "--duration", "0.1",
        "--warmup", "0.05", "--inflight", "4", "--drain-timeout", "10", "--json", str(out),
    ] + (["--deflate"] if deflate else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())["results"]
    ran = {(r["impl"], r["mode"]) for r in results}
    expected = {i for i in impls if LIBRARIES[i].deflate or not deflate}
    assert ran == {(i, m) for i in expected for m in ("pingpong", "pipelined")}
    for r in results:
        assert r["errors"] == [] and r["deflate"] is deflate, r
        assert r["median"] > 0, r
    assert "| 64 | asyncws |" in proc.stdout
