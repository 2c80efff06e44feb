"""The image modality's sections of a run config: square crops (``crop``) and its losses (``objective``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import annotated_types as at

from ...validation import NonNegativeFloat, Width
from ..base import CropConfig, ObjectiveConfig


@dataclass(frozen=True)
class ImageCrop(CropConfig):
    """Random square crops for training, centre crops for validation."""

    image_size: Width = 64
    """Side of the square training and validation crops (images)."""
    resize: Annotated[int, at.Ge(0), at.Le(2**16)] = 0
    """Shorter side before cropping; 0 = the dataset's default room for random crops
    (image_size + image_size // 8 for folders, 2 × image_size for the bundled photos)."""

    def resize_for(self, data: str) -> int | None:
        """The shorter side ``data`` is resized to before cropping (None: the bundled photos' own rule)."""
        if self.resize:
            return self.resize
        return None if data == "photos" else self.image_size + self.image_size // 8


@dataclass(frozen=True)
class ImageObjectiveConfig(ObjectiveConfig):
    """L1 (+ MSE, + LPIPS) and a PatchGAN."""

    mse_weight: NonNegativeFloat = 0.0
    """Pixel MSE loss (images)."""
    lpips_weight: NonNegativeFloat = 0.0
    """LPIPS perceptual loss (images; needs the VGG weights, see the README)."""
    rate_weight: NonNegativeFloat = 0.0
    """Rate–distortion training: add this × the tokens' bits per pixel under a learned digit prior trained
    jointly (vqkit.train.rate; FSQ and RFSQ tokenizers, one process); 0 = distortion only. Then fit the
    codec's learned prior on the trained tokens: `vqkit fit-prior RUN --learned`."""
    stage_cuts: bool = False
    """Residual quantizers: the distortion averaged over every stage cut (the first k stages decoded, k = 1..S)
    instead of the full reconstruction only — what an embedded family (`--quality`, `vqkit truncate`) is
    judged by; S decoder passes a step, one process."""
