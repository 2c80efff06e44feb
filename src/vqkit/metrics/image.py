"""Pixel metrics on images in [-1, 1], computed per image (callers average over images).

PSNR is computed per image on the [0, 1] scale and averaged: SimVQ's evaluation code averages
the MSE over the whole batch first, which understates the mean per-image PSNR when images differ
in difficulty — -log is convex, so by Jensen 10·log10(1/mean MSE_i) ≤ mean 10·log10(1/MSE_i), with
equality only when every image has the same MSE (:func:`batch_psnr` reproduces it, for comparison
only). L1 and MSE are on the [-1, 1] scale the models train on; SSIM, like PSNR, on [0, 1].
"""

from __future__ import annotations

from typing import Any

import numpy as np
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
    """PSNR of the batch-averaged MSE (SimVQ's evaluation) — for comparison only, not reported; never above
    the mean of :func:`psnr` over the same images (Jensen), below it whenever their MSEs differ."""
    _check_pair(x, y)
    mse = ((x.detach().float().clamp(-1, 1) - y.detach().float().clamp(-1, 1)) / 2).pow(2).mean()
    return 10 * torch.log10(1.0 / mse)


def l1(x: Tensor, y: Tensor) -> Tensor:
    """(B,) mean absolute error of each image pair, on the [-1, 1] scale (the training loss's)."""
    _check_pair(x, y)
    return (x.detach().float() - y.detach().float()).abs().flatten(1).mean(dim=1)


def mse(x: Tensor, y: Tensor) -> Tensor:
    """(B,) mean squared error of each image pair, on the [-1, 1] scale."""
    _check_pair(x, y)
    return (x.detach().float() - y.detach().float()).pow(2).flatten(1).mean(dim=1)


def _structural_similarity() -> Any:
    try:
        from skimage.metrics import structural_similarity
    except ImportError as err:  # a core dependency; only a broken install gets here
        raise ImportError("vqkit.metrics.ssim needs scikit-image>=0.21 (pip install scikit-image)") from err
    return structural_similarity


def ssim(x: Tensor, y: Tensor) -> Tensor:
    """(B,) SSIM of each image pair with Wang et al.'s settings, by scikit-image.

    Pixels in [-1, 1] are clamped and mapped to [0, 1]; then an 11×11 Gaussian window of σ = 1.5,
    population covariances and ``data_range=1``, the settings of the SSIM paper (scikit-image's
    defaults differ: a 7×7 uniform window). A well-kept library rather than our own convolution,
    so the number is the one other papers report. Images must be at least 11 pixels a side.
    """
    _check_pair(x, y)
    structural_similarity = _structural_similarity()
    a = ((x.detach().float().clamp(-1, 1) + 1) / 2).movedim(1, -1).cpu().numpy().astype(np.float64)
    b = ((y.detach().float().clamp(-1, 1) + 1) / 2).movedim(1, -1).cpu().numpy().astype(np.float64)
    values = [
        float(structural_similarity(a[i], b[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=1.0, channel_axis=-1))
        for i in range(a.shape[0])
    ]
    return torch.tensor(values, dtype=torch.float32)
