#!/usr/bin/env python
"""Rebuild benchmarks/README.md (and the table in the top-level README's "Performance" section)
from README_head.md and the outputs in benchmarks/results/.

The tables are pasted verbatim from the files the benchmark scripts wrote, or computed from
their JSON; nothing is typed by hand. Re-run after re-running the benchmarks (the commands are
in each table's header). The top-level README is touched only between its two
``perf-table`` markers.
"""

import json
import os
import platform
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
R = os.path.join(HERE, "results")
TOP_README = os.path.join(os.path.dirname(HERE), "README.md")
MATRIX = "echo-matrix.json"
PERF_BEGIN = "<!-- perf-table: written by benchmarks/make_readme.py, do not edit by hand -->"
PERF_END = "<!-- /perf-table -->"
# The libraries of the summary table, in its column order.
SUMMARY_LIBRARIES = ["asyncws", "websockets", "aiohttp", "picows", "picows.websockets", "tcp"]
SUMMARY_SIZE = 256

EARLIER = (
    "From an earlier run of the earlier scripts (asyncws at 84dc552, before issue 12); the "
    "command in its header still works with the current scripts."
)
ISSUE_12_RUN = (
    "Run on branch `bench` for issue 12, once, with short cells. asyncws itself is main's "
    "72a91fd: `asyncws_git` names the branch commit, `-dirty` because README files were being "
    "edited during the run, not asyncws/."
)
# Notes to print above a section.
NOTES = {
    "echo-matrix.md": ISSUE_12_RUN,
    "echo-deflate.md": ISSUE_12_RUN,
    "echo-uvloop-text.md": EARLIER,
    "echo-uvloop-large.md": EARLIER,
    "echo-common-client-picows.md": EARLIER,
    "memory.md": EARLIER + " picows.websockets was not measured then.",
    "instructions.md": "From asyncws at 84dc552, before issue 12.",
    "targets.md": (
        "Written for issue 4 against the tables of 84dc552 (not against the tables above); "
        "kept until the targets of issue 12 are written against the current run."
    ),
}


def read(name):
    p = os.path.join(R, name)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return f.read().rstrip()


def summary_tables(matrix):
    """Markdown tables of the 256 B cells of the main matrix: one row per loop and transport,
    one column per library, and asyncws' ratio to picows and to picows.websockets."""
    medians = {}
    for r in matrix["results"]:
        if r["size"] == SUMMARY_SIZE and r["kind"] == "binary" and not r.get("deflate"):
            medians[(r["mode"], r["loop"], r["tls"], r["impl"])] = r["median"]
    settings = matrix["settings"]
    out = []
    for mode, what in (
        ("pingpong", "ping-pong (one message in flight), round trips/s"),
        ("pipelined", f"pipelined ({settings['inflight']} in flight), messages/s"),
    ):
        libs = [x for x in SUMMARY_LIBRARIES if any(k[0] == mode and k[3] == x for k in medians)]
        names = ["TCP floor" if x == "tcp" else x for x in libs]
        out += [
            f"| {SUMMARY_SIZE} B, {what} | " + " | ".join(names)
            + " | asyncws / picows | asyncws / picows.websockets |",
            "|---|" + "---:|" * (len(libs) + 2),
        ]
        for loop in settings["loop"]:
            for tls in (False, True):
                row = [medians.get((mode, loop, tls, x)) for x in libs]
                if all(v is None for v in row):
                    continue
                mine = medians.get((mode, loop, tls, "asyncws"))
                ratios = [
                    f"{mine / ref:.2f}" if mine and ref else "-"
                    for ref in (medians.get((mode, loop, tls, "picows")),
                                medians.get((mode, loop, tls, "picows.websockets")))
                ]
                cells = [f"{v:,.0f}" if v else "error" for v in row] + ratios
                out.append(f"| {loop}, {'TLS' if tls else 'plain'} | " + " | ".join(cells) + " |")
        out.append("")
    return out


def write_top_readme(table_lines):
    """Replace what is between the perf-table markers of the top-level README."""
    with open(TOP_README) as f:
        text = f.read()
    if PERF_BEGIN not in text or PERF_END not in text:
        raise SystemExit(f"{TOP_README}: the perf-table markers are missing")
    before, rest = text.split(PERF_BEGIN, 1)
    _, after = rest.split(PERF_END, 1)
    body = "\n".join([PERF_BEGIN, *table_lines]).rstrip() + "\n" + PERF_END
    with open(TOP_README, "w") as f:
        f.write(before + body + after)


def main():
    with open(os.path.join(HERE, "README_head.md")) as f:
        out = [f.read().rstrip(), "", "## Latest results", ""]
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    matrix_text = read(MATRIX)
    matrix = json.loads(matrix_text) if matrix_text else None
    vers = matrix.get("versions", {}) if matrix else {}
    out += [
        f"Machine: `nproc` = {nproc}, CPU `{cpu}`, shared and noisy (other sessions' builds and "
        "test runs ran during these runs: see the min-max columns and the load averages in the "
        f"headers), CPython {platform.python_version()}, {platform.platform()}. Library "
        "versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()) + ".",
        "",
    ]
    summary = summary_tables(matrix) if matrix else []
    if summary:
        out += [
            "### Summary: 256 B, binary, every loop and transport",
            "",
            "Medians copied from the main matrix below (the same run: its command is in that "
            "table's header, the spread of each median in its min-max column): only ratios "
            "within a row mean anything.",
            "",
            *summary,
        ]
    sections = [
        ("Echo, main matrix: asyncio and uvloop, plain and TLS", "echo-matrix.md", None),
        ("Echo, permessage-deflate, compressible text", "echo-deflate.md", None),
        ("Micro benchmarks", "micro.md",
         "mkdir -p benchmarks/results/raw && "
         "python -m pytest benchmarks/ --benchmark-only --benchmark-max-time=0.25 "
         "--benchmark-json=benchmarks/results/raw/micro.json && "
         "python benchmarks/summarize_micro.py benchmarks/results/raw/micro.json "
         "> benchmarks/results/micro.md"),
        ("Memory per idle connection", "memory.md", None),
        ("Echo, uvloop, plain TCP, text messages", "echo-uvloop-text.md", None),
        ("Echo, uvloop, large messages, 7 rounds", "echo-uvloop-large.md", None),
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
    with open(os.path.join(HERE, "README.md"), "w") as f:
        f.write("\n".join(out).rstrip() + "\n")
    if summary:
        write_top_readme(summary)


if __name__ == "__main__":
    main()
