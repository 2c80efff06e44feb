"""Token files: the ``.vqt`` container, priors, range coding, and the one n-D tiled codec that joins a
token model to them. Knows tokens, shapes and bytes — nothing of images or audio (a modality hands the
codec its signal adapter)."""

from .coders import decode, encode
from .container import (
    CorruptFileError,
    ModelMismatchError,
    TokenFile,
    TokenFileError,
    UnsupportedVersionError,
)
from .priors import PRIOR_NAMES, PRIORS, Context, Prior, PriorTables, Static, Uniform
from .symbols import StageSpec

__all__ = [
    "PRIORS",
    "PRIOR_NAMES",
    "Context",
    "CorruptFileError",
    "ModelMismatchError",
    "Prior",
    "PriorTables",
    "StageSpec",
    "Static",
    "TokenFile",
    "TokenFileError",
    "Uniform",
    "UnsupportedVersionError",
    "decode",
    "encode",
]
