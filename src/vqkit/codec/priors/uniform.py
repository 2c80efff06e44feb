"""The uniform prior: every digit uniform over its radix — the nominal rate Σ log2 K, within rounding.
It needs no tables, so every model can write it.

A codebook above the coder's largest radix is split into a low and a high digit (:class:`StageSpec`); when
K is not a multiple of the low radix, some (low, high) pairs are not codes. Version 2 (``uniform.v2``)
codes such a stage exactly uniformly over its K codes: the high digit first, each value weighted by how
many codes it leads to, then the low digit uniform over those — log2 K bits per token, plus the 24-bit
quantization of the high digit's weights (K = 2^20 + 1: 20.000001 bits, where version 1 spent 21). Version
1 stays for the files it wrote; for every other model the two versions are the same bits and files keep
the name ``uniform``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..symbols import StageSpec
from .base import Prior, Visit


def inexact(spec: StageSpec) -> bool:
    """Whether ``spec``'s digits can spell indices beyond its codebook (a split nominal stage)."""
    return math.prod(spec.radices) > spec.size


class Uniform(Prior):
    name = "uniform"

    def __init__(self, specs: Sequence[StageSpec], valid_top: bool = False) -> None:
        super().__init__(specs)
        self.valid_top = valid_top

    def _walk(self, tokens: np.ndarray, positions: tuple[int, ...], visit: Visit) -> None:
        everywhere = np.arange(math.prod(positions))
        for s, spec in enumerate(self.specs):
            if not (self.valid_top and inexact(spec)):
                digits = np.stack([visit(s, j, everywhere, r) for j, r in enumerate(spec.radices)])
                tokens[s] = spec.join(digits).reshape(positions)
                continue
            self._exact(s, spec, tokens, positions, everywhere, visit)

    @staticmethod
    def _exact(s: int, spec: StageSpec, tokens: np.ndarray, positions: tuple[int, ...], everywhere: np.ndarray,
               visit: Visit) -> None:
        """A split stage (digits: low over B = radices[0], high) uniform over its K codes: the high digit h
        first, with P(h) = (codes whose high digit is h) / K, then the low digit uniform over that many."""
        base = spec.radices[0]
        full, rest = divmod(spec.size, base)
        counts = np.array([base] * full + [rest], np.int64)  # rest > 0: the stage is inexact
        top = visit(s, 1, everywhere, counts / spec.size)
        low = np.zeros(len(everywhere), np.int64)
        for radix in np.unique(counts[top]):  # at most two: B, and the last high digit's `rest`
            where = everywhere[counts[top] == radix]
            if radix > 1:
                low[where] = visit(s, 0, where, int(radix))
        tokens[s] = (low + top * base).reshape(positions)


def uniform_name(specs: Sequence[StageSpec]) -> str:
    """The name (and so the file's prior code) of the current uniform prior for a model of ``specs``."""
    return "uniform.v2" if any(inexact(spec) for spec in specs) else Uniform.name
