"""Metrics: image fidelity, perceptual distances (weights permitting) and codebook statistics."""

from .image import psnr
from .perceptual import LPIPS, WeightsUnavailableError, load_lpips

__all__ = ["LPIPS", "WeightsUnavailableError", "load_lpips", "psnr"]
