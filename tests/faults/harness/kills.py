"""Kill/resume: SIGKILL a tiny ``vqkit train`` run at a chosen moment, ``--resume`` it, compare with the reference.

The forced phases are the moments where a careless writer loses data (a checkpoint temp file present,
an evaluation or the final export running, nothing saved yet); random moments catch the rest. A
resumed run must end bit-identical to the uninterrupted one, with no ``*.tmp`` file left.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from vqkit.storage import TMP_PREFIX

from .process import SIGKILL, Runner, alive
from .runs import (
    KILL_STEPS,
    TINY,
    Reference,
    checkpoint_step,
    compare_to_reference,
    last_record,
    tmp_files,
    train_argv,
    train_records,
)

FORCED = ("checkpoint-write", "evaluation", "final-export", "before-first-checkpoint")


@dataclass(frozen=True)
class KillPlan:
    """Where to kill: a forced phase, or ``time`` = ``fraction`` of the reference run's duration (the
    reference run by the same runner: a subprocess's includes interpreter start) after the start."""

    phase: str
    fraction: float = 0.0
    runner: str = "server"

    @property
    def label(self) -> str:
        at = f" at {self.fraction:.0%} of the run" if self.phase == "time" else ""
        how = " (python -m vqkit.cli process)" if self.runner == "subprocess" else ""
        return f"{self.phase}{at}{how}"


def kill_plans(n: int, seed: int = 0, real_processes: int = 0) -> list[KillPlan]:
    """``n`` kills: half in forced phases (checkpoint write, evaluation, final export, before the
    first checkpoint, in turn), half at random moments; the first ``real_processes`` random ones
    kill a ``python -m vqkit.cli`` process instead of a fork-server child. Up to 5 kills: one each
    of checkpoint-write, evaluation, final-export, a random moment, before the first checkpoint."""
    rng = random.Random(seed)
    if n <= 5:
        phases = [*FORCED[:3], "time", FORCED[3]][:n]
    else:
        phases = [FORCED[i % len(FORCED)] for i in range(n // 2)] + ["time"] * (n - n // 2)
    plans, real = [], real_processes
    for phase in phases:
        runner = "server"
        if phase == "time" and real > 0:
            runner, real = "subprocess", real - 1
        plans.append(KillPlan(phase, round(rng.uniform(0.02, 0.97), 3) if phase == "time" else 0.0, runner))
    return plans


@dataclass
class KillResult:
    plan: KillPlan
    landed: str
    problems: list[str]
    seconds: float
    run: Path
    attempts: int = 1
    resume_command: str = ""
    resume_excerpt: str = ""

    @property
    def survived(self) -> bool:
        return not self.problems


def _writing_checkpoint(run: Path) -> bool:
    try:
        return any(n.startswith(f"{TMP_PREFIX}checkpoint") for n in os.listdir(run))
    except FileNotFoundError:
        return False


def _evaluating(run: Path, steps: int) -> bool:
    """The last logged training step is one that an evaluation follows."""
    last = last_record(run)
    if not (last and last.get("split") == "train"):
        return False
    step = int(last.get("step", 0))
    return step % int(TINY["eval_every"]) == 0 or step == steps


def _in_phase(run: Path, phase: str, steps: int) -> bool:
    if phase == "checkpoint-write":
        return _writing_checkpoint(run)
    if phase == "evaluation":
        return _evaluating(run, steps)
    if phase == "final-export":
        return (run / "final").exists() and not (run / "summary.json").exists()
    if phase == "before-first-checkpoint":
        return (run / "config.json").exists() and not (run / "checkpoint.pt").exists()
    raise ValueError(phase)


def observed_phase(run: Path, steps: int) -> str:
    """Where the kill landed, from what the run left on disk."""
    if not run.exists():
        return "before the run directory existed"
    step = checkpoint_step(run)
    records = train_records(run)
    logged = records[-1]["step"] if records else 0
    at = f"logged step {logged}, checkpoint {'none' if step is None else f'at step {step}'}"
    if _writing_checkpoint(run):
        return f"checkpoint-write ({at})"
    if (run / "summary.json").exists():
        return f"after-finish: summary.json written, the process not yet exited ({at})"
    if step == steps:
        return f"final-export ({at})"
    if _evaluating(run, steps):
        return f"evaluation ({at})"
    if step is None:
        return f"before-first-checkpoint ({at})"
    return f"training ({at})"


def _kill_once(runner: Runner, run: Path, plan: KillPlan, ref: Reference, steps: int) -> tuple[bool, str, str]:
    """Start a run into ``run`` and SIGKILL it as ``plan`` says: (killed?, landed phase, note)."""
    shutil.rmtree(run, ignore_errors=True)
    handle = runner.start(train_argv(run, steps))
    start = time.monotonic()
    deadline = start + 300
    if plan.phase == "time":
        at = start + plan.fraction * ref.seconds
        while alive(handle.pid) and time.monotonic() < at:
            time.sleep(min(0.002, max(0.0, at - time.monotonic())))
    else:
        while alive(handle.pid) and not _in_phase(run, plan.phase, steps) and time.monotonic() < deadline:
            pass  # busy: a checkpoint write lasts a few milliseconds
    handle.kill()
    first = handle.wait(120)
    if first.rc != -SIGKILL:
        return False, "", f"the kill missed: the run ended first (exit {first.rc}) {first.excerpt(3)}"
    landed = observed_phase(run, steps)
    if isinstance(checkpoint_step(run), str):
        return True, landed, f"checkpoint.pt left unreadable by the kill: {checkpoint_step(run)}"
    return True, landed, ""


def run_kill_trial(runners: dict[str, Runner], workdir: Path, plan: KillPlan, ref: Reference, index: int,
                   steps: int = KILL_STEPS, attempts: int = 4) -> KillResult:
    """Kill a tiny run as ``plan`` says, resume it, compare it with ``ref``. A forced phase is retried
    (new run) until the kill lands in it; a random moment is redrawn earlier if the run ended first."""
    runner = runners[plan.runner]
    run = Path(workdir) / f"kill-{index:02d}-{plan.phase}"
    began = time.monotonic()
    landed, note, tries, current = "", "", 0, plan
    for tries in range(1, attempts + 1):  # noqa: B007
        killed, landed, note = _kill_once(runner, run, current, ref, steps)
        if not killed:
            if current.phase == "time":
                current = dataclasses.replace(current, fraction=current.fraction * 0.7)
            continue
        if current.phase == "time" or landed.startswith(current.phase):
            break
    else:
        if not landed:
            return KillResult(plan, "never killed", [note], time.monotonic() - began, run, tries)
    problems = [note] if note else []
    resumed = runner.run(train_argv(run, steps, resume=True), timeout=300)
    if resumed.rc != 0:
        problems.append(f"resume failed: exit {resumed.rc}: {resumed.excerpt(4)}")
    else:
        problems += compare_to_reference(run, ref)
    stray = tmp_files(run)
    if stray:
        problems.append(f"stray temporary files after the resumed run finished: {stray}")
    if plan.phase != "time" and not landed.startswith(plan.phase):
        landed += f" [aimed at {plan.phase}]"
    return KillResult(plan, landed, problems, time.monotonic() - began, run, tries, resumed.command,
                      resumed.excerpt(3))
