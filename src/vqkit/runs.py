"""What is done to a finished ``vqkit train`` run folder: evaluate its final model (``vqkit eval``,
``vqkit compare``) and fit its prior tables (``vqkit fit-prior``). Above the training layer: it reads
the run's config; the training loop never imports it.

``metrics.json`` holds the evaluation's flat metrics and, under the modality's per-item key
(``per_image``, ``per_utterance``), each item's name (its file, relative to the data folder) and scores,
in the dataset's deterministic order, rounded, null where not finite: a report uses them for exact
standard errors and paired comparisons (~50–100 bytes an item).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .data.files import split_note
from .evaluate import evaluate
from .modalities import fit_and_save_prior, modality_of, open_codec
from .reporting.evaluation import finite, item_ids, metrics_json, per_item_record
from .storage import atomic_write
from .train import TrainConfig, read_run_config
from .validation import resolve_device


def run_config(run_dir: str | os.PathLike[str]) -> TrainConfig:
    """The config of a ``vqkit train`` run; ValueError naming what is missing."""
    run = Path(run_dir)
    if not (run / "config.json").is_file():
        raise ValueError(f"{run / 'config.json'} does not exist: RUN_DIR must be a finished `vqkit train` run "
                         "(config.json, final/)")
    return read_run_config(run / "config.json")


def evaluate_run(run_dir: str | os.PathLike[str], data: str | None = None, split: str = "val",
                 out: str | os.PathLike[str] | None = None, *, batch_size: int = 32, max_items: int = 0,
                 device: str = "auto") -> dict[str, Any]:
    """Evaluate the final model of a run on ``split`` of ``data`` (default: the run's own data for that
    split), with the run's crop, seed and autocast settings so the numbers match its validation. Writes
    ``metrics.json`` (last, atomically: ``vqkit compare`` takes it as "complete") and the modality's
    pictures into ``out`` (default RUN_DIR/eval-SPLIT); returns the metrics, per-item scores included."""
    run = Path(run_dir)
    cfg = run_config(run)
    if not (run / "final").is_dir():
        raise ValueError(f"{run / 'final'} does not exist: RUN_DIR must be a finished `vqkit train` run")
    modality = modality_of(cfg.model.arch)
    data = data if data is not None else modality.eval_data(cfg, split)
    dev = resolve_device(device)
    codec, _ = open_codec(run / "final", dev)
    model = codec.model
    assert isinstance(model, torch.nn.Module)
    dataset = modality.eval_dataset(cfg, str(data), split, max_items)
    if split_note(dataset):
        print(f"vqkit eval: {split_note(dataset)}", flush=True)
    scorer = modality.scorer(model, dev, full=True)  # type: ignore[arg-type]
    result = evaluate(model, modality.eval_loader(dataset, batch_size), dev, scorer,  # type: ignore[arg-type]
                      amp_dtype=cfg.amp_dtype(dev), keep_samples=modality.keep_samples, codec=codec, progress="eval")
    target = Path(out) if out is not None else run / f"eval-{split}"
    target.mkdir(parents=True, exist_ok=True)
    modality.write_artifacts(result, model, target)  # type: ignore[arg-type]
    metrics = {**finite(result.metrics), modality.per_item_key: per_item_record(item_ids(dataset), result.per_item)}
    record = {"run": str(run), "data": str(data), **modality.eval_record(cfg, str(data), split), "metrics": metrics}
    atomic_write(target / "metrics.json", metrics_json(record))
    return metrics


def fit_run_prior(run_dir: str | os.PathLike[str], data: str, max_items: int, device: str | torch.device = "cpu",
                  progress: bool = True, learned: bool = False) -> Path:
    """Fit the prior tables of a run's (or a saved model's) final model on up to ``max_items`` training
    signals of ``data`` — split as the run split its data when ``run_dir`` is a run folder; returns the path
    of ``prior.safetensors``."""
    run = Path(run_dir)
    cfg = run_config(run) if (run / "config.json").is_file() and (run / "final").is_dir() else None
    return fit_and_save_prior(run_dir, data, max_items, device, cfg=cfg, progress=progress, learned=learned)


__all__ = ["evaluate_run", "fit_run_prior", "run_config"]
