"""The interface every prior honours, in the shape of CompressAI's entropy models: a prior is fitted from
token grids (or needs nothing), stored as integer arrays, and drives a coder through :meth:`Prior.walk`.

A walk visits every digit of a token grid ``(S, *positions)`` in one fixed order and hands the coder the
probabilities of each group of digits; the encoder reads the digits (``visit`` returns them from the
complete grid), the decoder decodes them and ``walk`` writes them back, so a decoder can rebuild from
what it has decoded every context the encoder used. A new prior (a learned one) is one more subclass
registered in :data:`vqkit.codec.priors.PRIORS`.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np

from ..symbols import StageSpec

Visit = Callable[[int, int, np.ndarray, "np.ndarray | int"], np.ndarray]
"""(stage, digit, flat positions, probabilities — (R,) float64 shared by those positions, (n, R) one row per
position, or the radix of a uniform model) -> that digit's symbols at those positions."""


PRECISION = 24
"""Bits of constriction's fixed-point probabilities (its default categorical and uniform models)."""


def quantized_weights(probs: np.ndarray) -> np.ndarray:
    """The integer weights (summing to 2^24, each at least 1) that constriction's
    ``Categorical(probs, perfect=False)`` codes with: left cumulative ``floor(P_<i · (2^24 − R) / ΣP) + i``
    with the running sums taken in order, as its fast quantizer computes them. What a symbol costs in a
    file is ``-log2(w / 2^24)``, not ``-log2(p)``: the two differ most for large skewed alphabets.
    ``probs`` (R,) or one distribution per row (n, R)."""
    n = probs.shape[-1]
    cum = np.cumsum(probs, axis=-1)  # sequential, left to right, as constriction accumulates
    scale = float((1 << PRECISION) - n) / cum[..., -1:]
    left = np.floor(np.concatenate((np.zeros_like(cum[..., :1]), cum[..., :-1]), axis=-1) * scale)
    left = left.astype(np.int64) + np.arange(n)
    weights: np.ndarray = np.diff(left, axis=-1, append=np.full_like(left[..., :1], 1 << PRECISION))
    return weights


def code_length(symbols: np.ndarray, probs: np.ndarray | int) -> float:
    """Bits of ``symbols`` under ``probs`` (R,) as the coder codes them (24-bit fixed point) — or under a
    uniform model over ``probs`` symbols (log2 R each: exact for powers of two, within R·2^-24 otherwise)."""
    if isinstance(probs, int):
        return len(symbols) * math.log2(probs)
    weights = quantized_weights(probs)
    chosen = weights[symbols] if probs.ndim == 1 else np.take_along_axis(weights, symbols[:, None], 1)
    return float(PRECISION * len(symbols) - np.log2(chosen).sum())


def ideal_code_length(symbols: np.ndarray, probs: np.ndarray | int) -> float:
    """Bits of ``symbols`` under the float64 model itself (what an ideal coder would spend)."""
    if isinstance(probs, int):
        return len(symbols) * math.log2(probs)
    if probs.ndim == 2:
        return float(-np.log2(np.take_along_axis(probs, symbols[:, None], 1) / probs.sum(1, keepdims=True)).sum())
    return float(-np.log2(probs[symbols]).sum())


class Prior(ABC):
    """An entropy model over the token grids of one quantizer (``specs``: one :class:`StageSpec` per stage).

    ``name`` is what ``--prior`` and the ``.vqt`` header call it; ``version`` changes whenever the same
    tables would give other probabilities (files record both through the header's prior code).
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1

    def __init__(self, specs: Sequence[StageSpec]) -> None:
        self.specs = tuple(specs)

    def prefix(self, stages: int) -> Prior:
        """This prior over the first ``stages`` stages only (what a file cut to those stages was coded with:
        walks are stage-major and each stage looks back only, so its tables for the kept stages are the same)."""
        if not 1 <= stages <= len(self.specs):
            raise ValueError(f"a prefix of {stages} stages of a {len(self.specs)}-stage prior")
        cut = copy.copy(self)
        cut.specs = self.specs[:stages]
        return cut

    def symbolization(self, stage: int) -> StageSpec:
        """How this prior splits ``stage``'s tokens into digits (the stage's own spec by default)."""
        return self.specs[stage]

    @abstractmethod
    def _walk(self, tokens: np.ndarray, positions: tuple[int, ...], visit: Visit) -> None:
        """Visit every digit in coding order and fill ``tokens`` (S, *positions) from what ``visit`` returns."""

    def walk(self, tokens: np.ndarray, visit: Visit) -> None:
        """Visit every digit of ``tokens`` (S, *positions) int64 in coding order, filling ``tokens`` in place."""
        if tokens.ndim < 2 or tokens.shape[0] != len(self.specs):
            raise ValueError(f"token grid {tokens.shape} does not match a model of {len(self.specs)} stages")
        self._walk(tokens, tuple(tokens.shape[1:]), visit)

    def reader(self, tokens: np.ndarray) -> Visit:
        """The encoder's ``visit``: reads the digits asked for out of complete ``tokens`` (S, *positions)."""
        digits = [self.symbolization(s).split(tokens[s].reshape(-1)) for s in range(len(self.specs))]

        def visit(s: int, j: int, where: np.ndarray, probs: np.ndarray | int) -> np.ndarray:
            out: np.ndarray = digits[s][j][where]
            return out

        return visit

    def cross_entropy_bits(self, tokens: np.ndarray, ideal: bool = False) -> float:
        """Code length (bits) of ``tokens`` (S, *positions) under this prior as the coder codes it (the payload
        is this plus at most a word of stream end); ``ideal=True``: under the float64 model instead."""
        read, bits, length = self.reader(tokens), [0.0], ideal_code_length if ideal else code_length

        def visit(s: int, j: int, where: np.ndarray, probs: np.ndarray | int) -> np.ndarray:
            symbols = read(s, j, where, probs)
            bits[0] += length(symbols, probs)
            return symbols

        self.walk(np.zeros_like(tokens), visit)
        return bits[0]


def check_grid(grid: np.ndarray, specs: Sequence[StageSpec]) -> None:
    """ValueError unless ``grid`` (S, *positions) holds one in-range token per stage and position."""
    if grid.ndim < 2 or grid.shape[0] != len(specs):
        raise ValueError(f"token grid {grid.shape} does not match a model of {len(specs)} stages")
    for s, spec in enumerate(specs):
        if grid[s].size and (grid[s].min() < 0 or grid[s].max() >= spec.size):
            raise ValueError(f"stage {s}: tokens outside [0, {spec.size})")
