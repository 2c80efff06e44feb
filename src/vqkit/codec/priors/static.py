"""The static prior: per stage, the symbol counts of the training set. A stage of at most
:data:`JOINT_MAX` codes is one symbol (a joint histogram); a larger FSQ/LFQ stage is coded digit by
digit, each with its own histogram."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..symbols import StageSpec
from .base import Prior, Visit
from .counts import DigitTable, check_table, get_array, tables_to_arrays

JOINT_MAX = 1 << 16
"""Stages with at most this many codes get a joint histogram in the static prior."""


def static_spec(spec: StageSpec) -> StageSpec:
    """The symbolization of the static prior: joint when the stage is small enough."""
    return StageSpec.nominal(spec.size) if spec.size <= JOINT_MAX else spec


class Static(Prior):
    name = "static"

    def __init__(self, specs: Sequence[StageSpec], tables: list[list[DigitTable]]) -> None:
        super().__init__(specs)
        self.tables = tables

    def symbolization(self, stage: int) -> StageSpec:
        return static_spec(self.specs[stage])

    @classmethod
    def fit(cls, specs: Sequence[StageSpec], grids: Sequence[np.ndarray]) -> Static:
        """Histograms of every digit of every stage over checked token grids (S, *positions)."""
        tables = []
        for s, spec in enumerate(specs):
            sspec = static_spec(spec)
            digits = np.concatenate([sspec.split(g[s].reshape(-1)) for g in grids], axis=1)
            tables.append([DigitTable(np.bincount(digits[j], minlength=r).astype(np.int64))
                           for j, r in enumerate(sspec.radices)])
        return cls(specs, tables)

    def _walk(self, tokens: np.ndarray, positions: tuple[int, ...], visit: Visit) -> None:
        everywhere = np.arange(math.prod(positions))
        for s in range(len(self.specs)):
            spec = self.symbolization(s)
            digits = np.stack([visit(s, j, everywhere, self.tables[s][j].base()) for j in range(len(spec.radices))])
            tokens[s] = spec.join(digits).reshape(positions)

    def to_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        tables_to_arrays(self.name, self.tables, arrays)

    @classmethod
    def from_arrays(cls, specs: Sequence[StageSpec], arrays: dict[str, np.ndarray]) -> Static:
        tables = []
        for s, spec in enumerate(specs):
            stage = []
            for j, r in enumerate(static_spec(spec).radices):
                key = f"{cls.name}.{s}.{j}"
                t = DigitTable(get_array(arrays, f"{key}.marginal", (r,)))
                check_table(t, r, key)
                stage.append(t)
            tables.append(stage)
        return cls(specs, tables)
