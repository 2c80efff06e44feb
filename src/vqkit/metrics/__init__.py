"""Metrics: image fidelity, perceptual distances (weights permitting) and codebook statistics."""

from .codebook import CodeUsage
from .fid import FID, FIDInception, frechet_distance, load_fid_inception
from .image import batch_psnr, l1, mse, psnr, ssim
from .perceptual import LPIPS, WeightsUnavailableError, load_lpips

__all__ = [
    "FID",
    "LPIPS",
    "CodeUsage",
    "FIDInception",
    "WeightsUnavailableError",
    "batch_psnr",
    "frechet_distance",
    "l1",
    "load_fid_inception",
    "load_lpips",
    "mse",
    "psnr",
    "ssim",
]
