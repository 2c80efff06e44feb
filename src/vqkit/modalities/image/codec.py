"""The image side of the codec: uint8 pictures ⇄ float tensors, and the shapes an image file may claim."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ...codec.container import TokenFileError
from .datasets import from_uint8
from .datasets import to_uint8 as images_to_uint8

MAX_PIXELS = 1 << 27
"""Largest image a file may claim (134 MP, e.g. 11,585²): checked before anything is allocated."""
TILE_PIXELS = 512
"""Tiles of 512 px (+ 32 px of context a side) cost 1.08× the pixels of a 768×512 photo; 256 px cost 1.31×."""
MARGIN_PIXELS = 32


def to_tensor(image: np.ndarray) -> Tensor:
    """uint8 (H, W, C), C in {1, 3, 4} -> float (1, 3, H, W) in [-1, 1]; grey is replicated, alpha dropped."""
    if (not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3
            or image.shape[2] not in (1, 3, 4) or 0 in image.shape):
        what = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"expected a uint8 image (H, W, 1|3|4), got {what}")
    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[..., :3]
    return from_uint8(torch.from_numpy(np.array(rgb, copy=True))[None], channels_last=True)


def to_uint8(images: Tensor, channels: int) -> np.ndarray:
    """float (1, 3, H, W) in [-1, 1] -> uint8 (H, W, channels); channels 1 = ITU-R 601 luma."""
    rgb = images_to_uint8(images[0].cpu(), channels_last=True).numpy()
    if channels == 1:
        luma = rgb @ np.array([0.299, 0.587, 0.114])
        grey: np.ndarray = np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None]
        return grey
    out: np.ndarray = rgb
    return out


class ImageAdapter:
    """uint8 (H, W, C) ⇄ (1, 3, H, W); the file stores (C, H, W) and decodes to C channels (alpha: opaque)."""

    modality = "image"
    pad_mode = "replicate"

    def to_tensor(self, signal: np.ndarray) -> tuple[Tensor, tuple[int, ...]]:
        x = to_tensor(signal)
        height, width, channels = signal.shape
        return x, (channels, height, width)

    def allocate(self, shape: tuple[int, ...]) -> np.ndarray:
        channels, height, width = shape
        return np.empty((height, width, 1 if channels == 1 else 3), np.uint8)  # alpha is not coded

    def place(self, out: np.ndarray, piece: Tensor, where: tuple[slice, ...]) -> None:
        rows, cols = where
        h, w = min(rows.stop, out.shape[0]) - rows.start, min(cols.stop, out.shape[1]) - cols.start
        if h > 0 and w > 0:
            out[rows.start : rows.start + h, cols.start : cols.start + w] = to_uint8(piece[:, :, :h, :w], out.shape[2])

    def finish(self, out: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return out

    def spatial(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) != 3 or shape[0] not in (1, 3, 4):
            raise TokenFileError(f"not an image's shape: {shape}")
        if shape[1] * shape[2] > MAX_PIXELS:
            raise TokenFileError(f"an image of {shape[2]}x{shape[1]} pixels is larger than the {MAX_PIXELS:,} pixels "
                                 "a .vqt file may hold (vqkit encodes and decodes up to that size)")
        return shape[1], shape[2]
