"""``vqkit compare``: train and evaluate every configuration of a preset under identical conditions.

Each configuration gets its own run directory under ``out/runs/``; all share the data, steps, seed,
model and optimiser, so only the quantizer differs. A killed sweep resumes: finished configurations
(trained and evaluated) are skipped, an interrupted one continues from its checkpoint. Running a
sweep into a folder that holds one with other settings is refused rather than mixed.

``results.json`` stores each configuration's ``run_dir`` and ``eval_dir`` relative to its own folder,
so the folder can be moved or shared; :func:`load_results` resolves them again (and reads older files
that hold absolute paths).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types as at

from ..modalities import MODALITIES, modality_of
from ..runs import evaluate_run
from ..storage import IntegrityError, atomic_write, read_json
from ..train import TrainConfig, load_config, read_run_config, train
from ..train.checkpoint import CHECKPOINT
from ..train.sections import args_to_dict
from ..validation import NonEmptyStr, NonNegativeInt, check_fields
from .presets import PRESETS, TOY_PRESET, Entry, Preset

_NOT_RESULTS = frozenset({"run.out", "data.workers", "run.log_every", "run.eval_every", "run.ckpt_every",
                          "run.device"})
"""TrainConfig fields (section.field) that do not change what a run measures; every other one must match to reuse
a run."""


@dataclass(frozen=True)
class CompareConfig:
    """Options of ``vqkit compare`` beside the preset name."""

    data: NonEmptyStr = "photos"
    """Training data: an image folder or 'photos'; for speech presets a folder of wav/flac."""
    val_data: str = ""
    """Validation folder (speech presets: required unless --data has a val/ split); empty = data's val split."""
    out: NonEmptyStr = "results/compare"
    """Folder of the report (report.md, results.json, plots) and of every configuration's run."""
    scale: Literal["cpu", "paper"] = "cpu"
    """'cpu' (minutes on 2 cores) or 'paper' (the paper's recipe, a GPU job)."""
    steps: NonNegativeInt = 0
    """Training steps of every configuration; 0 = the preset's steps at that scale."""
    seed: Annotated[int, at.Ge(0), at.Lt(2**63)] = 0
    """Seed shared by every configuration (same data order, same initialisation)."""
    only: str = ""
    """Comma-separated configuration keys to run, e.g. 'fsq-8-8-8-8,rfsq-2x-8-8-layernorm' (default: all)."""
    max_val_images: NonNegativeInt = 0
    """Validation images (utterances) per configuration; 0 = the preset's."""

    def __post_init__(self) -> None:
        check_fields(self)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def run_dir_of(out: Path, entry: Entry) -> Path:
    return out / "runs" / slug(entry.name)


def entry_config(preset: Preset, entry: Entry, cfg: CompareConfig, run_dir: Path) -> TrainConfig:
    if cfg.scale not in preset.base:
        raise ValueError(f"scale must be one of {sorted(preset.base)}, got {cfg.scale!r}")
    overrides: dict[str, Any] = dict(preset.overrides.get(cfg.scale, {}))
    overrides.update(data=cfg.data, val_data=cfg.val_data, seed=cfg.seed, out=str(run_dir),
                     quantizer=entry.quantizer, quantizer_args=entry.args)
    if cfg.steps:
        overrides.update(steps=cfg.steps, eval_every=cfg.steps, ckpt_every=max(1, cfg.steps // 4))
    if cfg.max_val_images:
        overrides["max_val_items"] = cfg.max_val_images
    return load_config(preset.base[cfg.scale], **overrides)


def _check_same_settings(run_dir: Path, train_cfg: TrainConfig) -> None:
    # a run of an older version (flat config.json) is read as this one would write it; options added since: defaults
    saved, wanted = _fields(read_run_config(run_dir / "config.json")), _fields(train_cfg)
    keys = sorted((set(saved) | set(wanted)) - _NOT_RESULTS)
    diff = [k for k in keys if saved.get(k) != wanted.get(k)]
    if diff:
        raise ValueError(f"{run_dir} holds a run with other settings ({', '.join(diff)}): choose another --out")


def _fields(cfg: TrainConfig) -> dict[str, str]:
    """``section.field`` -> the value as JSON (sorted keys), for every field of ``cfg``."""
    return {f"{section}.{name}": json.dumps(value, sort_keys=True)
            for section, fields in cfg.to_dict().items() for name, value in fields.items()}


def relative_to(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` (POSIX separators), for results.json: no absolute path is stored."""
    return Path(os.path.relpath(Path(path).resolve(), Path(folder).resolve())).as_posix()


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A sweep's ``results.json`` with each configuration's ``run_dir`` and ``eval_dir`` resolved against
    the file's folder; absolute paths (results.json written by older versions) are kept as they are."""
    from ..reporting.common import with_resolved_paths

    path = Path(path)
    results: dict[str, Any] = read_json(path)
    configs = [c for c in results.get("configs", []) if isinstance(c, dict)]
    return {**results, "configs": with_resolved_paths(path.parent, configs)}


def run_entry(preset: Preset, entry: Entry, cfg: CompareConfig, out: Path) -> dict[str, Any]:
    """Train (or resume, or skip) and evaluate one configuration; returns its results record (its paths
    relative to ``out``, the folder of results.json)."""
    run_dir = run_dir_of(out, entry)
    eval_dir = run_dir / "eval-val"
    train_cfg = entry_config(preset, entry, cfg, run_dir)
    if (run_dir / "config.json").exists():
        _check_same_settings(run_dir, train_cfg)
    if not (run_dir / "summary.json").exists():
        resume = (run_dir / CHECKPOINT).exists()
        print(f"  {'resuming' if resume else 'training'} {entry.name}", flush=True)
        train(train_cfg, resume=resume)
    if not (eval_dir / "metrics.json").exists():
        evaluate_run(run_dir, None, "val", eval_dir, batch_size=train_cfg.optim.batch_size,
                     max_items=train_cfg.data.max_val_items)
    retrain, reevaluate = f"delete {run_dir} to train this configuration again", f"delete {eval_dir} to evaluate again"
    summary = read_json(run_dir / "summary.json", retrain)
    metrics = read_json(eval_dir / "metrics.json", reevaluate)
    wanted: dict[str, type | tuple[type, ...]] = {"bits_per_token": (int, float), "train_seconds": (int, float),
                                                   "steps": int}
    if not isinstance(summary, dict) or any(not isinstance(summary.get(k), t) for k, t in wanted.items()):
        raise IntegrityError(f"{run_dir / 'summary.json'}: not what vqkit wrote; {retrain}")
    if not isinstance(metrics, dict) or not isinstance(metrics.get("metrics"), dict):
        raise IntegrityError(f"{eval_dir / 'metrics.json'}: not what vqkit wrote; {reevaluate}")
    metrics = metrics["metrics"]
    return {
        "name": entry.name, "family": entry.family, "quantizer": entry.quantizer, "quantizer_args": entry.args,
        "bits_per_token": summary["bits_per_token"], "run_dir": relative_to(run_dir, out),
        "eval_dir": relative_to(eval_dir, out), "train_seconds": summary["train_seconds"], "steps": summary["steps"],
        "metrics": metrics, "paper": entry.paper, "modality": modality_of(train_cfg.model.arch).name,
    }


def _progress(start: float, durations: list[float], remaining: int) -> str:
    """' (sweep: 12.3 min so far, about 20 min left)' once one configuration has run in this process."""
    if not durations:
        return ""
    left = sum(durations) / len(durations) * remaining
    return f" (sweep: {(time.perf_counter() - start) / 60:.1f} min so far, about {left / 60:.0f} min left)"


def run_compare(preset_name: str, cfg: CompareConfig) -> dict[str, Any]:
    """Run the sweep ``preset_name``; writes results.json, report.md and plots into ``cfg.out``."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if preset_name == TOY_PRESET:
        from .toy2d import run_toy2d

        return run_toy2d(out, steps=cfg.steps or 300, seed=cfg.seed)
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose from {sorted([*PRESETS, TOY_PRESET])}")
    preset = PRESETS[preset_name]
    keys = [n.strip() for n in cfg.only.split(",") if n.strip()]
    if cfg.scale not in preset.base:
        raise ValueError(f"scale must be one of {sorted(preset.base)}, got {cfg.scale!r}")
    rows = preset.rows(cfg.scale)
    entries = [e for e in rows if not keys or slug(e.name) in keys]
    if keys and len(entries) != len(keys):
        known = [slug(e.name) for e in rows]
        raise ValueError(f"unknown configuration(s) {sorted(set(keys) - set(known))}; {preset_name} has {known}")
    for entry in entries:  # every configuration is checked before the first one trains
        entry_config(preset, entry, cfg, run_dir_of(out, entry))
    start, records = time.perf_counter(), []
    durations: list[float] = []
    for i, entry in enumerate(entries, 1):
        print(f"[{i}/{len(entries)}] {entry.name}{_progress(start, durations, len(entries) - i + 1)}", flush=True)
        began, fresh = time.perf_counter(), not (run_dir_of(out, entry) / "summary.json").exists()
        records.append(run_entry(preset, entry, cfg, out))
        if fresh:  # configurations trained earlier (skipped, or only re-evaluated) say nothing of speed
            durations.append(time.perf_counter() - began)
    first = entry_config(preset, entries[0], cfg, out)
    results = {
        "preset": preset.name, "title": preset.title, "scale": cfg.scale, "data": cfg.data, "val_data": cfg.val_data,
        "steps": first.optim.steps, "seed": cfg.seed, **args_to_dict(first.crop),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "train_seconds_total": round(sum(r["train_seconds"] for r in records), 1), "configs": records,
    }
    results["modality"] = records[0]["modality"]
    atomic_write(out / "results.json", (json.dumps(results, indent=2) + "\n").encode())
    MODALITIES[results["modality"]].write_report(out, results)
    return results
