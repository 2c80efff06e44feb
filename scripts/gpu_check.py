#!/usr/bin/env python
"""One GPU check, prepared for the day a device is lent (issue 20): every claim vqkit makes about scale, measured.

    python scripts/gpu_check.py --out results/gpu            # one H100 or H200: at most ~9 minutes
    python scripts/gpu_check.py --out /tmp/check --dry-run   # CPU, tiny sizes, about a minute (CI)
    python scripts/gpu_check_data.py --out gpu_data          # the runs' data, small enough to travel to a device

Phases, each a child process with a time budget, killed past it and recorded as such:
1. environment (GPU, memory, torch / CUDA / cuDNN, vqkit, vqp, matmul settings, presets);
2. ``benchmarks/quantizers.py`` and ``benchmarks/train.py`` on the device, as tables;
3. the exactness property of the bf16 nearest-code search on the device, then the bf16 search against the
   float32 one at K = 65,536 and 262,144 (indices and times);
4. paper-scale training runs for fixed minutes through ``vqkit train``: simvq-paper SimVQ-65k and VQ-EMA-65k
   (usage and PSNR over time), rfsq-paper FSQ against RFSQ-LayerNorm at 22 bits, speech-paper SimVQ-4096,
   codec-paper where that preset exists; a PNG of usage over time;
5. ``report.md`` + ``results.json`` in ``--out``, rewritten atomically after every phase, so a kill at any
   moment leaves a valid report. A global deadline caps the whole: a phase gets what is left of it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_check_child import kill_running, python, run_child
from gpu_check_report import render
from gpu_check_runs import RUNS, RunData, find_data, run_training, synthetic_speech


@dataclass(frozen=True)
class Phase:
    name: str
    budget_s: float  # on the GPU
    dry_budget_s: float  # in the dry run; 0: skipped there
    optional: bool = False  # runs only if its whole budget is left before the deadline


PHASES = (Phase("environment", 20, 40), Phase("bench-quantizers", 70, 60), Phase("bench-train", 60, 60),
          Phase("exactness", 50, 60),
          *(Phase(f"run-{r.name}", {"simvq-65536": 75, "emavq-65536": 75, "speech-simvq-4096": 60}.get(r.name, 40),
                  45) for r in RUNS),
          Phase("plot", 20, 45), Phase("bench-train-compile", 60, 0, optional=True))
NAMES = tuple(p.name for p in PHASES)


@dataclass(frozen=True)
class Options:
    """What the command line chose; see ``--help``."""

    out: Path
    dry_run: bool
    phases: tuple[str, ...]
    deadline_s: float
    budgets: dict[str, float] = field(default_factory=dict)
    images: Path | None = None
    speech_train: Path | None = None
    speech_val: Path | None = None
    image_batch: int = 64
    workers: int = 8
    work: Path | None = None

    @property
    def device(self) -> str:
        return "cpu" if self.dry_run else "cuda"


class StopRequestError(Exception):
    """SIGTERM / SIGINT / SIGHUP: stop the running phase, write the report, exit."""


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _stop(signum: int, frame: FrameType | None) -> None:
    raise StopRequestError(signal.Signals(signum).name)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Check:
    """The supervisor: runs the phases in order under the deadline and rewrites the report after each."""

    def __init__(self, opts: Options, work: Path) -> None:
        self.opts, self.work, self.start = opts, work, time.monotonic()
        # the device tool brings back at most 8 files from --out: the details travel as one archive
        self.keep = work / "details"
        self.logs, self.bench = self.keep / "logs", self.keep / "bench"
        self.presets: list[str] | None = None
        self.gpu_missing: str | None = None
        self.device_label = "CPU (dry run)" if opts.dry_run else "GPU (environment not read yet)"
        self.data: RunData = synthetic_speech(work / "speech") if opts.dry_run else \
            find_data(opts.images, opts.speech_train, opts.speech_val)
        self.data_dict = {"images": self.data.images, "speech_train": self.data.speech_train,
                          "speech_val": self.data.speech_val, "images_label": self.data.images_label,
                          "speech_label": self.data.speech_label}
        self.phases: dict[str, dict[str, Any]] = {p.name: {"status": "pending", "budget_s": self.budget(p)}
                                                  for p in PHASES}
        self.started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    def budget(self, phase: Phase) -> float:
        return self.opts.budgets.get(phase.name, phase.dry_budget_s if self.opts.dry_run else phase.budget_s)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def write(self, complete: bool = False) -> None:
        data = {"tool": "scripts/gpu_check.py", "schema": 1, "dry_run": self.opts.dry_run, "device": self.device_label,
                "started_utc": self.started, "elapsed_s": round(self.elapsed(), 1), "deadline_s": self.opts.deadline_s,
                "complete": complete, "data": self.data_dict, "phases": self.phases}
        write_atomic(self.opts.out / "results.json", json.dumps(data, indent=2, default=str) + "\n")
        write_atomic(self.opts.out / "report.md", render(data))
        if self.keep.is_dir():
            tmp = self.opts.out / ".details.tar.gz.tmp"
            with tarfile.open(tmp, "w:gz") as tar:
                tar.add(self.keep, arcname="details")
            os.replace(tmp, self.opts.out / "details.tar.gz")

    def run(self) -> int:
        code = 0
        for phase in PHASES:
            record = self.phases[phase.name]
            budget = min(self.budget(phase), self.opts.deadline_s - self.elapsed() - 3)
            if phase.name not in self.opts.phases:
                record.update(status="skipped", reason="not selected (--phases)")
            elif self.budget(phase) <= 0:
                record.update(status="skipped", reason="not in the dry run (minutes of torch.compile on a CPU)")
            elif self.gpu_missing and phase.name != "environment":
                record.update(status="skipped", reason=self.gpu_missing)
            elif budget < min(5.0, self.budget(phase)) or (phase.optional and budget < self.budget(phase)):
                record.update(status="skipped", reason=f"global deadline: {budget:.0f} s left of "
                              f"{self.opts.deadline_s:.0f} s, the phase needs {self.budget(phase):.0f} s")
            else:
                record.update(status="running", budget_s=round(budget, 1))
                self.write()
                start = time.monotonic()
                try:
                    record.update(PHASE_FUNCTIONS[phase.name](self, budget))
                except StopRequestError as stop:
                    for sig in STOP_SIGNALS:  # a second signal must not cut the last report short
                        signal.signal(sig, signal.SIG_IGN)
                    record.update(status="interrupted", reason=f"{stop} received", wall_s=time.monotonic() - start)
                    kill_running()
                    for other in self.phases.values():
                        if other["status"] == "pending":
                            other.update(status="skipped", reason=f"not reached: {stop} received")
                    self.write()
                    return 1
                except Exception as err:  # a bug in one phase must not cost the others
                    record.update(status="failed", reason=f"supervisor error: {type(err).__name__}: {err}")
                record["wall_s"] = round(time.monotonic() - start, 1)
                code |= record["status"] not in ("ok", "skipped")
            self.write()
        self.write(complete=True)
        return code


# -- phases ---------------------------------------------------------------------------------------------
def environment(check: Check, budget: float) -> dict[str, Any]:
    out = check.work / "env.json"
    child = run_child([python(), "scripts/gpu_check_torch.py", "env", "--device", check.opts.device, "--out",
                       str(out)], budget * 0.6, check.logs, "environment")
    info = json.loads(out.read_text()) if out.is_file() else {}  # written in two steps: the torch part first
    check.presets = info.get("presets")
    if check.presets is None:
        cli_presets(check, budget * 0.35)
    if not child.ok:
        return {"status": "timeout" if child.killed else "failed", "presets": check.presets, "info": info,
                "reason": "environment child: " + " | ".join(child.stderr.strip().splitlines()[-3:])}
    if not check.opts.dry_run:
        check.device_label = f"{info.get('device_name', '?')} ({info.get('memory_gib', '?')} GiB)"
        if not info.get("cuda_available"):
            check.gpu_missing = "no CUDA device (environment phase): run with --dry-run on a CPU"
            return {"status": "failed", "reason": check.gpu_missing, "info": info, "presets": check.presets}
    return {"status": "ok", "info": info, "presets": check.presets}


def cli_presets(check: Check, budget: float = 60.0) -> list[str] | None:
    """The presets ``vqkit train --help`` lists (the environment phase reads them; this is its fallback)."""
    if check.presets is None:
        helped = run_child([python(), "-m", "vqkit.cli", "train", "--help"], budget, check.logs, "train-help")
        if found := re.search(r"--preset \{([^}]*)\}", helped.stdout):
            check.presets = found.group(1).split(",")
    return check.presets


def _benchmark(check: Check, budget: float, name: str, cmd: list[str]) -> dict[str, Any]:
    child = run_child([python(), *cmd], budget, check.logs, name)
    result: dict[str, Any] = {"command": " ".join(cmd), "ended": "finished" if child.ok else
                              "time budget (killed)" if child.killed else f"exit code {child.returncode}"}
    if "vector-quantize-pytorch is not importable" in child.stderr:
        result["note"] = "vector-quantize-pytorch is not installed: vqkit rows only (pip install -e '.[bench]')"
    result["progress"] = re.findall(r"^running (\S+) \.\.\.$|^(\S+): [\d.]+ s$", child.stderr, re.M)
    result["progress"] = [a or b for a, b in result["progress"]]
    if child.ok:
        result.update(status="ok", table=child.stdout.strip())
    else:
        tail = " | ".join(child.stderr.strip().splitlines()[-3:])
        result.update(status="timeout" if child.killed else "failed",
                      reason=f"killed at its {budget:.0f} s budget" if child.killed else tail)
    return result


def bench_quantizers(check: Check, budget: float) -> dict[str, Any]:
    cmd = ["benchmarks/quantizers.py", "--device", check.opts.device, "--out", str(check.bench)]
    if check.opts.dry_run:
        cmd += ["--tokens", "256", "--repeats", "1", "--warmup", "0", "--threads", "1",
                "--configs", "fsq,simvq-4096,search-65536"]
    return _benchmark(check, budget, "bench-quantizers", cmd)


def bench_train(check: Check, budget: float, compile_mode: bool = False) -> dict[str, Any]:
    suffix = "-compile" if compile_mode else ""
    cmd = ["benchmarks/train.py", "--device", check.opts.device,
           "--json", str(check.bench / f"train-{check.opts.device}{suffix}.json")]
    if compile_mode:
        cmd += ["--modes", "compile", "--only", "vqgan/simvq-65536", "--compile-timeout", f"{max(10, budget - 25):.0f}"]
    if check.opts.dry_run:
        cmd += ["--quick", "--threads", "1", "--only", "rfsq_conv/fsq"]
    check.bench.mkdir(parents=True, exist_ok=True)
    return _benchmark(check, budget, f"bench-train{suffix}", cmd)


def exactness(check: Check, budget: float) -> dict[str, Any]:
    out = check.work / "exact.json"
    cmd = [python(), "scripts/gpu_check_torch.py", "exact", "--device", check.opts.device, "--out", str(out),
           "--budget", f"{budget:.0f}", *(["--small"] if check.opts.dry_run else [])]
    child = run_child(cmd, budget, check.logs, "exactness")
    result: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    holds = result.get("property_holds")
    same = [s["identical"] for s in result.get("search", [])]
    speedups = [s["bf16_speedup"] for s in result.get("search", [])]
    justified = bool(holds and same and all(same) and min(speedups) > 1.0)
    verdict = ("property not reached" if holds is None else
               f"property {'HOLDS' if holds else 'FAILS'} on the search's shapes; "
               + (f"bf16 search gave the float32 indices in {sum(same)} of {len(same)} cases, speed-up "
                  + ", ".join(f"{x:.2f}x" for x in speedups) if same else "search not compared")
               + f"; enabling it on this device is {'JUSTIFIED' if justified else 'not justified'} by these numbers")
    status = "ok" if child.ok else "timeout" if child.killed else "failed"
    reason = "" if child.ok else f"killed at its {budget:.0f} s budget" if child.killed else \
        " | ".join(child.stderr.strip().splitlines()[-3:])
    return {"status": status, "reason": reason, "verdict": verdict, "enable_justified": justified, "result": result}


def _run_phase(spec_name: str) -> Callable[[Check, float], dict[str, Any]]:
    spec = next(r for r in RUNS if r.name == spec_name)

    def phase(check: Check, budget: float) -> dict[str, Any]:
        return run_training(spec, budget, check.keep, check.work, check.opts.device, check.opts.dry_run,
                            check.data, 0 if check.opts.dry_run else check.opts.workers, check.opts.image_batch,
                            cli_presets(check))

    return phase


def plot(check: Check, budget: float) -> dict[str, Any]:
    series: dict[str, dict[str, list[float]]] = {}
    for name in ("run-simvq-65536", "run-emavq-65536"):
        r = check.phases[name]
        val = [v for v in r.get("val", []) if v.get("usage") is not None]
        if not r.get("train") and not val:
            continue
        train = [t for t in r.get("train", []) if t.get("usage") is not None]
        series[name.removeprefix("run-")] = {
            "val_min": [v["minutes"] for v in val], "val_usage": [v["usage"] for v in val],
            "train_min": [t["minutes"] for t in train], "train_usage": [t["usage"] for t in train],
            "psnr_min": [v["minutes"] for v in val if v.get("psnr") is not None],
            "psnr": [v["psnr"] for v in val if v.get("psnr") is not None]}
    if not series:
        return {"status": "skipped", "reason": "no simvq / VQ-EMA run logged anything"}
    path = check.work / "series.json"
    path.write_text(json.dumps(series))
    title = f"simvq-paper model, 65,536 codes: {check.device_label}, minutes since launch"
    child = run_child([python(), "scripts/gpu_check_torch.py", "plot", "--series", str(path), "--out",
                       str(check.opts.out / "usage.png"), "--title", title], budget, check.logs, "plot")
    if not child.ok:
        return {"status": "timeout" if child.killed else "failed",
                "reason": " | ".join(child.stderr.strip().splitlines()[-3:])}
    return {"status": "ok", "png": "usage.png"}


PHASE_FUNCTIONS: dict[str, Callable[[Check, float], dict[str, Any]]] = {
    "environment": environment, "bench-quantizers": bench_quantizers, "bench-train": bench_train,
    "exactness": exactness, **{f"run-{r.name}": _run_phase(r.name) for r in RUNS}, "plot": plot,
    "bench-train-compile": lambda check, budget: bench_train(check, budget, compile_mode=True),
}


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True,
                   help="output folder: report.md, results.json, usage.png, details.tar.gz (logs, runs' logs, bench)")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: every phase's code path in about a minute")
    p.add_argument("--phases", default="all", help=f"comma list of: {', '.join(NAMES)} (default: all)")
    p.add_argument("--deadline", type=float, default=None,
                   help="seconds for the whole check (default: 525 on a GPU, 600 in the dry run)")
    p.add_argument("--budget", action="append", default=[], metavar="PHASE=SECONDS", help="override a phase's budget")
    p.add_argument("--images", type=Path, help="image folder, ImageNet layout (default: gpu_data/images, made by "
                   "scripts/gpu_check_data.py, else ../shared/data/images/imagenette2)")
    p.add_argument("--speech-train", type=Path, help="speech training folder (default: gpu_data/speech/train, else "
                   "../shared/data/audio/librispeech-train-clean-100)")
    p.add_argument("--speech-val", type=Path, help="speech validation folder (default: gpu_data/speech/val, else "
                   "../shared/data/audio/librispeech-test-other)")
    p.add_argument("--image-batch", type=int, default=64, help="simvq-paper runs' batch (the paper's 256 may not fit)")
    p.add_argument("--workers", type=int, default=8, help="DataLoader workers of the training runs")
    p.add_argument("--work", type=Path, help="scratch folder for run directories (default: a temporary one)")
    a = p.parse_args(argv)
    phases = NAMES if a.phases == "all" else tuple(x.strip() for x in a.phases.split(",") if x.strip())
    if bad := [x for x in phases if x not in NAMES]:
        p.error(f"unknown phase(s) {bad}; choose from {', '.join(NAMES)}")
    budgets = {}
    for item in a.budget:
        name, _, seconds = item.partition("=")
        if name not in NAMES or not re.fullmatch(r"\d+(\.\d*)?", seconds):
            p.error(f"--budget {item!r}: expected PHASE=SECONDS with PHASE one of {', '.join(NAMES)}")
        budgets[name] = float(seconds)
    deadline = a.deadline if a.deadline is not None else 600.0 if a.dry_run else 525.0
    return Options(a.out, a.dry_run, phases, deadline, budgets, a.images, a.speech_train, a.speech_val,
                   a.image_batch, a.workers, a.work)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    opts.out.mkdir(parents=True, exist_ok=True)
    for sig in STOP_SIGNALS:
        signal.signal(sig, _stop)
    work = opts.work or Path(tempfile.mkdtemp(prefix="gpu_check-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        code = Check(opts, work).run()
    except StopRequestError as stop:  # between phases: the report of the last one stands
        print(f"stopped by {stop}", file=sys.stderr)
        code = 1
    finally:
        if opts.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{opts.out / 'report.md'} ({(time.monotonic() - start) / 60:.2f} min)", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
