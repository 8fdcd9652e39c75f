"""Grade Autobahn|Testsuite results: read wstest's ``index.json`` files and summarise them.

wstest exits 0 even when cases fail, so this module is what turns a run into a verdict. It
reads every ``index.json`` found under the given paths (``{agent: {case_id: {"behavior",
"behaviorClose", "reportfile", ...}}}``), prints per agent the counts of ``behavior`` and
``behaviorClose`` values, lists every case that is not OK together with the reason from its
per-case JSON report (``result`` / ``resultClose``), and decides pass or fail: FAILED
behaviour, a FAILED / WRONG CODE / UNCLEAN close, NON-STRICT (unless allowed) or an index
without any case is a failure. Usable as a library (``run.py`` imports it) and as a script:
``python compliance/summary.py compliance/reports [--allow-non-strict]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Every grade wstest hands out, in the order the tables show them.
GRADES = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "WRONG CODE", "UNCLEAN"]
BAD_BEHAVIOR = {"FAILED"}
BAD_CLOSE = {"FAILED", "WRONG CODE", "UNCLEAN"}


def case_key(case_id: str) -> tuple[int, ...]:
    """Sort key for case ids such as ``"9.10.2"`` (numeric, not lexical)."""
    return tuple(int(part) if part.isdigit() else 0 for part in case_id.split("."))


@dataclass
class CaseResult:
    """One graded case of one agent, with the reasons read from its report file."""

    case_id: str
    behavior: str
    behavior_close: str
    result: str = ""
    result_close: str = ""
    expectation: str = ""
    events: str = ""  # what wstest expected vs received (behavior not OK only)
    details: list[str] = field(default_factory=list)
    report: Path | None = None

    def failed(self, allow_non_strict: bool) -> bool:
        """True if this case makes the run fail."""
        if self.behavior in BAD_BEHAVIOR or self.behavior_close in BAD_CLOSE:
            return True
        if not allow_non_strict and "NON-STRICT" in (self.behavior, self.behavior_close):
            return True
        return False

    def is_ok(self) -> bool:
        return self.behavior == "OK" and self.behavior_close == "OK"


@dataclass
class AgentResult:
    """All graded cases of one agent (one wstest run against one implementation)."""

    agent: str
    index: Path
    cases: list[CaseResult] = field(default_factory=list)

    def behavior_counts(self) -> Counter:
        return Counter(c.behavior for c in self.cases)

    def close_counts(self) -> Counter:
        return Counter(c.behavior_close for c in self.cases)

    def failures(self, allow_non_strict: bool) -> list[CaseResult]:
        return [c for c in self.cases if c.failed(allow_non_strict)]

    def not_ok(self) -> list[CaseResult]:
        return [c for c in self.cases if not c.is_ok()]


def _short(obj: Any, limit: int = 60) -> Any:
    """``obj`` with every long string cut (Autobahn echoes messages of up to 16 MiB)."""
    if isinstance(obj, str) and len(obj) > limit:
        return f"{obj[:limit]}...({len(obj)} chars)"
    if isinstance(obj, list):
        more = [f"...({len(obj)} items)"] if len(obj) > 8 else []
        return [_short(x, limit) for x in obj[:8]] + more
    if isinstance(obj, dict):
        return {k: _short(v, limit) for k, v in obj.items()}
    return obj


def _read_reasons(case: CaseResult) -> None:
    """Fill ``case`` with the verdicts and what wstest expected vs observed, from its report."""
    assert case.report is not None
    try:
        data = json.loads(case.report.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        case.result = f"(could not read {case.report}: {exc})"
        return
    case.result = str(data.get("result", ""))
    case.result_close = str(data.get("resultClose", ""))
    case.expectation = str(data.get("expectation", ""))
    if case.behavior != "OK":
        expected = json.dumps(_short(data.get("expected")))
        received = json.dumps(_short(data.get("received")))
        case.events = f"expected events {expected}; received {received}"
        case.details.append(f"expectation: {case.expectation}")
        case.details.append(f"expected: {expected}")
        case.details.append(f"received: {received}")
    if case.behavior_close != "OK" or case.behavior != "OK":
        observed = {
            k: data.get(k)
            for k in (
                "localCloseCode",
                "remoteCloseCode",
                "wasClean",
                "wasNotCleanReason",
                "droppedByMe",
                "failedByMe",
                "wasCloseHandshakeTimeout",
            )
        }
        case.details.append(f"expectedClose: {json.dumps(data.get('expectedClose'))}")
        case.details.append(f"observedClose: {json.dumps(_short(observed))}")


def load_index(index: Path) -> list[AgentResult]:
    """Parse one wstest ``index.json``; reasons are read only for cases that are not OK."""
    data = json.loads(index.read_text(encoding="utf-8"))
    agents = []
    for agent, cases in sorted(data.items()):
        result = AgentResult(agent=agent, index=index)
        for case_id in sorted(cases, key=case_key):
            entry = cases[case_id]
            case = CaseResult(
                case_id=case_id,
                behavior=str(entry.get("behavior", "?")),
                behavior_close=str(entry.get("behaviorClose", "?")),
            )
            if entry.get("reportfile"):
                case.report = index.parent / entry["reportfile"]
            if not case.is_ok() and case.report is not None:
                _read_reasons(case)
            result.cases.append(case)
        agents.append(result)
    return agents


def find_indexes(paths: Iterable[Path]) -> list[Path]:
    """Expand directories to every ``index.json`` below them (sorted, deduplicated)."""
    found = set()
    for path in paths:
        if path.is_dir():
            found.update(p.resolve() for p in path.rglob("index.json"))
        elif path.exists():
            found.add(path.resolve())
    return sorted(found)


def _counts_text(counts: Counter) -> str:
    keys = [g for g in GRADES if counts.get(g)] + sorted(k for k in counts if k not in GRADES)
    return ", ".join(f"{k} {counts[k]}" for k in keys) or "(none)"


def report(agents: list[AgentResult], allow_non_strict: bool = False, out=None) -> bool:
    """Print the summary of ``agents``; return True when the whole set passes."""
    out = out or sys.stdout
    ok = True
    if not agents or not any(a.cases for a in agents):
        print("FAIL: no graded cases found (a run that ran nothing does not pass)", file=out)
        return False
    for agent in agents:
        failures = agent.failures(allow_non_strict)
        verdict = "PASS" if failures == [] and agent.cases else "FAIL"
        ok = ok and verdict == "PASS"
        print(f"== {agent.agent}: {len(agent.cases)} cases, {verdict}  ({agent.index})", file=out)
        print(f"   behavior:      {_counts_text(agent.behavior_counts())}", file=out)
        print(f"   behaviorClose: {_counts_text(agent.close_counts())}", file=out)
        if not agent.cases:
            print("   no cases in this index", file=out)
        for case in agent.not_ok():
            mark = "FAIL" if case.failed(allow_non_strict) else "note"
            print(
                f"   [{mark}] {case.case_id}: behavior={case.behavior} "
                f"behaviorClose={case.behavior_close}",
                file=out,
            )
            if case.result:
                print(f"          result:      {case.result}", file=out)
            if case.result_close:
                print(f"          resultClose: {case.result_close}", file=out)
            for line in case.details:
                print(f"          {line}", file=out)
    print("OVERALL: " + ("PASS" if ok else "FAIL"), file=out)
    return ok


def markdown_table(agents: list[AgentResult]) -> str:
    """The counts per agent as a Markdown table (used for docs/conformance.md)."""
    lines = [
        "| agent | cases | " + " | ".join(GRADES[:5]) + " | close OK | close other |",
        "|---|---:|" + "---:|" * 5 + "---:|---|",
    ]
    for agent in agents:
        b = agent.behavior_counts()
        c = agent.close_counts()
        other = ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k != "OK") or "-"
        cells = [str(b.get(g, 0)) for g in GRADES[:5]]
        lines.append(
            f"| {agent.agent} | {len(agent.cases)} | "
            + " | ".join(cells)
            + f" | {c.get('OK', 0)} | {other} |"
        )
    return "\n".join(lines)


def not_ok_markdown(agents: list[AgentResult], allow_non_strict: bool = False) -> str:
    """Every case that is not OK (grouped over agents) with its report's reason, as Markdown."""
    by_case: dict[str, list[tuple[str, CaseResult]]] = {}
    for agent in agents:
        for case in agent.not_ok():
            by_case.setdefault(case.case_id, []).append((agent.agent, case))
    if not by_case:
        return "None: every case is OK for every agent."
    lines = [
        "| case | behavior / close | fails the run | agents | wstest's verdict and expectation |",
        "|---|---|---|---|---|",
    ]
    for case_id in sorted(by_case, key=case_key):
        entries = by_case[case_id]
        grades = ", ".join(sorted({f"{c.behavior} / {c.behavior_close}" for _, c in entries}))
        fails = "yes" if any(c.failed(allow_non_strict) for _, c in entries) else "no"
        names = ", ".join(
            a[len("asyncws-") :] if a.startswith("asyncws-") else a for a, _ in entries
        )
        first = entries[0][1]
        parts = [first.result] + ([first.expectation] if first.expectation != first.result else [])
        if first.events:
            parts.append(f"wstest {first.events}.")
        reason = " ".join(x for x in parts if x)
        reason = reason.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {case_id} | {grades} | {fails} | {names} | {reason} |")
    return "\n".join(lines)


def load_all(paths: Iterable[Path]) -> list[AgentResult]:
    agents: list[AgentResult] = []
    for index in find_indexes(paths):
        agents.extend(load_index(index))
    return agents


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        default=[Path(__file__).resolve().parent / "reports"],
        help="index.json files or directories searched for them (default: compliance/reports)",
    )
    parser.add_argument(
        "--allow-non-strict", action="store_true", help="do not count NON-STRICT as a failure"
    )
    args = parser.parse_args(argv)
    agents = load_all(args.paths)
    return 0 if report(agents, args.allow_non_strict) else 1


if __name__ == "__main__":
    sys.exit(main())
