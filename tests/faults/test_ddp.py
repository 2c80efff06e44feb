"""A 2-rank gloo `torchrun` job: one rank SIGKILLed mid-training must fail the whole job (non-zero)
within a bound, leaving no rank behind; an uninterrupted one must end with identical ranks."""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import ddp_identical, ddp_kill

BOUND_S = 60.0


def test_killed_rank_fails_the_job_within_the_bound(tmp_path: Path) -> None:
    result = ddp_kill(tmp_path, rank=1, bound=BOUND_S)
    if not result.ok:
        pytest.fail(f"rank 1 SIGKILLed: exit {result.rc} after {result.seconds} s (bound {BOUND_S:.0f} s)\n  - "
                    + "\n  - ".join(result.problems) + f"\ntorchrun stderr:\n{result.excerpt}", pytrace=False)


def test_uninterrupted_ranks_end_identical(tmp_path: Path) -> None:
    result = ddp_identical(tmp_path)
    if not result.identical:
        pytest.fail("\n  - ".join(["two ranks, uninterrupted:", *result.problems]), pytrace=False)
