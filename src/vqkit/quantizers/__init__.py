"""Quantizers: one module per method, one contract (:class:`Quantizer`, :class:`QuantizerOutput`)."""

from .base import NonFiniteError, Quantizer, QuantizerOutput
from .bsq import BSQ
from .factorized import FactorizedVQ
from .fsq import FSQ
from .grouped import GroupedQuantizer
from .ibq import IBQ
from .layout import SymbolLayout
from .lfq import LFQ
from .multiscale import MultiScaleRQ
from .residual import ResidualFSQ, ResidualQuantizer, ResidualSimVQ, ResidualVQ
from .simvq import SimVQ
from .vq import EMAVQ, VQ

__all__ = [
    "BSQ",
    "EMAVQ",
    "FSQ",
    "IBQ",
    "LFQ",
    "VQ",
    "FactorizedVQ",
    "GroupedQuantizer",
    "MultiScaleRQ",
    "NonFiniteError",
    "Quantizer",
    "QuantizerOutput",
    "ResidualFSQ",
    "ResidualQuantizer",
    "ResidualSimVQ",
    "ResidualVQ",
    "SimVQ",
    "SymbolLayout",
]
