"""Image scores of the one evaluation loop: L1, MSE, PSNR and SSIM per image (LPIPS and rFID with their
weights), SimVQ's batch PSNR beside them, rates in bits per pixel; and the reconstruction grid.

Everything is accumulated as sums over images and reduced once at the end, so the result is over the
whole split, not an average of batch averages — except ``batch_psnr``, which *is* SimVQ's batch-level
PSNR (MSE averaged over each batch, PSNR of that, averaged over batches), reported beside the per-image
``psnr`` only to show how far the two differ; do not compare it with other papers' PSNR. Under
``distributed`` the sums are all-reduced (a ``DistributedSampler`` pads the last shard with repeated
images, counted like the others).
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ...distributed import all_reduce_sum
from ...metrics import FID, CodeUsage, batch_psnr, l1, mse, psnr, ssim
from ...models import Tokenizer
from ..base import FileRates, Reconstruction, Scorer
from .datasets import to_uint8
from .io import write_png

NOT_REQUESTED = "not requested"
BATCH_PSNR_NOTE = ("SimVQ's evaluation: PSNR of the MSE averaged over each batch, then averaged over batches "
                   "(a known bug); for comparison only, the per-image mean is 'psnr'")
_SUMS = ("l1", "mse", "psnr", "ssim", "lpips")
HEADLINE = ("images", "psnr", "batch_psnr", "ssim", "l1", "mse", "lpips", "rfid", "usage", "perplexity",
            "bits_per_token", "bits_per_pixel", "file_bpp")


def _unavailable(option: nn.Module | str | None) -> dict[str, str] | None:
    if isinstance(option, nn.Module):
        return None
    return {"unavailable": option if option is not None else NOT_REQUESTED}


class ImageScorer(Scorer):
    """``lpips`` / ``fid``: the LPIPS network / the FID Inception network, or the reason it is unavailable
    (reported as ``{"unavailable": reason}``); None reports "not requested"."""

    def __init__(self, lpips: nn.Module | str | None = None, fid: nn.Module | str | None = None) -> None:
        self.lpips, self.fid = lpips, fid
        self.rfid = FID(fid) if isinstance(fid, nn.Module) else None
        self.sums = torch.zeros(len(_SUMS) + 3, dtype=torch.float64)  # + images, batch PSNR sum, batches
        self.psnr_per_image: list[float] = []
        self.pixels = 1

    def reconstruct(self, model: Tokenizer, batch: Tensor, device: torch.device,
                    amp_dtype: torch.dtype | None) -> Reconstruction:
        images = batch.to(device).float()
        autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
        with autocast:
            recon, out = model(images)
        shape = (images.shape[1], images.shape[2], images.shape[3])
        return Reconstruction(images, recon.float().clamp(-1, 1), out.indices, [shape] * len(images))

    def update(self, rec: Reconstruction) -> None:
        recon, images = rec.recon, rec.target
        self.pixels = images.shape[-2] * images.shape[-1]
        values = [l1(recon, images), mse(recon, images), psnr(recon, images), ssim(recon, images)]
        values.append(self.lpips(recon, images).float() if isinstance(self.lpips, nn.Module)
                      else torch.zeros(len(images)))
        for i, v in enumerate(values):
            self.sums[i] += v.double().sum().cpu()
        self.psnr_per_image += values[2].double().cpu().tolist()
        self.sums[-3] += len(images)
        self.sums[-2] += batch_psnr(recon, images).double().cpu()
        self.sums[-1] += 1
        if self.rfid is not None:
            self.rfid.update(images, recon)

    def all_reduce(self) -> None:
        self.sums = all_reduce_sum(self.sums)
        self.psnr_per_image = []
        if self.rfid is not None:
            self.rfid.all_reduce()

    def per_item(self) -> dict[str, list[float]]:
        return {"psnr": self.psnr_per_image}

    def result(self, model: Tokenizer, usage: CodeUsage, rates: FileRates | None) -> dict[str, Any]:
        """Keys: ``images``; ``l1``, ``mse`` ([-1, 1] scale), ``psnr`` (dB, per image then mean, [0, 1] scale),
        ``ssim``; ``batch_psnr`` and its note; ``lpips`` and ``rfid`` (float, or ``{"unavailable": reason}``);
        usage and perplexity (means over stages, per stage, tokens and ``usage_ceiling`` = min(1, tokens / K));
        ``bits_per_token``, ``side_bits_per_image`` (instance-LayerNorm RFSQ's side information, else 0),
        ``bits_per_pixel`` (= bits per token / f² + side bits / pixels; a pyramid: × Σ s_k² / s_K²) and, with a
        codec, ``file_bpp`` per prior (real .vqt files, header included)."""
        n = int(self.sums[-3])
        if n == 0:
            raise ValueError("evaluate: the loader gave no images")
        metrics: dict[str, Any] = {"images": n}
        for i, name in enumerate(_SUMS):
            metrics[name] = float(self.sums[i]) / n
        metrics["batch_psnr"] = float(self.sums[-2]) / float(self.sums[-1])
        metrics["batch_psnr_note"] = BATCH_PSNR_NOTE
        metrics["lpips"] = _unavailable(self.lpips) or metrics["lpips"]
        metrics["rfid"] = _unavailable(self.fid) or (self.rfid.compute() if self.rfid is not None else None)
        codes = usage.result()
        metrics.update({k: codes[k] for k in ("usage", "perplexity", "usage_per_stage", "perplexity_per_stage",
                                              "tokens", "usage_ceiling")})
        f, side = model.downsample_factor, model.quantizer.side_bits_per_sample
        scales = model.pyramid  # a pyramid has Σ s_k² tokens per s_K² latent positions
        per_position = sum(s * s for s in scales) / scales[-1] ** 2 if scales else 1
        metrics["bits_per_token"] = model.bits_per_token
        metrics["side_bits_per_image"] = side
        metrics["bits_per_pixel"] = model.bits_per_token * per_position / (f * f) + side / self.pixels
        if rates is not None:
            metrics["file_bpp"] = {prior: total / n for prior, total in rates.per_sample.items()}
        return metrics


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
