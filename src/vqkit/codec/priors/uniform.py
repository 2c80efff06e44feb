"""The uniform prior: every digit uniform over its radix — the nominal rate Σ log2 K, within rounding.
It needs no tables, so every model can write it."""

from __future__ import annotations

import math

import numpy as np

from .base import Prior, Visit


class Uniform(Prior):
    name = "uniform"

    def _walk(self, tokens: np.ndarray, positions: tuple[int, ...], visit: Visit) -> None:
        everywhere = np.arange(math.prod(positions))
        for s, spec in enumerate(self.specs):
            digits = np.stack([visit(s, j, everywhere, r) for j, r in enumerate(spec.radices)])
            tokens[s] = spec.join(digits).reshape(positions)
