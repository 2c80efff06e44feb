"""The audio modality's sections of a run config: training segments (``crop``) and its losses (``objective``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import annotated_types as at

from ...validation import NonNegativeFloat
from ..base import CropConfig, ObjectiveConfig


@dataclass(frozen=True)
class AudioCrop(CropConfig):
    """Random segments for training; validation uses whole utterances."""

    segment: Annotated[int, at.Ge(1), at.Le(2**31)] = 16000
    """Samples per training crop (audio; validation uses whole utterances)."""


@dataclass(frozen=True)
class AudioObjectiveConfig(ObjectiveConfig):
    """Waveform L1 + multi-resolution mel and STFT losses; MPD + MRD with feature matching."""

    mel_weight: NonNegativeFloat = 0.0
    """Multi-resolution log-mel L1 (audio)."""
    stft_weight: NonNegativeFloat = 0.0
    """Multi-resolution STFT loss: spectral convergence + log magnitude (audio)."""
    fm_weight: NonNegativeFloat = 0.0
    """Discriminator feature matching (audio, with gan_weight > 0)."""
