"""SIGKILL a tiny `vqkit train` run in a forced phase (checkpoint temp file present, evaluation running,
final export running) and at a random moment; `--resume` must end bit-identical to an uninterrupted
run, with the same summary and no temporary files left. The script runs 24 of these (also before the
first checkpoint, and killing real `python -m vqkit.cli` processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import CliServer, KillPlan, Reference, kill_plans, run_kill_trial

PLANS = kill_plans(4, seed=2024)


@pytest.mark.parametrize("plan", PLANS, ids=[p.phase for p in PLANS])
def test_killed_run_resumes_bit_identical(plan: KillPlan, cli_server: CliServer, reference: Reference,
                                          tmp_path: Path) -> None:
    result = run_kill_trial({"server": cli_server}, tmp_path, plan, reference, PLANS.index(plan))
    if not result.survived:
        pytest.fail(f"killed ({plan.label}) in {result.landed}, then `{result.resume_command}`:\n  - "
                    + "\n  - ".join(result.problems), pytrace=False)
