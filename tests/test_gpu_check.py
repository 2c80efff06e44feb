"""scripts/gpu_check.py's dry run (CPU, tiny sizes): every phase's code path, so the GPU check never rots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"
PHASES = ["environment", "bench-quantizers", "bench-train", "exactness", "run-simvq-65536", "run-emavq-65536",
          "run-rfsq-fsq-22bit", "run-rfsq-layernorm-22bit", "run-speech-simvq-4096", "run-codec-paper", "plot",
          "bench-train-compile"]


def _run(out: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--dry-run", *args], env=env,
                          capture_output=True, text=True, timeout=400, check=False)
    results = json.loads((out / "results.json").read_text())
    return done, results, (out / "report.md").read_text()


FIRST = "environment,bench-quantizers,bench-train,exactness"  # two runs of the dry run: each well under a minute
SECOND = "run-simvq-65536,run-emavq-65536,run-rfsq-fsq-22bit,run-rfsq-layernorm-22bit,run-speech-simvq-4096," \
         "run-codec-paper,plot,bench-train-compile"


def _check_common(done: subprocess.CompletedProcess[str], results: dict[str, Any], report: str,
                  selected: str) -> dict[str, Any]:
    """What every dry run's output holds: the keys, every phase, each ok or skipped with its reason."""
    assert done.returncode == 0, done.stderr[-3000:]
    assert results["dry_run"] and results["complete"] and results["device"] == "CPU (dry run)"
    assert {"started_utc", "elapsed_s", "deadline_s", "data", "phases"} <= set(results)
    phases: dict[str, Any] = results["phases"]
    assert list(phases) == PHASES
    for name, phase in phases.items():
        assert phase["status"] in ("ok", "skipped"), (name, phase)
        if phase["status"] == "skipped":
            assert phase["reason"], name
        if name not in selected.split(","):
            assert phase["reason"] == "not selected (--phases)"
        assert f"| {name} | {phase['status']} |" in report
    assert "DRY RUN" in report and "complete." in report and "## Phases" in report
    return phases


def test_dry_run_environment_benchmarks_exactness(tmp_path: Path) -> None:
    phases = _check_common(*_run(tmp_path / "out", "--phases", FIRST), FIRST)
    assert {"device_name", "torch", "vqkit", "missing_modules"} <= set(phases["environment"]["info"])
    assert "simvq-paper" in phases["environment"]["presets"]
    assert "| search-65536 |" in phases["bench-quantizers"]["table"]
    assert "| rfsq_conv/fsq-4096 | eager |" in phases["bench-train"]["table"]
    exact = phases["exactness"]["result"]
    assert exact["property_holds"] is not None and exact["columns"] and exact["accumulation"] and exact["bound"]
    assert exact["search"] and all(s["identical"] for s in exact["search"]), exact["search"]
    report = (tmp_path / "out" / "report.md").read_text()
    for heading in ("## 1. Environment", "## 2. Benchmarks on CPU (dry run)", "## 3. Exact bf16 search on CPU"):
        assert heading in report, heading
    with tarfile.open(tmp_path / "out" / "details.tar.gz") as tar:
        assert {"details/bench/train-cpu.json", "details/bench/quantizers-cpu.json"} <= set(tar.getnames())


def test_dry_run_training_runs_and_plot(tmp_path: Path) -> None:
    phases = _check_common(*_run(tmp_path / "out", "--phases", SECOND), SECOND)
    codec = phases["run-codec-paper"]  # the preset exists: its code path runs, at tiny sizes
    assert codec["status"] == "ok" and codec["ended"] == "finished" and codec["val"], codec
    assert phases["bench-train-compile"]["status"] == "skipped"
    simvq = phases["run-simvq-65536"]  # no step limit in the dry run: killed and read from its log, as a GPU run
    assert simvq["ended"].endswith("(killed)") and simvq["steps_reached"] >= 1 and simvq["train"], simvq
    for name in ("run-emavq-65536", "run-rfsq-fsq-22bit", "run-rfsq-layernorm-22bit", "run-speech-simvq-4096"):
        run = phases[name]
        assert run["ended"] == "finished" and run["val"], (name, run)
    assert phases["run-speech-simvq-4096"]["val"][-1]["mel_distance"] is not None
    assert phases["run-emavq-65536"]["val"][-1]["psnr"] is not None
    assert phases["plot"]["png"] == "usage.png" and (tmp_path / "out" / "usage.png").stat().st_size > 1000
    files = sorted(p.name for p in (tmp_path / "out").rglob("*"))  # the device tool brings back 8 files at most
    assert files == ["details.tar.gz", "report.md", "results.json", "usage.png"], files
    with tarfile.open(tmp_path / "out" / "details.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"details/runs/emavq-65536/log.jsonl", "details/logs/run-simvq-65536.err"} <= names, sorted(names)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## 4. Paper-scale runs on CPU (dry run)" in report and "![codebook usage" in report


def test_a_phase_past_its_budget_is_killed_and_recorded(tmp_path: Path) -> None:
    done, results, report = _run(tmp_path / "out", "--phases", "exactness", "--budget", "exactness=1")
    assert done.returncode == 1  # a phase did not end ok
    exact = results["phases"]["exactness"]
    assert exact["status"] == "timeout" and "killed at its 1 s budget" in exact["reason"]
    assert exact["wall_s"] < 15
    assert results["phases"]["environment"] == {"status": "skipped", "budget_s": 40,
                                                "reason": "not selected (--phases)"}
    assert "| exactness | timeout |" in report and results["complete"]


def test_data_pack_copies_an_even_subset(tmp_path: Path) -> None:
    """scripts/gpu_check_data.py: the folder that travels to a device, with the names the report gives it."""
    soundfile = pytest.importorskip("soundfile")
    import numpy as np
    from PIL import Image

    src = tmp_path / "src"
    for split, n in (("train", 5), ("val", 3)):
        for cls in ("a", "b"):
            (src / "images" / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (i, 0, 0)).save(src / "images" / split / cls / f"{i}.JPEG")
    for split in ("train", "val"):
        (src / split / "speaker").mkdir(parents=True)
        for i in range(3):
            soundfile.write(src / split / "speaker" / f"u{i}.flac", np.zeros(32000, dtype=np.int16), 16000)
    out = tmp_path / "gpu_data"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check_data.py"), "--out", str(out),
                           "--images", str(src / "images"), "--speech-train", str(src / "train"), "--speech-val",
                           str(src / "val"), "--train-per-class", "2", "--val-per-class", "9", "--utterances", "2",
                           "--val-utterances", "5", "--seconds", "0.5"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["images"]["train"], manifest["images"]["val"]) == (4, 6)
    assert sorted(p.name for p in (out / "images" / "train" / "a").iterdir()) == ["0.JPEG", "2.JPEG"]
    assert (manifest["speech"]["train"], manifest["speech"]["val"]) == (2, 3)
    assert soundfile.info(out / "speech" / "train" / "u0.flac").frames == 8000
    assert manifest["speech"]["label"].startswith("LibriSpeech-subset-16k")
