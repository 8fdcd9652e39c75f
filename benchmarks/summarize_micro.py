#!/usr/bin/env python
"""Turn a pytest-benchmark JSON file into compact markdown tables with ratios.

  mkdir -p benchmarks/results/raw
  python -m pytest benchmarks/ --benchmark-only --benchmark-json=benchmarks/results/raw/micro.json
  python benchmarks/summarize_micro.py benchmarks/results/raw/micro.json \
      > benchmarks/results/micro.md

The raw dump (tens of MB) stays out of git (benchmarks/results/raw/ is ignored); the summary is
what is kept.

One table per benchmark group; each row gives the median time, the derived rate and the ratio
of its median to the asyncws speedups row of the same group (> 1 means slower than asyncws).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def fmt_time(s: float) -> str:
    for unit, mul in (("s", 1), ("ms", 1e3), ("us", 1e6), ("ns", 1e9)):
        if s * mul >= 1:
            return f"{s * mul:,.1f} {unit}"
    return f"{s * 1e9:,.2f} ns"


def rate(b) -> str:
    med = b["stats"]["median"]
    info = b.get("extra_info", {})
    if "frames" in info:
        return f"{info['frames'] / med:,.0f} frames/s"
    if "bytes" in info:
        return f"{info['bytes'] / med / 1e6:,.0f} MB/s"
    return f"{1 / med:,.0f} ops/s"


def main(path: str) -> int:
    data = json.load(open(path))
    groups = defaultdict(list)
    for b in data["benchmarks"]:
        groups[b["group"]].append(b)
    mi = data.get("machine_info", {})
    print(f"# {mi.get('cpu', {}).get('brand_raw', '')}, Python {mi.get('python_version', '')}, "
          f"{data.get('datetime', '')}")
    for group in sorted(groups, key=_group_key):
        rows = groups[group]
        ref = next((b for b in rows if "[speedups" in b["name"]), None)
        print()
        print(f"**{group}**")
        print()
        print("| benchmark | median | rate | vs asyncws speedups |")
        print("|---|---:|---:|---:|")
        for b in sorted(rows, key=lambda b: b["stats"]["median"]):
            med = b["stats"]["median"]
            ratio = f"{med / ref['stats']['median']:.2f}" if ref else "-"
            print(f"| {b['name']} | {fmt_time(med)} | {rate(b)} | {ratio} |")
    return 0


def _group_key(g: str):
    fam = g.split("-")[0]
    order = {"mask": 0, "utf8": 1, "parse": 2, "build": 3}.get(fam, 9)
    digits = "".join(c for c in g.split("-")[-1] if c.isdigit()) or "0"
    return (order, g.rsplit("-", 1)[0] if fam != "mask" else g.startswith("mask-inplace"),
            int(digits), g)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "micro.json"))
