"""`vqkit compare`: a tiny sweep writes every row and plot; a killed sweep resumes; mixed settings are refused."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from vqkit.experiments.compare import CompareConfig, run_compare, slug
from vqkit.experiments.presets import PRESETS

ROOT = Path(__file__).resolve().parents[1]
ONLY = "fsq-8-8-8-8,rfsq-2x-8-8-layernorm"
PLOTS = ("curves.png", "psnr.png", "usage.png", "rate_distortion.png", "best_reconstructions.png")


def test_presets_count_bits_honestly() -> None:
    from vqkit.models.registry import build_quantizer

    bits = {e.name: build_quantizer(e.quantizer, e.args).bits_per_token for e in PRESETS["rfsq-table1"].entries}
    assert bits["FSQ"] == bits["LFQ"] == pytest.approx(12.0)
    assert bits["RFSQ-2x2048-LayerNorm"] == pytest.approx(22.0)  # the paper's "12-bit" runs
    assert bits["RFSQ-4x1024-None"] == pytest.approx(40.0)
    equal = {e.name: build_quantizer(e.quantizer, e.args).bits_per_token for e in PRESETS["rfsq-equal-bits"].entries}
    assert {round(b) for b in equal.values()} == {12, 22}


def test_every_preset_entry_builds_and_the_simvq_sweep_covers_tables_3_and_4() -> None:
    from vqkit.models.registry import build_quantizer

    built = {(p.name, e.name): build_quantizer(e.quantizer, e.args) for p in PRESETS.values() for e in p.entries}
    sweep = {e: q for (p, e), q in built.items() if p == "simvq-codebook-sweep"}
    assert [round(q.bits_per_token) for q in sweep.values()] == [10, 13, 16, 18, 16, 16]
    assert sweep["SimVQ 65k trainable C"].codebook.requires_grad
    assert sweep["SimVQ 65k uniform C"].init == "uniform"


def test_tiny_sweep_writes_report_with_every_row_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = run_compare("quick", CompareConfig(out=str(tmp_path), steps=4, only=ONLY, max_val_images=8))
    printed = capsys.readouterr().out
    assert "[1/2] FSQ [8,8,8,8]\n" in printed
    assert re.search(r"\[2/2\] RFSQ 2x\[8,8\]-LayerNorm \(sweep: [\d.]+ min so far, about \d+ min left\)", printed)
    names = [c["name"] for c in results["configs"]]
    assert names == ["FSQ [8,8,8,8]", "RFSQ 2x[8,8]-LayerNorm"]
    assert all(c["steps"] == 4 for c in results["configs"])
    report = (tmp_path / "report.md").read_text()
    for c in results["configs"]:
        row = next(line for line in report.splitlines() if line.startswith(f"| {c['name']} |"))
        assert "| 12.0 |" in row
        assert c["bits_per_token"] == pytest.approx(12.0)
    for plot in PLOTS:
        with Image.open(tmp_path / plot) as im:
            assert im.size[0] > 0
    saved = (tmp_path / "results.json").read_text()
    assert json.loads(saved)["preset"] == "quick"
    assert str(tmp_path) not in saved and str(tmp_path.resolve()) not in saved  # no absolute path is stored
    for c in json.loads(saved)["configs"]:
        assert c["run_dir"] == f"runs/{slug(c['name'])}" and c["eval_dir"] == f"runs/{slug(c['name'])}/eval-val"
        assert (tmp_path / c["eval_dir"] / "metrics.json").is_file()  # relative to the report's folder
    assert "evaluation set: 8 images of photos (its val split), 32×32 px each" in report
    with pytest.raises(ValueError, match=r"other settings \(.*steps"):
        run_compare("quick", CompareConfig(out=str(tmp_path), steps=5, only=ONLY, max_val_images=8))
    with pytest.raises(ValueError, match=r"other settings \(data.max_val_items\)"):  # would reuse a stale evaluation
        run_compare("quick", CompareConfig(out=str(tmp_path), steps=4, only=ONLY, max_val_images=16))
    with pytest.raises(ValueError, match="unknown configuration"):
        run_compare("quick", CompareConfig(out=str(tmp_path), only="nope"))


def test_moved_sweep_and_old_results_with_absolute_paths_still_report(tmp_path: Path) -> None:
    """A report folder moved elsewhere still finds its runs; an old results.json with absolute paths still reads."""
    import shutil

    from vqkit.experiments.compare import load_results
    from vqkit.modalities.image.report import write_report

    first = tmp_path / "first"
    run_compare("quick", CompareConfig(out=str(first), steps=2, only="fsq-8-8-8-8", max_val_images=4))
    moved = tmp_path / "moved"
    shutil.move(first, moved)
    results = load_results(moved / "results.json")
    assert Path(results["configs"][0]["eval_dir"]) == moved / "runs" / "fsq-8-8-8-8" / "eval-val"
    assert moved / "best_reconstructions.png" in write_report(moved, results)
    old = json.loads((moved / "results.json").read_text())  # as written before paths were relative
    for c in old["configs"]:
        c["run_dir"], c["eval_dir"] = str(moved / c["run_dir"]), str(moved / c["eval_dir"])
    (moved / "results.json").write_text(json.dumps(old))
    assert Path(load_results(moved / "results.json")["configs"][0]["run_dir"]) == moved / "runs" / "fsq-8-8-8-8"
    assert tmp_path / "elsewhere" / "best_reconstructions.png" in write_report(tmp_path / "elsewhere", old)
    again = run_compare("quick", CompareConfig(out=str(moved), steps=2, only="fsq-8-8-8-8", max_val_images=4))
    assert again["configs"][0]["run_dir"] == "runs/fsq-8-8-8-8"  # resumed as finished; rewritten relative


def test_killed_sweep_resumes_with_finished_configurations_skipped(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "vqkit.cli", "compare", "quick", "--out", str(tmp_path), "--steps", "40",
           "--only", ONLY, "--max-val-images", "8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    first, second = (tmp_path / "runs" / slug(n) for n in ("FSQ [8,8,8,8]", "RFSQ 2x[8,8]-LayerNorm"))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (second / "checkpoint.pt").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (first / "eval-val" / "metrics.json").exists(), "the first configuration should have finished"
    assert (first / "eval-val" / "reconstructions.png").exists()  # metrics.json is written last
    assert not (second / "summary.json").exists(), "the sweep finished before it was killed"
    finished = {p: p.stat().st_mtime_ns for p in [first / "summary.json", first / "eval-val" / "metrics.json"]}

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming RFSQ 2x[8,8]-LayerNorm" in done.stdout
    assert "training FSQ" not in done.stdout and "resuming FSQ" not in done.stdout
    assert {p: p.stat().st_mtime_ns for p in finished} == finished, "a finished configuration was redone"
    results = json.loads((tmp_path / "results.json").read_text())
    assert [c["steps"] for c in results["configs"]] == [40, 40]
    steps = [json.loads(line)["step"] for line in (second / "log.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 40
