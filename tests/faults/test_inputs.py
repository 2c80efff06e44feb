"""Nothing a user has is lost or misread (issue 18): foreign files in an output folder survive a write (and
the debris of a killed writer does not), WAV headers that lie are refused before any allocation (or, when
valid, every frame is read), images with several frames are refused and EXIF orientation and ICC profiles
are applied. The API cases all run; the CLI runs the two that go through ``vqkit encode``. The script runs
every format, every lie and random header values."""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import CliServer, InputCase, input_cases, run_input_case

CASES = input_cases(full=False, random_wavs=8, seed=1)
CLI = ("vqkit encode -o into a folder of foreign files", "GIF of 2 frames")


@pytest.mark.parametrize("case", CASES, ids=[f"{c.group}: {c.label}" for c in CASES])
def test_inputs_and_outputs_are_faithful(case: InputCase, cli_server: CliServer, tmp_path: Path) -> None:
    result = run_input_case(case, tmp_path, cli_server if case.label in CLI else None, 0)
    assert result.lost == 0, result.problems
    if not result.ok:
        pytest.fail(f"{case.group}: {case.label} (expected {case.expect}):\n  - " + "\n  - ".join(result.problems),
                    pytrace=False)
