"""The tiny training run every part uses: its settings and data, its log, and the reference it must match.

Tiny so that a kill/resume cycle takes seconds: about 5 ms a step on one CPU thread, a checkpoint
write ~4 ms, an evaluation ~50 ms.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .checks import short
from .process import Runner

TINY: dict[str, Any] = dict(
    image_size=32, batch_size=8, arch="rfsq_conv", conv_channels=(16, 32), quantizer="rfsq",
    quantizer_args=json.dumps(dict(levels=[8, 5, 5, 5], num_stages=2, conditioning="layernorm")),
    lr=2e-3, warmup=0.0, log_every=1, eval_every=40, ckpt_every=10, max_val_images=8, prior_images=2, device="cpu",
)
KILL_STEPS = 120
_DATA: list[Path] = []


def tiny_data() -> Path:
    """A folder with train/ (32) and val/ (8) 40x40 PNG crops of the bundled photos, made once per process
    (quicker to set up than ``--data photos``, which decodes and resizes every full photo at start)."""
    import atexit
    import tempfile

    from PIL import Image

    from vqkit.modalities.image.photos import TEST_PHOTOS, TRAIN_PHOTOS, load_photo

    if _DATA and _DATA[0].is_dir():
        return _DATA[0]
    root = Path(tempfile.mkdtemp(prefix="vqkit-faults-data-"))
    atexit.register(shutil.rmtree, root, True)
    for split, names, count in (("train", TRAIN_PHOTOS, 32), ("val", TEST_PHOTOS, 8)):
        (root / split).mkdir()
        for i in range(count):
            photo = np.round(load_photo(names[i % len(names)]) * 255).astype(np.uint8)
            rng = np.random.default_rng(i)
            y, x = int(rng.integers(0, photo.shape[0] - 40)), int(rng.integers(0, photo.shape[1] - 40))
            Image.fromarray(photo[y:y + 40, x:x + 40]).save(root / split / f"{i:02d}.png")
    _DATA[:] = [root]
    return root


def flags(settings: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for key, value in settings.items():
        args += ["--" + key.replace("_", "-"), ",".join(map(str, value)) if isinstance(value, tuple) else str(value)]
    return args


def train_argv(out: Path, steps: int = KILL_STEPS, resume: bool = False, **overrides: Any) -> list[str]:
    settings = {"data": str(tiny_data()), **TINY, **overrides, "steps": steps}
    return ["train", "--out", str(out), *flags(settings), *(["--resume"] if resume else [])]


def cli_base() -> dict[str, Any]:
    """A 1-step tiny run: what fuzzed command lines and config files are laid over."""
    return {"data": str(tiny_data()), **TINY, "steps": 1, "prior_images": 0, "max_val_images": 4,
            "eval_every": 100, "ckpt_every": 100}


def cli_config() -> dict[str, Any]:
    """:func:`cli_base` as a config file holds it (lists, not tuples)."""
    return {**cli_base(), "conv_channels": list(TINY["conv_channels"])}


def tmp_files(run: Path) -> list[str]:
    """Temporary files anywhere under ``run`` (hidden ones included; vqkit's and older ``*.tmp``), relative paths."""
    from vqkit.storage import is_temporary

    found = []
    for folder, _, files in os.walk(run):
        found += [os.path.relpath(os.path.join(folder, f), run) for f in files if is_temporary(f) or f.endswith(".tmp")]
    return sorted(found)


def _parse(lines: Sequence[str]) -> list[dict[str, Any]]:
    """The JSON objects among ``lines`` (a torn or damaged line is skipped, as vqkit's resume does)."""
    out = []
    for line in lines:
        with contextlib.suppress(json.JSONDecodeError):
            record = json.loads(line)
            if isinstance(record, dict):
                out.append(record)
    return out


def train_records(run: Path) -> list[dict[str, Any]]:
    """The complete training lines of ``run/log.jsonl``."""
    try:
        text = (run / "log.jsonl").read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [r for r in _parse(text.split("\n")[:-1]) if r.get("split") == "train"]


def last_record(run: Path) -> dict[str, Any] | None:
    """The last complete line of ``run/log.jsonl``, reading only its tail: it is polled in a busy loop."""
    try:
        with open(run / "log.jsonl", "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            tail = f.read().decode(errors="replace")
    except FileNotFoundError:
        return None
    lines = tail.split("\n")[:-1]
    found = _parse(lines[-1:])
    return found[0] if found else None


def checkpoint_step(run: Path) -> int | str | None:
    """The step of ``run/checkpoint.pt`` read by vqkit's own loader; None if there is none; a string
    saying why if it cannot be read."""
    from vqkit.train import load_config
    from vqkit.train.checkpoint import load_checkpoint

    if not (run / "checkpoint.pt").exists():
        return None
    try:
        config = load_config(None, run / "config.json").to_dict()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return int(load_checkpoint(run, config)["step"])
    except Exception as err:
        return f"unreadable ({type(err).__name__}: {str(err)[:160]})"


@dataclass
class Reference:
    """An uninterrupted run: what every resumed run must end with."""

    run: Path
    weights: dict[str, Any]
    summary: dict[str, Any]
    prior: dict[str, np.ndarray] | None
    seconds: float


def _final(run: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray] | None]:
    import safetensors.numpy
    import safetensors.torch

    weights = safetensors.torch.load_file(str(run / "final" / "model.safetensors"))
    summary = json.loads((run / "summary.json").read_text())
    prior_path = run / "final" / "prior.safetensors"
    prior = safetensors.numpy.load_file(str(prior_path)) if prior_path.exists() else None
    return weights, summary, prior


def reference_run(runner: Runner, workdir: Path, steps: int = KILL_STEPS) -> Reference:
    run = Path(workdir) / "reference"
    shutil.rmtree(run, ignore_errors=True)
    out = runner.must_succeed(train_argv(run, steps), "the uninterrupted reference run", timeout=600)
    weights, summary, prior = _final(run)
    return Reference(run, weights, summary, prior, out.seconds)


def _same_prior(a: dict[str, np.ndarray] | None, b: dict[str, np.ndarray] | None) -> bool:
    if a is None or b is None:
        return a is b
    return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def compare_to_reference(run: Path, ref: Reference) -> list[str]:
    """Why the finished ``run`` differs from ``ref`` (empty: bit-identical weights, same summary)."""
    import torch

    problems: list[str] = []
    try:
        weights, summary, prior = _final(run)
    except Exception as err:
        return [f"final model or summary unreadable after resume: {type(err).__name__}: {err}"]
    if set(weights) != set(ref.weights):
        problems.append(f"final weights have other tensors: {sorted(set(weights) ^ set(ref.weights))[:5]}")
    differ = [k for k in ref.weights if k in weights and not torch.equal(weights[k], ref.weights[k])]
    if differ:
        worst = max(float((weights[k].double() - ref.weights[k].double()).abs().max()) for k in differ)
        problems.append(f"final weights not bit-identical: {len(differ)}/{len(ref.weights)} tensors differ "
                        f"(max |diff| {worst:.3g}), e.g. {differ[:3]}")
    mine = {k: v for k, v in summary.items() if k != "train_seconds"}
    theirs = {k: v for k, v in ref.summary.items() if k != "train_seconds"}
    if mine != theirs:
        keys = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        detail = "; ".join(f"{k}: {short(mine.get(k))} vs reference {short(theirs.get(k))}" for k in keys[:3])
        problems.append(f"summary.json differs from the reference run's: {detail}")
    if not _same_prior(prior, ref.prior):
        problems.append("final/prior.safetensors tables differ from the reference run's")
    return problems
