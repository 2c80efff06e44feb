"""What every fuzz part shares: the result record, seeded hypothesis runs, judging a CLI outcome, and
grouping failures by cause so that a report names a few bugs, not thousands of cases.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checks import indent, refusal_problems, where
from .oracle import category
from .process import Outcome, Runner


@dataclass
class FuzzResult:
    part: str
    case: str
    clean: bool
    outcome: str  # "refused" | "accepted" | what went wrong
    detail: str = ""
    expected: str = "either"
    signature: str = ""


def folder(workdir: Path) -> Path:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def given(strategy: Any, examples: int, seed: int, body: Callable[[Any], None]) -> None:
    """Call ``body`` on ``examples`` cases of ``strategy``, the same ones for the same seed (no shrinking:
    a failure is a record, not an exception)."""
    from hypothesis import HealthCheck, Phase, settings
    from hypothesis import given as hgiven
    from hypothesis import seed as hseed

    if examples < 1:
        return

    @hseed(seed)
    @settings(max_examples=examples, deadline=None, database=None, derandomize=False, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), print_blob=False)
    @hgiven(strategy)
    def run(case: Any) -> None:
        body(case)

    run()


def draw_cases(strategy: Any, examples: int, seed: int) -> list[Any]:
    """The cases :func:`given` would pass, as a list (to run them through the CLI one by one)."""
    cases: list[Any] = []
    given(strategy, examples, seed, cases.append)
    return cases


def signature(err: BaseException) -> str:
    return f"{type(err).__name__} at {where(err)}"


def control(runner: Runner, argv: list[str], workdir: Path) -> None:
    """The unfuzzed command must succeed, or every refusal of a fuzzed one would mean nothing."""
    runner.must_succeed(argv, "fault campaign: the unfuzzed control command", cwd=workdir)


def cli_fuzz_result(part: str, label: str, out: Outcome, reason: str | None, path: Path | None,
                    codes: Sequence[int] = (2,), usage: bool = True) -> FuzzResult:
    """Judge one fuzzed command: ``reason`` says why the oracle wants it refused (None: either is fine)."""
    expected = "refuse" if reason else "either"
    if out.rc == 0 and not out.timed_out:
        if reason:
            return FuzzResult(part, label, False, "accepted invalid input (exit 0)", f"{reason}; {out.command[:300]}",
                              expected, f"{part}: accepted a value that {category(reason)}")
        return FuzzResult(part, label, True, "accepted", expected=expected)
    problems = refusal_problems(out, path, codes, usage_errors=usage)
    if not problems:
        return FuzzResult(part, label, True, "refused", expected=expected)
    first = problems[0]
    sig = re.sub(r"'[^']*'|\"[^\"]*\"|\d+", "…", first)[:120]
    return FuzzResult(part, label, False, first, f"{out.command[:300]}\n{out.excerpt(3)}", expected, f"{part}: {sig}")


def fuzz_outcomes(results: Sequence[FuzzResult]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in results:
        key = "accepted" if r.outcome == "accepted" else "refused" if r.outcome == "refused" else "FAILED"
        counts[key] = counts.get(key, 0) + 1
    return counts


def failure_groups(results: Sequence[FuzzResult]) -> list[tuple[str, list[FuzzResult]]]:
    """Failures grouped by signature: (signature, its cases), most frequent first."""
    groups: dict[str, list[FuzzResult]] = {}
    for r in results:
        if not r.clean:
            groups.setdefault(r.signature or r.outcome, []).append(r)
    return sorted(groups.items(), key=lambda g: -len(g[1]))


def describe_groups(results: Sequence[FuzzResult], examples: int = 3) -> list[str]:
    """Lines describing the failure groups, with a few distinct examples each (for an accepted invalid
    value: one per field, and the list of fields)."""
    lines = []
    for sig, cases in failure_groups(results):
        lines.append(f"  - {len(cases)} x {sig}")
        accepted = cases[0].outcome.startswith("accepted invalid")
        keys: dict[str, FuzzResult] = {}
        for r in cases:
            keys.setdefault(r.detail.split(":")[0] if accepted else r.case, r)
        for r in list(keys.values())[:examples]:
            case = r.case if len(r.case) <= 110 else r.case[:107] + "..."
            lines.append(f"      e.g. {case}  -> {r.outcome}")
        if accepted and len(keys) > 1:
            lines.append(f"      fields: {', '.join(sorted(keys))}")
        if cases[0].detail and not accepted:
            lines.append(indent(cases[0].detail[:600], "      | "))
    return lines
