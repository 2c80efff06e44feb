"""Pixel metrics on images in [-1, 1], computed per image and then averaged.

PSNR is computed per image on the [0, 1] scale and averaged: SimVQ's evaluation code averages
the MSE over the whole batch first, which overstates PSNR when images differ in difficulty.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.shape != y.shape or x.ndim != 4:
        shapes = f"{tuple(x.shape)}, {tuple(y.shape)}"
        raise ValueError(f"expected two image batches (B, C, H, W) of one shape, got {shapes}")


def psnr(x: Tensor, y: Tensor, clamp: bool = True) -> Tensor:
    """(B,) PSNR in dB of each image pair, pixels in [-1, 1] mapped to [0, 1]; inf for identical images."""
    _check_pair(x, y)
    a, b = x.detach().float(), y.detach().float()
    if clamp:
        a, b = a.clamp(-1, 1), b.clamp(-1, 1)
    mse = ((a - b) / 2).pow(2).flatten(1).mean(dim=1)
    return 10 * torch.log10(1.0 / mse)


def batch_psnr(x: Tensor, y: Tensor) -> Tensor:
    """PSNR of the batch-averaged MSE (SimVQ's evaluation) — for comparison only, not reported."""
    _check_pair(x, y)
    mse = ((x.detach().float().clamp(-1, 1) - y.detach().float().clamp(-1, 1)) / 2).pow(2).mean()
    return 10 * torch.log10(1.0 / mse)
