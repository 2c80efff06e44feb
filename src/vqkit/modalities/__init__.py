"""Modalities: one package per kind of signal (:mod:`.image`, :mod:`.audio`), each a :class:`Modality`;
:mod:`.registry` maps architectures to them. Nothing outside these packages asks which modality it holds."""

from .audio import AUDIO
from .base import Adversary, Evaluation, FileRates, Modality, Objective, Reconstruction, Scorer
from .image import IMAGE
from .registry import (
    ARCH_MODALITY,
    MODALITIES,
    codec_for,
    fit_and_save_prior,
    modality_of,
    open_codec,
    register,
)

register(IMAGE, ("rfsq_conv", "fsq_conv", "vqgan"))
register(AUDIO, ("speech",))

__all__ = [
    "ARCH_MODALITY",
    "AUDIO",
    "IMAGE",
    "MODALITIES",
    "Adversary",
    "Evaluation",
    "FileRates",
    "Modality",
    "Objective",
    "Reconstruction",
    "Scorer",
    "codec_for",
    "fit_and_save_prior",
    "modality_of",
    "open_codec",
    "register",
]
