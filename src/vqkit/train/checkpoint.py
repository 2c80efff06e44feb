"""Resumable training checkpoints, written atomically.

A checkpoint holds the model, EMA model, optimizers, scheduler, step, elapsed time and RNG state.
It is written atomically (vqkit.storage: a kill at any moment leaves either the previous checkpoint
or the new one, never a torn file, and the next write removes the killed write's temporary file)
and sealed with its length and SHA-256, verified before anything is unpickled: a flipped byte or a
truncation is refused with a message, never loaded. It is read with ``torch.load(weights_only=True)``:
tensors and plain containers only. The final model is also exported as safetensors + config.json
through ``Tokenizer.save_pretrained``.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import torch

from ..storage import IntegrityError, atomic_write, is_sealed, seal, unseal
from .convert import convert

CHECKPOINT = "checkpoint.pt"
MAGIC = b"VQKITCKPT\x00"
FORMAT, VERSION = "vqkit.train-checkpoint", 1


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``run_dir/checkpoint.pt``: sealed with its SHA-256, atomically."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **state}, buffer)
    path = run_dir / CHECKPOINT
    atomic_write(path, seal(MAGIC, buffer.getbuffer()))
    return path


def load_checkpoint(run_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Read ``run_dir/checkpoint.pt``; ValueError if it is corrupt, truncated or from another model."""
    path = run_dir / CHECKPOINT
    data = path.read_bytes()
    if is_sealed(data, MAGIC):
        try:
            payload = unseal(data, MAGIC, str(path))
        except IntegrityError as err:
            raise IntegrityError(f"{err}; cannot resume from it") from None
    elif data[:4] == b"PK\x03\x04":  # written before checkpoints were sealed: nothing to verify against
        warnings.warn(f"{path} has no SHA-256 (written by an older vqkit): its integrity cannot be checked; "
                      "the next checkpoint of this run will have one", stacklevel=2)
        payload = memoryview(data)
    else:
        raise IntegrityError(f"{path}: not a vqkit training checkpoint, or its header is corrupt; cannot resume")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a torn or foreign file
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise IntegrityError(f"{path}: unreadable checkpoint, cannot resume ({type(err).__name__}: {first})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise IntegrityError(f"{path}: not a vqkit training checkpoint")
    if state.get("version") != VERSION:
        raise IntegrityError(f"{path}: checkpoint version {state.get('version')}, this vqkit reads {VERSION}")
    saved, wanted = _model(state.get("config", {}), f"{path}: its config"), _model(config, "this run's config")
    diff = {k: (saved[k], wanted[k]) for k in saved if saved[k] != wanted[k]}
    if diff:
        detail = "; ".join(f"{k}: checkpoint {a!r} vs this run {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"{path}: checkpoint of another model, cannot resume ({detail})")
    return state


def _model(config: dict[str, Any], where: str) -> dict[str, Any]:
    """The resolved tokenizer of a run config (nested, or the flat form of checkpoints written before configs had
    sections; options that form wrote for every arch are dropped where they do not apply)."""
    model: dict[str, Any] = convert(config, stored=True, where=where).tokenizer_config().resolved().to_dict()
    return model


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
