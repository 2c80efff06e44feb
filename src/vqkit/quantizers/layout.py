"""The public contract between a quantizer and an entropy coder: how each stage's index is spelled as
symbols (:meth:`vqkit.quantizers.Quantizer.symbol_layout`). The codec reads only this, so a quantizer
added later works with ``vqkit encode`` without touching the codec."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class SymbolLayout:
    """How one stage's index is written as symbols, the public contract between a quantizer and an entropy
    coder: mixed-radix digits, least significant first (index = Σ_j d_j · Π_{i<j} radices[i]).

    ``ordinal=True``: digits whose order means something (FSQ levels, LFQ/BSQ bits), which a context model
    may average; ``ordinal=False``: one index with no order (a VQ/SimVQ codebook), ``radices == (size,)``.
    A coder splits a radix beyond its own limit; the quantizer states the natural layout.
    """

    size: int
    radices: tuple[int, ...]
    ordinal: bool

    def __post_init__(self) -> None:
        if self.size < 2 or not self.radices or any(r < 2 for r in self.radices) or math.prod(self.radices) < self.size:
            raise ValueError(f"SymbolLayout: radices {self.radices} cannot hold {self.size} codes")

    @classmethod
    def digits(cls, radices: tuple[int, ...]) -> SymbolLayout:
        return cls(math.prod(radices), tuple(int(r) for r in radices), True)

    @classmethod
    def nominal(cls, size: int) -> SymbolLayout:
        return cls(int(size), (int(size),), False)
