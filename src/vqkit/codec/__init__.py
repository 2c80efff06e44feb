"""Token files: the ``.vqt`` container, priors and range coding. Knows tokens, shapes and bytes —
nothing of images, audio or models (:mod:`vqkit.compress` joins them)."""

from .coders import decode, encode
from .container import (
    CorruptFileError,
    ModelMismatchError,
    TokenFile,
    TokenFileError,
    UnsupportedVersionError,
)
from .priors import PRIOR_NAMES, PriorModel
from .symbols import StageSpec

__all__ = [
    "PRIOR_NAMES",
    "CorruptFileError",
    "ModelMismatchError",
    "PriorModel",
    "StageSpec",
    "TokenFile",
    "TokenFileError",
    "UnsupportedVersionError",
    "decode",
    "encode",
]
