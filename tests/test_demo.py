"""The README's main job: the demo fits quantizers to real photo patches and writes its table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vqkit.cli import main
from vqkit.experiments.demo import METHODS, DemoConfig, run_demo


def test_demo_trains_and_reports_every_selected_method() -> None:
    cfg = DemoConfig(steps=30, batch=256, methods="fsq,simvq,rfsq-layernorm")
    results = run_demo(cfg)
    assert [r.method for r in results] == [METHODS[k][0] for k in ("fsq", "simvq", "rfsq-layernorm")]
    for r in results:
        assert r.bits_per_token == pytest.approx(12.0)
        assert r.bits_per_pixel == pytest.approx(12.0 / 16)
        assert 0 < r.usage <= 1 and r.perplexity >= 1
        assert 12 < r.psnr < 60, r  # trained: far better than the ~8 dB of a constant guess


def test_demo_cli_writes_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--steps", "3", "--batch", "64", "--methods", "lfq,rvq", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "demo.md").read_text()
    assert "LFQ 12 bits" in table and "ResidualVQ 2x64" in table
    record = json.loads((tmp_path / "demo.json").read_text())
    assert [r["method"] for r in record["results"]] == ["LFQ 12 bits", "ResidualVQ 2x64"]
    assert main(["demo", "--methods", "bogus"]) == 2
    assert "unknown method" in capsys.readouterr().err


def test_cli_help_comes_from_the_config_docstrings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Weight EMA used for evaluation and the final model" in text
    assert "(default: 0.0)" in text
