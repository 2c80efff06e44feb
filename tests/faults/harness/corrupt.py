"""Damaging a file and checking that what reads it refuses it as documented (or that it could not tell).

Damage that no reader can detect by design (JPEG and PCM have no checksum; a lost trailing newline)
counts as *undetectable* only when the file was accepted and the kind's ``benign`` check proves the
reason on the actual bytes; everything else accepted is a failure.
"""

from __future__ import annotations

import random
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checks import API_ACCEPTED, api_problems, refusal_problems
from .corpus import Corpus
from .process import Outcome, Runner


@dataclass(frozen=True)
class Damage:
    """A byte flip (every bit of one byte) or a truncation, at a position named relative to the size."""

    how: str  # "flip" | "truncate"
    where: str  # flip: "magic", "header", "middle", "end", "at-0.37"; truncate: "0", "1", "half", "minus-1"

    def offset(self, size: int) -> int:
        named = {"magic": 2, "header": 20, "middle": size // 2, "end": size - 1, "0": 0, "1": 1, "half": size // 2,
                 "minus-1": size - 1}
        at = named[self.where] if self.where in named else int(float(self.where[3:]) * size)
        return max(0, min(at, size - (1 if self.how == "flip" else 0)))

    def apply(self, data: bytes) -> bytes:
        at = self.offset(len(data))
        if self.how == "truncate":
            return data[:at]
        return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]

    @property
    def label(self) -> str:
        if self.how == "truncate":
            return {"0": "truncated to 0 bytes", "1": "truncated to 1 byte", "half": "truncated to half",
                    "minus-1": "last byte cut"}[self.where]
        return f"byte flipped ({self.where})"

    @property
    def slug(self) -> str:
        return f"{self.how}-{self.where}"


QUICK_DAMAGES = (Damage("flip", "magic"), Damage("flip", "middle"), Damage("flip", "end"),
                 Damage("truncate", "0"), Damage("truncate", "half"))
FULL_DAMAGES = (Damage("flip", "magic"), Damage("flip", "header"), Damage("flip", "middle"), Damage("flip", "end"),
                Damage("truncate", "0"), Damage("truncate", "1"), Damage("truncate", "half"),
                Damage("truncate", "minus-1"))


def damages(full: bool = True, random_flips: int = 0, seed: int = 0) -> list[Damage]:
    rng = random.Random(seed)
    extra = [Damage("flip", f"at-{rng.uniform(0.03, 0.97):.3f}") for _ in range(random_flips)]
    return [*(FULL_DAMAGES if full else QUICK_DAMAGES), *extra]


@dataclass
class Case:
    """One file to damage (a copy of the corpus's), the command line that reads it, its Python reader."""

    target: Path
    argv: list[str]  # empty: no command reads this file
    api: Callable[[], Any] | None


Check = Callable[[bytes, bytes, Damage], str | None]


def _never(original: bytes, damaged: bytes, damage: Damage) -> str | None:
    return None


@dataclass(frozen=True)
class Kind:
    """A kind of file vqkit reads: how to set up a case, the command that reads it, its exit codes."""

    name: str
    reader: str
    codes: tuple[int, ...]
    prepare: Callable[[Corpus, Path], Case]
    benign: Check = _never
    """For an accepted damaged file: why no reader could have told (None: it could have)."""
    needs: str = ""
    detectable: Check = _never
    """For an accepted damaged file: how a reader could have told (shown with the failure)."""

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


@dataclass
class CaseResult:
    kind: Kind
    damage: Damage
    status: str  # "refused" | "undetectable" | "FAILED"
    problems: list[str]
    reason: str = ""
    command: str = ""
    excerpt: str = ""
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.kind.name}, {self.damage.label}"


def _read(runner: Runner, case: Case, folder: Path) -> Outcome:
    """The command that reads ``case`` (an API-only file: a stand-in that accepted it)."""
    return runner.run(case.argv, timeout=300, cwd=folder) if case.argv else Outcome([], 0, "", "", 0.0)


def run_corrupt_case(runner: Runner, corpus: Corpus, kind: Kind, damage: Damage, workdir: Path) -> CaseResult:
    began = time.monotonic()
    folder = Path(workdir) / f"{kind.slug}--{damage.slug}"
    shutil.rmtree(folder, ignore_errors=True)
    case = kind.prepare(corpus, folder)
    original = case.target.read_bytes()
    damaged = damage.apply(original)
    case.target.write_bytes(damaged)
    out = _read(runner, case, folder)
    cli = refusal_problems(out, case.target, kind.codes) if case.argv else []
    cli_accepted = out.rc == 0 and not out.timed_out
    api, _ = api_problems(case.api) if case.api is not None else ([], None)
    result = CaseResult(kind, damage, "refused", [], command=out.command if case.argv else kind.reader,
                        excerpt=out.excerpt(3), seconds=time.monotonic() - began)
    if not cli and not api:
        return result
    accepted = cli_accepted and (case.api is None or api == [API_ACCEPTED])
    reason = kind.benign(original, damaged, damage) if accepted else None
    if reason:
        result.status, result.reason = "undetectable", reason
        return result
    result.status = "FAILED"
    if kind.name == "checkpoint.pt" and out.rc == 0:
        cli = ["resumed silently from the damaged checkpoint (exit 0)", *cli[1:]]
    result.problems = [f"CLI: {p}" for p in cli] + [p if p.startswith("API") else f"API: {p}" for p in api]
    note = kind.detectable(original, damaged, damage) if accepted else None
    if note:
        result.problems.append(note)
    return result


def intact_problem(runner: Runner, corpus: Corpus, kind: Kind, folder: Path) -> str | None:
    """Why the INTACT file of ``kind`` is not accepted (None: it is), or a refusal of it would mean nothing."""
    case = kind.prepare(corpus, folder)
    out = _read(runner, case, folder)
    api, _ = api_problems(case.api) if case.api is not None else ([API_ACCEPTED], None)
    if out.rc != 0 or api != [API_ACCEPTED]:
        return f"{kind.name}: the INTACT file is not accepted: `{out.command}` exit {out.rc}: {out.excerpt(3)} {api}"
    return None
