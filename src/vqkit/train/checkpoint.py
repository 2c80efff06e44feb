"""Resumable training checkpoints, written atomically.

A checkpoint holds the model, EMA model, optimizers, scheduler, step, elapsed time and RNG state.
It is written to a temporary file in the run directory, flushed to disk and renamed over the old
one, so a kill at any moment leaves either the previous checkpoint or the new one, never a torn
file. It is read with ``torch.load(weights_only=True)``: tensors and plain containers only, no
arbitrary objects are unpickled. The final model is also exported as safetensors + config.json
through ``Tokenizer.save_pretrained``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint.pt"
FORMAT, VERSION = "vqkit.train-checkpoint", 1
MODEL_KEYS = ("arch", "quantizer", "quantizer_args", "conv_channels", "ch", "ch_mult", "num_res_blocks", "arch_args")


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``run_dir/checkpoint.pt`` atomically (temp file + fsync + rename)."""
    path = run_dir / CHECKPOINT
    tmp = run_dir / f".{CHECKPOINT}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, "version": VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(run_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Read ``run_dir/checkpoint.pt``; ValueError if it is corrupt or from another model."""
    path = run_dir / CHECKPOINT
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch raises several types for a torn or foreign file
        why = f"{type(err).__name__}: {err}"
        raise ValueError(f"{path}: corrupt or truncated checkpoint, cannot resume ({why})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a vqkit training checkpoint")
    if state.get("version") != VERSION:
        raise ValueError(f"{path}: checkpoint version {state.get('version')}, this vqkit reads {VERSION}")
    saved = {**_ADDED_LATER, **state.get("config", {})}
    diff = {k: (saved.get(k), config.get(k)) for k in MODEL_KEYS if _norm(saved.get(k)) != _norm(config.get(k))}
    if diff:
        detail = "; ".join(f"{k}: checkpoint {a!r} vs this run {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"{path}: checkpoint of another model, cannot resume ({detail})")
    return state


_ADDED_LATER = {"arch_args": "{}"}
"""Model keys that checkpoints written before they existed lack, with the value those runs had."""


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
