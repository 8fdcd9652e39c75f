#!/usr/bin/env python
"""Rebuild benchmarks/README.md from README_head.md and the outputs in benchmarks/results/.

The tables are pasted verbatim from the files the benchmark scripts wrote; nothing is typed by
hand. Re-run after re-running the benchmarks (commands are in README_head.md)."""

import json
import os
import platform
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
R = os.path.join(HERE, "results")


def read(name):
    p = os.path.join(R, name)
    return open(p).read().rstrip() if os.path.exists(p) else None


# Notes to print above a section, e.g. when a run had failed rounds: none for the current runs.
NOTES: dict = {}


def main():
    out = [open(os.path.join(HERE, "README_head.md")).read().rstrip(), "", "## Latest results", ""]
    cpu = ""
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    vers = {}
    j = read("echo-asyncio-plain.json")
    if j:
        vers = json.loads(j).get("versions", {})
    out += [
        f"Machine: `nproc` = {nproc}, CPU `{cpu}` (shared, noisy: other jobs ran during these "
        f"runs, see the min-max columns), CPython {platform.python_version()}, "
        f"{platform.platform()}. Library versions: "
        + ", ".join(f"{k} {v}" for k, v in vers.items()) + ".",
        "",
    ]
    sections = [
        ("Micro benchmarks", "micro.md",
         "python -m pytest benchmarks/ --benchmark-only --benchmark-max-time=0.25 "
         "--benchmark-json=benchmarks/results/micro.json && "
         "python benchmarks/summarize_micro.py benchmarks/results/micro.json"),
        ("Memory per idle connection", "memory.md", None),
        ("Echo, asyncio, plain TCP", "echo-asyncio-plain.md", None),
        ("Echo, uvloop, plain TCP", "echo-uvloop-plain.md", None),
        ("Echo, uvloop, plain TCP, text messages", "echo-uvloop-text.md", None),
        ("Echo, uvloop, large messages, 7 rounds", "echo-uvloop-large.md", None),
        ("Echo, asyncio, TLS", "echo-asyncio-tls.md", None),
        ("Echo, server cost against one picows client", "echo-common-client-picows.md", None),
        ("Instructions per round trip (callgrind)", "instructions.md",
         "python benchmarks/instructions.py --n 5000 --size 256 --loop uvloop"),
        ("Against the targets of issue 4", "targets.md", None),
    ]
    for title, fname, cmd in sections:
        body = read(fname)
        if not body:
            continue
        out += [f"### {title}", ""]
        note = NOTES.get(fname)
        if note:
            out += [note, ""]
        if cmd:
            out += ["```sh", cmd, "```", ""]
        lines = body.splitlines()
        head = [ln for ln in lines if ln.startswith("# ")]
        rest = [ln for ln in lines if not ln.startswith("# ")]
        if head:
            out += ["```", *head, "```", ""]
        out += [ln.replace("### ", "#### ", 1) if ln.startswith("### ") else ln for ln in rest]
        out.append("")
    open(os.path.join(HERE, "README.md"), "w").write("\n".join(out).rstrip() + "\n")


if __name__ == "__main__":
    main()
