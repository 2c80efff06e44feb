"""Phase 4 of ``scripts/gpu_check.py``: short paper-scale training runs, each killed at its time budget.

Every run goes through the CLI (``python -m vqkit.cli train --preset ...``) as a child process; its
``log.jsonl`` is read while it runs (each record stamped with the seconds since launch), so what it
logged before the kill is what the report shows: minutes, steps reached, codebook usage, PSNR (images)
or mel distance (speech). Checkpoints are switched off (the runs are never resumed) and run folders
live in a scratch directory; only their logs and configs are kept (in the details archive).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_check_child import ROOT, ChildResult, python, run_child

SHARED = ("../shared/data", "shared/data")  # beside the checkout (development machine), or inside it
_OOM = re.compile(r"out of memory|OutOfMemoryError")  # retried at half the batch
_LOADER = re.compile(r"DataLoader worker|shared memory|/dev/shm|Bus error")  # retried without workers


@dataclass(frozen=True)
class RunSpec:
    """One training run: a preset, its quantizer, overrides at GPU scale and at dry-run scale."""

    name: str
    title: str
    preset: str
    modality: str  # "images" or "speech"
    args: tuple[str, ...]
    dry_args: tuple[str, ...] = ()
    batch: int = 0  # on the GPU (0: --image-batch); halved and retried after a CUDA out-of-memory error
    dry_stop_after_val: int = 0  # dry run: killed once its log holds this many validation records (0: never)


def _q(**kwargs: Any) -> str:
    return json.dumps(kwargs, separators=(",", ":"))


_IMAGE = ("--eval-every", "100", "--log-every", "10", "--max-val-images", "256")
# the simvq-paper model runs ~5 steps/s (estimate): validate every 50; and validate the raw weights, not a
# 0.999 weight EMA that after a few hundred steps is still mostly the initial model
_VQGAN = ("--eval-every", "50", "--log-every", "10", "--max-val-images", "256", "--ema-decay", "0")
_TINY_VQGAN = ("--ch", "32", "--ch-mult", "1,1", "--num-res-blocks", "1", "--image-size", "32", "--resize", "32",
               "--batch-size", "2", "--eval-every", "2", "--log-every", "1", "--max-val-images", "4")
_TINY_CONV = ("--conv-channels", "16,16", "--image-size", "32", "--resize", "32", "--batch-size", "2",
              "--eval-every", "2", "--log-every", "1", "--max-val-images", "4", "--steps", "2")
_TINY_SPEECH = ("--arch-args", _q(channels=8, max_channels=32, backbone_dim=32, backbone_layers=1, intermediate=64,
                                  sample_rate=16000),
                "--segment", "3200", "--batch-size", "2", "--gan-weight", "0", "--fm-weight", "0", "--steps", "2",
                "--eval-every", "2", "--log-every", "1", "--max-val-images", "2")

RUNS = (
    # the dry run's simvq run has no step limit: it is killed (after a validation, or at its budget) and
    # reported from its log, like every GPU run
    RunSpec("simvq-65536", "simvq-paper, SimVQ 65,536 x 128, weight EMA off", "simvq-paper", "images",
            ("--quantizer", "simvq", "--quantizer-args", _q(dim=128, codebook_size=65536), *_VQGAN),
            (*_TINY_VQGAN, "--quantizer-args", _q(dim=8, codebook_size=256), "--steps", "1000000"),
            dry_stop_after_val=1),
    RunSpec("emavq-65536", "simvq-paper model, VQ-EMA 65,536 x 128, weight EMA off", "simvq-paper", "images",
            ("--quantizer", "emavq", "--quantizer-args", _q(dim=128, codebook_size=65536, decay=0.99, beta=0.25),
             *_VQGAN),
            (*_TINY_VQGAN, "--quantizer-args", _q(dim=8, codebook_size=256, decay=0.99, beta=0.25), "--steps", "2")),
    RunSpec("rfsq-fsq-22bit", "rfsq-paper, FSQ [8,8,8,8,8,8,4,4] (22 bits)", "rfsq-paper", "images",
            ("--quantizer", "fsq", "--quantizer-args", _q(levels=[8, 8, 8, 8, 8, 8, 4, 4]), *_IMAGE), _TINY_CONV,
            batch=128),
    RunSpec("rfsq-layernorm-22bit", "rfsq-paper, RFSQ-LayerNorm 2 x [8,8,8,4] (22 bits)", "rfsq-paper", "images",
            ("--quantizer", "rfsq", "--quantizer-args", _q(levels=[8, 8, 8, 4], num_stages=2, conditioning="layernorm"),
             *_IMAGE), _TINY_CONV, batch=128),
    RunSpec("speech-simvq-4096", "speech-paper, SimVQ 4,096 x 512", "speech-paper", "speech",
            ("--quantizer", "simvq", "--quantizer-args", _q(dim=512, codebook_size=4096), "--eval-every", "50",
             "--log-every", "10", "--max-val-images", "20"), _TINY_SPEECH, batch=40),
    RunSpec("codec-paper", "codec-paper preset (RFSQ 6 x 16 bits, fsq_conv 256/512/512, 256-px crops)", "codec-paper",
            "images", (*_IMAGE, "--prior-items", "0"),
            ("--conv-channels", "8,16,16", *_TINY_CONV[2:], "--prior-items", "0")),
)


@dataclass(frozen=True)
class RunData:
    """Data folders of the runs, None where absent (the run is then skipped, saying where it looked), and the
    names the report gives them."""

    images: str | None
    speech_train: str | None
    speech_val: str | None
    looked: str
    images_label: str = ""
    speech_label: str = ""


def find_data(images: Path | None, speech_train: Path | None, speech_val: Path | None) -> RunData:
    """The given folders, else ``gpu_data/`` (``scripts/gpu_check_data.py``: what travels to a device), else the
    shared data beside or inside the checkout."""
    pack = ROOT / "gpu_data"
    manifest = json.loads((pack / "manifest.json").read_text()) if (pack / "manifest.json").is_file() else {}

    def first(given: Path | None, packed: str, rel: str) -> str | None:
        candidates = [given] if given else [pack / packed, *(ROOT / base / rel for base in SHARED)]
        return next((str(p.resolve()) for p in candidates if p is not None and p.is_dir()), None)

    def label(kind: str, path: str | None) -> str:
        if path and path.startswith(str(pack.resolve())) and kind in manifest:
            return str(manifest[kind]["label"])
        return path or "none"

    looked = ", ".join(str(p) for p in (pack, *((ROOT / base).resolve() for base in SHARED)))
    found = RunData(first(images, "images", "images/imagenette2"),
                    first(speech_train, "speech/train", "audio/librispeech-train-clean-100"),
                    first(speech_val, "speech/val", "audio/librispeech-test-other"), looked)
    return RunData(found.images, found.speech_train, found.speech_val, looked, label("images", found.images),
                   label("speech", found.speech_train))


def synthetic_speech(folder: Path) -> RunData:
    """Dry run: a few half-second 16 kHz tones with noise, as WAV (stdlib only), train/ and val/."""
    for split, count in (("train", 6), ("val", 2)):
        (folder / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            with wave.open(str(folder / split / f"u{i}.wav"), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(16000)
                freq = 150.0 + 40 * i
                w.writeframes(b"".join(struct.pack("<h", int(6000 * math.sin(2 * math.pi * freq * t / 16000)
                                                              + 300 * math.sin(t * 0.77)))
                                       for t in range(8000)))
    return RunData("photos", str(folder / "train"), str(folder / "val"), "synthetic (dry run)",
                   "scikit-image's bundled photos", "synthetic tones (dry run)")


class LogWatcher:
    """Reads the complete lines a run has appended to its ``log.jsonl`` and stamps them with the time; asks for
    the run to be stopped once ``stop_after_val`` validation records are in (0: never)."""

    def __init__(self, path: Path, stop_after_val: int = 0) -> None:
        self.path, self.offset, self.stop_after_val = path, 0, stop_after_val
        self.records: list[dict[str, Any]] = []

    def __call__(self, seconds: float) -> bool:
        self.read(seconds)
        vals = sum(r.get("split") == "val" for r in self.records)
        return bool(self.stop_after_val) and vals >= self.stop_after_val

    def read(self, seconds: float) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1  # a torn last line waits for the next poll
        for line in data[:end].splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                record["wall_s"] = round(seconds, 1)
                self.records.append(record)
        self.offset += end


def train_command(spec: RunSpec, run_dir: Path, device: str, dry: bool, data: RunData, workers: int,
                  batch: int | None) -> list[str]:
    cmd = [python(), "-m", "vqkit.cli", "train", "--preset", spec.preset, "--out", str(run_dir), "--device", device,
           "--prior-images", "0", "--ckpt-every", "1000000000", "--workers", str(workers)]
    if spec.modality == "speech":
        cmd += ["--data", str(data.speech_train), "--val-data", str(data.speech_val)]
    else:
        cmd += ["--data", str(data.images)]
    if batch:
        cmd += ["--batch-size", str(batch)]
    return cmd + list(spec.args) + (list(spec.dry_args) if dry else [])


def missing_data(spec: RunSpec, data: RunData) -> str | None:
    if spec.modality == "speech" and not (data.speech_train and data.speech_val):
        return (f"no speech data: pass --speech-train DIR --speech-val DIR (looked for "
                f"audio/librispeech-train-clean-100 and audio/librispeech-test-other under {data.looked})")
    if spec.modality == "images" and not data.images:
        return f"no image data: pass --images DIR (looked for images/imagenette2 under {data.looked})"
    return None


def _num(record: dict[str, Any], key: str) -> float | None:
    value = record.get(key)
    return float(value) if isinstance(value, int | float) else None


def summarize(spec: RunSpec, child: ChildResult, records: list[dict[str, Any]], budget: float) -> dict[str, Any]:
    """What the run logged: steps, minutes, the curve of validation points, the last training record."""
    train = [r for r in records if r.get("split") == "train"]
    val = [r for r in records if r.get("split") == "val"]
    metric = "mel_distance" if spec.modality == "speech" else "psnr"
    points = [{"minutes": round(r["wall_s"] / 60, 2), "step": r.get("step"), "usage": _num(r, "usage"),
               "usage_ceiling": _num(r, "usage_ceiling"), "perplexity": _num(r, "perplexity"),
               metric: _num(r, metric)} for r in val]
    curve = [{"minutes": round(r["wall_s"] / 60, 2), "step": r.get("step"), "usage": _num(r, "usage"),
              "perplexity": _num(r, "perplexity"), "loss": _num(r, "loss")} for r in train]
    ended = "finished" if child.returncode == 0 and not child.killed else \
        "stopped after its first validation, dry run (killed)" if child.stopped else \
        "time budget (killed)" if child.killed else f"exit code {child.returncode}"
    out: dict[str, Any] = {"title": spec.title, "preset": spec.preset, "ended": ended, "metric": metric,
                           "steps_reached": max((int(r.get("step", 0)) for r in train), default=0),
                           "train_minutes": round((_num(train[-1], "elapsed_s") or 0) / 60, 2) if train else 0.0,
                           "val": points, "train": curve, "last_train": train[-1] if train else None}
    if child.returncode != 0 and not child.killed:  # a crash, whatever it logged before (which stays reported)
        out.update(status="failed", reason=f"{ended}: " + " | ".join(child.stderr.strip().splitlines()[-3:]),
                   stderr_tail=child.stderr[-3000:])
    elif train:
        out["status"] = "ok"
    else:
        out.update(status="timeout", reason=f"no training record within the {budget:.0f} s budget")
    return out


def run_training(spec: RunSpec, budget: float, keep: Path, work: Path, device: str, dry: bool, data: RunData,
                 workers: int, image_batch: int, presets: list[str] | None) -> dict[str, Any]:
    """One run, killed at ``budget`` seconds; its log, config and summary copied to ``keep/runs/<name>/``."""
    if presets is not None and spec.preset not in presets:
        return {"status": "skipped", "title": spec.title,
                "reason": f"no {spec.preset} preset in `vqkit train --help` (presets: {', '.join(presets)})"}
    if reason := missing_data(spec, data):
        return {"status": "skipped", "title": spec.title, "reason": reason}
    run_dir = work / "runs" / spec.name
    batch = None if dry or spec.preset == "codec-paper" else spec.batch or image_batch
    start, retries = time.monotonic(), list[str]()
    while True:
        shutil.rmtree(run_dir, ignore_errors=True)
        cmd = train_command(spec, run_dir, device, dry, data, workers, batch)
        watcher = LogWatcher(run_dir / "log.jsonl", spec.dry_stop_after_val if dry else 0)
        left = budget - (time.monotonic() - start)
        child = run_child(cmd, left, keep / "logs", f"run-{spec.name}" + (f"-{len(retries)}" if retries else ""),
                          poll=watcher, poll_every=2.0)
        if child.killed or child.returncode == 0 or budget - (time.monotonic() - start) < 0.4 * budget:
            break
        if batch and batch > 1 and _OOM.search(child.stderr):
            retries.append(f"batch {batch}: CUDA out of memory after {child.wall_s:.0f} s; retried at {batch // 2}")
            batch //= 2
        elif workers and _LOADER.search(child.stderr):
            retries.append(f"{workers} DataLoader workers failed after {child.wall_s:.0f} s; retried with none")
            workers = 0
        else:
            break
    kept = keep / "runs" / spec.name
    kept.mkdir(parents=True, exist_ok=True)
    for name in ("log.jsonl", "config.json", "summary.json"):
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, kept / name)
    result = summarize(spec, child, watcher.records, budget)
    result.update(command=" ".join(cmd[1:]), batch=batch, workers=workers, retries=retries,
                  data=data.speech_label if spec.modality == "speech" else data.images_label)
    return result
