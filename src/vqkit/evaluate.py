"""Evaluate a tokenizer on a whole split: fidelity, perceptual metrics, codebook use and rate.

One function serves ``vqkit eval`` and the training loop, so a run's validation numbers and a later
``vqkit eval`` of its final model are computed the same way. Everything is accumulated as sums over
images (and code counts over tokens) and reduced once at the end, so the result is over the whole
split, not an average of batch averages — except ``batch_psnr``, which *is* SimVQ's batch-level
PSNR (MSE averaged over each batch, PSNR of that, averaged over batches), reported beside the
per-image ``psnr`` only to show how far the two differ; do not compare it with other papers' PSNR.

With ``distributed=True`` every rank evaluates its shard and the sums and code counts are
all-reduced; every rank must then call it. A ``DistributedSampler`` pads the last shard with
repeated images, which are counted like the others (at most world size − 1 images).

``vqkit eval`` (:func:`evaluate_run`) also stores each image's PSNR, with the image's name, in
``metrics.json`` (``per_image``), so that a report can compare configurations image by image
(paired differences) and give exact standard errors. The training loop's :func:`evaluate` does not:
its metrics stay flat scalars, as every log record is.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from .compress import ImageCodec
from .data.files import split_note
from .distributed import all_reduce_sum
from .metrics import (
    FID,
    CodeUsage,
    WeightsUnavailableError,
    batch_psnr,
    l1,
    load_fid_inception,
    load_lpips,
    mse,
    psnr,
    ssim,
)
from .modalities.image.datasets import PhotoDataset, build_dataset, to_uint8
from .modalities.image.io import write_png
from .models import Tokenizer
from .plotting import pyplot, save_figure
from .storage import atomic_write
from .validation import resolve_device

NOT_REQUESTED = "not requested"
BATCH_PSNR_NOTE = ("SimVQ's evaluation: PSNR of the MSE averaged over each batch, then averaged over batches "
                   "(a known bug); for comparison only, the per-image mean is 'psnr'")
_SUMS = ("l1", "mse", "psnr", "ssim", "lpips")
PER_ITEM_DECIMALS = 4
"""Per-item scores in ``metrics.json`` are rounded to this many decimals (1e-4 dB of PSNR: far below any
difference a report can resolve), about 8 characters each: 0.4 MB of PSNR for 50,000 images, plus their
names (~40 characters each for ImageNet's ``class/file.JPEG``, 2 MB)."""


@dataclass
class Evaluation:
    """The metrics, the code counts behind usage (for histograms), the first few image pairs and
    ``psnr_per_image``: each image's PSNR (dB) in loader order — empty when ``distributed`` (each rank
    sees only its shard). It is not in ``metrics``: those stay flat, as the training loop logs them."""

    metrics: dict[str, Any]
    usage: CodeUsage
    originals: Tensor
    reconstructions: Tensor
    psnr_per_image: list[float] = field(default_factory=list)


def _unavailable(option: nn.Module | str | None) -> dict[str, str] | None:
    if isinstance(option, nn.Module):
        return None
    return {"unavailable": option if option is not None else NOT_REQUESTED}


@torch.no_grad()
def run_evaluation(model: Tokenizer, loader: Iterable[Tensor], device: torch.device | str,
                   lpips: nn.Module | str | None = None, fid: nn.Module | str | None = None, *,
                   amp_dtype: torch.dtype | None = None, distributed: bool = False,
                   keep_samples: int = 0, codec: ImageCodec | None = None) -> Evaluation:
    """Evaluate ``model`` over every batch of ``loader`` (images (B, 3, H, W) in [-1, 1]).

    ``lpips`` / ``fid``: the LPIPS network / the FID Inception network (:func:`load_lpips`,
    :func:`load_fid_inception`), or the reason it is unavailable (the ``WeightsUnavailableError``
    message), reported as ``{"unavailable": reason}``; ``None`` reports ``"not requested"``.
    ``amp_dtype`` runs the model under autocast (the metrics are always float32). ``codec`` (the
    model's :class:`ImageCodec`) adds ``file_bpp``: each image's tokens entropy coded into a real
    ``.vqt`` file with every prior the model has, header included, in bits per pixel.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    usage = CodeUsage(model.quantizer.codebook_sizes)
    rfid = FID(fid) if isinstance(fid, nn.Module) else None
    sums = torch.zeros(len(_SUMS) + 3, dtype=torch.float64)  # + images, batch PSNR sum, batches
    kept: list[tuple[Tensor, Tensor]] = []
    per_image: list[float] = []
    file_bits: dict[str, float] = {}
    pixels = 1
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    try:
        for batch in loader:
            images = batch.to(device).float()
            pixels = images.shape[-2] * images.shape[-1]
            with autocast:
                recon, out = model(images)
            recon = recon.float().clamp(-1, 1)
            values = [l1(recon, images), mse(recon, images), psnr(recon, images), ssim(recon, images)]
            values.append(lpips(recon, images).float() if isinstance(lpips, nn.Module) else torch.zeros(len(images)))
            for i, v in enumerate(values):
                sums[i] += v.double().sum().cpu()
            per_image += values[2].double().cpu().tolist()
            sums[-3] += len(images)
            sums[-2] += batch_psnr(recon, images).double().cpu()
            sums[-1] += 1
            usage.update(out.indices)
            if codec is not None:
                for prior, bpp in codec.file_rates(out.indices, images.shape[-2], images.shape[-1]).items():
                    file_bits[prior] = file_bits.get(prior, 0.0) + sum(bpp)
            if rfid is not None:
                rfid.update(images, recon)
            if sum(len(o) for o, _ in kept) < keep_samples:
                kept.append((images.cpu(), recon.cpu()))
    finally:
        model.train(was_training)
    if distributed:  # no-ops outside a process group
        sums = all_reduce_sum(sums)
        usage.all_reduce()
        if rfid is not None:
            rfid.all_reduce()
    n = int(sums[-3])
    if n == 0:
        raise ValueError("evaluate: the loader gave no images")
    metrics: dict[str, Any] = {"images": n}
    for i, name in enumerate(_SUMS):
        metrics[name] = float(sums[i]) / n
    metrics["batch_psnr"] = float(sums[-2]) / float(sums[-1])
    metrics["batch_psnr_note"] = BATCH_PSNR_NOTE
    metrics["lpips"] = _unavailable(lpips) or metrics["lpips"]
    metrics["rfid"] = _unavailable(fid) or (rfid.compute() if rfid is not None else None)
    codes = usage.result()
    metrics.update({k: codes[k] for k in ("usage", "perplexity", "usage_per_stage", "perplexity_per_stage",
                                          "tokens", "usage_ceiling")})
    f = model.downsample_factor
    side = model.quantizer.side_bits_per_sample
    metrics["bits_per_token"] = model.bits_per_token
    metrics["side_bits_per_image"] = side
    metrics["bits_per_pixel"] = model.bits_per_token / (f * f) + side / pixels
    if codec is not None:
        metrics["file_bpp"] = {prior: total / n for prior, total in file_bits.items()}
    originals = torch.cat([o for o, _ in kept])[:keep_samples] if kept else torch.empty(0, 3, 0, 0)
    recons = torch.cat([r for _, r in kept])[:keep_samples] if kept else torch.empty(0, 3, 0, 0)
    return Evaluation(metrics, usage, originals, recons, [] if distributed else per_image)


def evaluate(model: Tokenizer, loader: Iterable[Tensor], device: torch.device | str,
             lpips: nn.Module | str | None = None, fid: nn.Module | str | None = None, *,
             amp_dtype: torch.dtype | None = None, distributed: bool = False) -> dict[str, Any]:
    """The metrics of :func:`run_evaluation` as a JSON-ready dict.

    Keys: ``images``; ``l1``, ``mse`` ([-1, 1] scale), ``psnr`` (dB, per image then mean, [0, 1]
    scale), ``ssim`` (per image then mean); ``batch_psnr`` and its ``batch_psnr_note``; ``lpips``
    and ``rfid`` (float, or ``{"unavailable": reason}``); ``usage`` and ``perplexity`` (means over
    stages) with ``usage_per_stage`` and ``perplexity_per_stage``; ``tokens`` (per stage) and
    ``usage_ceiling`` (the most usage that many tokens allow: min(1, tokens / K)); ``bits_per_token`` and
    ``side_bits_per_image`` (float32 side information a decoder needs besides the indices: instance
    LayerNorm RFSQ only, else 0) and ``bits_per_pixel`` (= bits per token / f² + side bits / pixels);
    with a ``codec``, ``file_bpp`` per prior (real .vqt files; see :func:`run_evaluation`).
    """
    return run_evaluation(model, loader, device, lpips, fid, amp_dtype=amp_dtype, distributed=distributed).metrics


def save_reconstruction_grid(originals: Tensor, reconstructions: Tensor, path: str | os.PathLike[str]) -> None:
    """PNG of originals (top row) above their reconstructions (bottom row), 2-pixel white gutters."""
    if originals.shape != reconstructions.shape or originals.ndim != 4 or len(originals) == 0:
        raise ValueError(f"expected two non-empty (N, 3, H, W) batches, got {tuple(originals.shape)}, "
                         f"{tuple(reconstructions.shape)}")
    n, _, h, w = originals.shape
    gap = 2
    grid = Image.new("RGB", (n * w + (n + 1) * gap, 2 * h + 3 * gap), "white")
    for row, images in enumerate((originals, reconstructions)):
        pixels = to_uint8(images, channels_last=True).cpu().numpy()
        for i in range(n):
            grid.paste(Image.fromarray(pixels[i]), (gap + i * (w + gap), gap + row * (h + gap)))
    write_png(path, np.asarray(grid))


def save_code_usage_plot(usage: CodeUsage, path: str | os.PathLike[str]) -> None:
    """PNG, one panel per stage: each used code's count, sorted descending, log y (a flat curve = even use)."""
    plt = pyplot()

    stages = usage.num_stages
    fig, axes = plt.subplots(1, stages, figsize=(4 * stages, 3), squeeze=False)
    result = usage.result()
    for s, ax in enumerate(axes[0]):
        counts = usage.counts(s).numpy()
        if counts.size:
            ax.bar(range(counts.size), counts, width=1.0, color="tab:blue")
            ax.set_yscale("log")
        ax.set_title(f"stage {s}: {result['usage_per_stage'][s]:.1%} of {usage.codebook_sizes[s]} codes used",
                     fontsize=9)
        ax.set_xlabel("code rank")
        ax.set_ylabel("count")
    fig.tight_layout()
    save_figure(fig, path)


HEADLINE = ("images", "psnr", "batch_psnr", "ssim", "l1", "mse", "lpips", "rfid", "usage", "perplexity",
            "bits_per_token", "bits_per_pixel", "file_bpp")


def format_metrics(metrics: dict[str, Any], keys: tuple[str, ...] = HEADLINE) -> str:
    """A short two-column table of the headline numbers (``{"unavailable": ...}`` shown as such)."""
    rows = []
    for key in keys:
        value = metrics.get(key)
        if isinstance(value, dict):
            text = ("unavailable" if "unavailable" in value
                    else ", ".join(f"{k} {v:.4g}" for k, v in value.items()))
        elif isinstance(value, float):
            text = f"{value:.4g}"
        else:
            text = str(value)
        rows.append(f"{key:<16}{text}")
    return "\n".join(rows)


def rounded(values: Iterable[float], decimals: int = PER_ITEM_DECIMALS) -> list[float | None]:
    """Per-item scores for JSON: rounded to ``decimals``; NaN and ±inf (a failed item, a bit-exact
    reconstruction) become None (null), which a report leaves out."""
    return [round(float(v), decimals) if math.isfinite(v) else None for v in values]


def item_ids(dataset: Dataset[Any]) -> list[str]:
    """A name for each item of an evaluation ``dataset``, in its (deterministic) order.

    An image folder's items are named by their file, relative to the folder (posix separators); the
    bundled photos' evaluation crops by photo and crop corner (``"coffee@y16x48"``); a ``Subset`` by
    the items it keeps; any other dataset by index (``"0"``, ``"1"``, ...). An item a ``bad_files="skip"``
    dataset replaced with the next readable file keeps the name of the file it stands for.
    """
    if isinstance(dataset, Subset):
        inner = item_ids(dataset.dataset)
        return [inner[i] for i in dataset.indices]
    files, root = getattr(dataset, "files", None), getattr(dataset, "root", None)
    if isinstance(files, tuple | list) and root is not None:  # ImageFolder, AudioFolder
        return [_relative(Path(f), Path(root)) for f in files]
    if isinstance(dataset, PhotoDataset) and not dataset.crop.train:
        return [f"{dataset.names[p]}@y{top}x{left}" for p, top, left in dataset._grid]
    return [str(i) for i in range(len(dataset))]  # type: ignore[arg-type]


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def per_item_record(ids: Sequence[str], scores: Mapping[str, Sequence[float]]) -> dict[str, list[Any]]:
    """``{"ids": [...], name: [rounded score per item], ...}``, the ``per_image`` / ``per_utterance``
    entry of ``metrics.json``; a score list whose length is not that of ``ids`` is an error."""
    record: dict[str, list[Any]] = {"ids": list(ids)}
    for name, values in scores.items():
        if len(values) != len(ids):
            raise ValueError(f"{len(values)} per-item {name} scores for {len(ids)} items")
        record[name] = rounded(values)
    return record


def metrics_json(record: dict[str, Any]) -> bytes:
    """``record`` as indented JSON, except that the lists of per-item values (under ``per_image`` /
    ``per_utterance``) take one line each rather than one line per item: the file stays readable and
    small."""
    placeholders: dict[str, str] = {}

    def swap(value: Any, inside: bool) -> Any:
        if isinstance(value, dict):
            return {k: swap(v, inside or k in ("per_image", "per_utterance")) for k, v in value.items()}
        if inside and isinstance(value, list):
            key = f"@@per-item-{len(placeholders)}@@"
            placeholders[key] = json.dumps(value)
            return key
        return value

    text = json.dumps(swap(record, False), indent=2)
    for key, line in placeholders.items():
        text = text.replace(f'"{key}"', line, 1)
    return (text + "\n").encode()


def evaluate_run(run_dir: str | os.PathLike[str], data: str, split: str, out: str | os.PathLike[str], *,
                 batch_size: int = 32, max_images: int = 0, device: str = "auto") -> dict[str, Any]:
    """Evaluate the final model of a ``vqkit train`` run on ``split`` of ``data``.

    Uses the run's image size, seed, crop and autocast settings, so the numbers match its validation.
    Writes ``out/metrics.json``, ``out/reconstructions.png`` and ``out/code_usage.png``; returns
    the metrics. LPIPS and rFID are reported unavailable, with the reason, without their weights.

    Besides :func:`evaluate`'s keys, the metrics hold ``per_image``: ``{"ids": [name of each image,
    see item_ids], "psnr": [its PSNR in dB]}``, in the dataset's deterministic order (a PSNR rounded
    to :data:`PER_ITEM_DECIMALS` decimals, null if not finite). A report uses it for exact standard
    errors and paired (same-image) comparisons. Size: ~50 bytes an image, a few MB for 50,000 images
    (``vqkit compare`` copies it into results.json for each configuration).
    """
    from .train import load_config  # not at the top: the training loop imports this module

    run = Path(run_dir)
    if not (run / "final").is_dir():
        raise ValueError(f"{run / 'final'} does not exist: RUN_DIR must be a finished `vqkit train` run")
    if not (run / "config.json").is_file():
        raise ValueError(f"{run / 'config.json'} does not exist: RUN_DIR must be a `vqkit train` run")
    trained = load_config(None, run / "config.json")
    cfg = dataclasses.replace(trained, data=str(data))
    # a flat folder the run trained on is split as training split it (held-out share = val); any
    # other flat folder (a test set, the run's --val-data) is evaluated whole. A bad file stops the
    # evaluation, naming it: substituting another image would put its score under the bad one's id
    same = str(data) == "photos" or Path(data).resolve() == Path(trained.data).resolve()
    flat = "holdout" if same and not trained.val_data else "whole"
    dev = resolve_device(device)
    codec = ImageCodec.from_pretrained(run / "final", device=dev)
    model = codec.tokenizer
    dataset = build_dataset(cfg.data, split, cfg.image_size, cfg.seed, resize=cfg.crop_resize,
                            max_images=max_images or None, bad_files="fail", flat=flat)
    if max_images and len(dataset) > max_images:  # type: ignore[arg-type]  # the bundled photos
        dataset = Subset(dataset, range(max_images))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    extras: list[Any] = []
    for load in (load_lpips, load_fid_inception):
        try:
            extras.append(load(dev))
        except WeightsUnavailableError as err:
            extras.append(str(err))
    print(f"vqkit eval: {len(dataset)} {split} images of {cfg.data} at {cfg.image_size}px", flush=True)  # type: ignore[arg-type]
    if split_note(dataset):
        print(f"vqkit eval: {split_note(dataset)}", flush=True)
    result = run_evaluation(model, loader, dev, extras[0], extras[1], amp_dtype=cfg.amp_dtype(dev), keep_samples=8,
                            codec=codec)
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    metrics = {**result.metrics, "per_image": per_item_record(item_ids(dataset), {"psnr": result.psnr_per_image})}
    record = {"run": str(run), "data": cfg.data, "split": split, "image_size": cfg.image_size, "metrics": metrics}
    save_reconstruction_grid(result.originals, result.reconstructions, target / "reconstructions.png")
    save_code_usage_plot(result.usage, target / "code_usage.png")
    # last and atomically: `vqkit compare` takes metrics.json as "this evaluation is complete"
    atomic_write(target / "metrics.json", metrics_json(record))
    return metrics


__all__ = ["BATCH_PSNR_NOTE", "NOT_REQUESTED", "PER_ITEM_DECIMALS", "Evaluation", "evaluate", "evaluate_run",
           "format_metrics", "item_ids", "metrics_json", "per_item_record", "rounded", "run_evaluation",
           "save_code_usage_plot", "save_reconstruction_grid"]
