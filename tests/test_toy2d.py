"""The SimVQ §4.2.1 toy: C frozen moves every code, VQ only some; deterministic under a seed."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from vqkit.experiments.toy2d import run_toy2d


def test_toy2d(tmp_path: Path) -> None:
    result = run_toy2d(tmp_path / "a", steps=60)
    arms = result["arms"]
    assert arms["simvq_frozen"]["codes_moved"] == 10
    assert arms["vq"]["codes_moved"] < 10
    assert "w_norm_start" in arms["simvq_both"] and "w_norm_end" in arms["simvq_frozen"]
    for name in ("toy2d_trajectories.png", "toy2d_dynamics.png"):
        with Image.open(tmp_path / "a" / name) as im:
            im.verify()
    assert json.loads((tmp_path / "a" / "toy2d.json").read_text()) == result
    assert "SimVQ: C frozen" in (tmp_path / "a" / "report.md").read_text()
    assert run_toy2d(tmp_path / "b", steps=60) == result
