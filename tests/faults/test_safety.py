"""Ordinary command sequences never lose a user's file: decode into the input folder, encode over a .vqt,
--overwrite through a link to an input, -o naming a file, two inputs onto one target, foreign hidden files
beside the outputs, a prior refit (old files still decode), forged non-finite side information."""

from __future__ import annotations

from pathlib import Path

from .harness import CliServer
from .harness.safety import run_safety


def test_no_scenario_loses_data(cli_server: CliServer, tmp_path: Path) -> None:
    results = run_safety(cli_server, tmp_path)
    assert len(results) == 8
    bad = [f"{r.name}: lost {r.lost}; {r.problems}" for r in results if not r.ok]
    assert not bad, "\n".join(bad)
