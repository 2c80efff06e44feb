"""How a stage's indices become the symbols an entropy coder sees, and the contexts they are coded in.

A token of a stage with codebook size K is split into *symbols*: mixed-radix digits, least
significant first (index = Σ_j d_j · Π_{i<j} R_i). :class:`StageSpec` says how:

* ``ordinal=True`` — digits with an order that means something (FSQ levels, LFQ bits): neighbours'
  digits are averaged into a context;
* ``ordinal=False`` — one nominal symbol (a VQ / SimVQ index), split into a low and a high digit only
  above :data:`MAX_RADIX`; neighbours enter a context through a small bucket table.

Contexts are built from already-coded data only, in a checkerboard order over positions, so that a
decoder can rebuild them: 2-D grids code (even, even) positions first (pass 0), then (odd, odd) from
their four diagonal neighbours (pass 1), then the rest from their four direct neighbours (pass 2);
grids of any other rank (1-D speech, 3-D volumes) code the positions whose coordinates sum to an even
number, then the others from their 2·rank direct neighbours. Everything here is integer arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..quantizers.layout import SymbolLayout

MAX_RADIX = 1 << 20
"""Largest alphabet coded as one symbol (constriction's probabilities have 24-bit precision)."""
NBR_BUCKETS = 8
"""Buckets of a nominal symbol's neighbour / previous-stage context."""


@dataclass(frozen=True)
class StageSpec:
    """One stage: codebook ``size`` and its digits' ``radices`` (product >= size)."""

    size: int
    radices: tuple[int, ...]
    ordinal: bool

    def __post_init__(self) -> None:
        if self.size < 2 or not self.radices or any(r < 2 or r > MAX_RADIX for r in self.radices):
            raise ValueError(f"StageSpec: size {self.size} / radices {self.radices} out of range")
        if math.prod(self.radices) < self.size:
            raise ValueError(f"StageSpec: radices {self.radices} cannot hold {self.size} codes")

    @classmethod
    def digits(cls, radices: tuple[int, ...] | list[int]) -> StageSpec:
        """An ordinal mixed-radix code (FSQ levels; LFQ bits as ``(2,) * bits``)."""
        r = tuple(int(v) for v in radices)
        return cls(math.prod(r), r, True)

    @classmethod
    def from_layout(cls, layout: SymbolLayout) -> StageSpec:
        """A quantizer's stated layout, with a nominal index beyond :data:`MAX_RADIX` split in two."""
        return cls.digits(layout.radices) if layout.ordinal else cls.nominal(layout.size)

    @classmethod
    def nominal(cls, size: int) -> StageSpec:
        """One index of ``size`` codes with no order (VQ-family); split in two above MAX_RADIX."""
        if size <= MAX_RADIX:
            return cls(size, (size,), False)
        return cls(size, (MAX_RADIX, -(-size // MAX_RADIX)), False)

    def to_json(self) -> dict[str, object]:
        return {"size": self.size, "radices": list(self.radices), "ordinal": self.ordinal}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> StageSpec:
        radices = data["radices"]
        if not isinstance(radices, list):
            raise ValueError(f"StageSpec: radices must be a list, got {radices!r}")
        return cls(int(data["size"]), tuple(int(r) for r in radices), bool(data["ordinal"]))  # type: ignore[call-overload]

    def split(self, indices: np.ndarray) -> np.ndarray:
        """int64 indices (...) -> digits (J, ...)."""
        out, rest = [], indices.astype(np.int64)
        for r in self.radices:
            out.append(rest % r)
            rest = rest // r
        return np.stack(out)

    def join(self, digits: np.ndarray) -> np.ndarray:
        """digits (J, ...) -> int64 indices (...)."""
        index, basis = np.zeros(digits.shape[1:], np.int64), 1
        for j, r in enumerate(self.radices):
            index += digits[j].astype(np.int64) * basis
            basis *= r
        return index


# -- positions ------------------------------------------------------------------------------
def passes(positions: tuple[int, ...]) -> list[np.ndarray]:
    """Flat position indices of each pass of the checkerboard order (see the module docstring)."""
    if len(positions) == 2:
        h, w = positions
        y, x = np.divmod(np.arange(h * w), w)
        return [np.flatnonzero((y % 2 == 0) & (x % 2 == 0)), np.flatnonzero((y % 2 == 1) & (x % 2 == 1)),
                np.flatnonzero((y + x) % 2 == 1)]
    parity = np.indices(positions).reshape(len(positions), -1).sum(0) % 2
    return [np.flatnonzero(parity == 0), np.flatnonzero(parity == 1)]


def neighbours(positions: tuple[int, ...], which: int, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(neighbour flat indices (n, m), valid mask) of the positions ``flat`` in pass ``which``: 2-D grids
    the four diagonal (pass 1) or direct (pass 2) neighbours; other ranks the 2·rank direct ones."""
    if len(positions) == 2 and which == 1:
        offsets = np.array([(-1, -1), (-1, 1), (1, -1), (1, 1)])
    elif len(positions) == 2:
        offsets = np.array([(0, -1), (-1, 0), (0, 1), (1, 0)])
    else:  # per axis, the previous then the next position (1-D: left, right)
        offsets = np.concatenate([np.eye(len(positions), dtype=np.int64) * s for s in (-1, 1)])
        offsets = offsets.reshape(2, len(positions), -1).transpose(1, 0, 2).reshape(-1, len(positions))
    coords = np.stack(np.unravel_index(flat, positions), axis=1)[:, None, :] + offsets[None]  # (n, m, rank)
    size = np.array(positions)
    valid = np.all((coords >= 0) & (coords < size), axis=2) & (which > 0)
    clipped = np.clip(coords, 0, size - 1)
    return np.ravel_multi_index(tuple(np.moveaxis(clipped, 2, 0)), positions), valid


def ordinal_summary(values: np.ndarray, valid: np.ndarray, radix: int) -> np.ndarray:
    """Neighbours' digits (n, m) -> floor(2·mean) in [0, 2(radix-1)], or 2·radix - 1 when none is valid."""
    count = valid.sum(axis=1)
    total = np.where(valid, values, 0).sum(axis=1)
    half_steps = (2 * total) // np.maximum(count, 1)
    return np.where(count > 0, half_steps, 2 * radix - 1)


def nominal_summary(buckets: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Neighbours' buckets (n, m) in [0, B) -> the first two valid ones as one id in [0, (B+1)^2)
    (B = "no such neighbour")."""
    b = NBR_BUCKETS + 1
    ids = np.where(valid, buckets, NBR_BUCKETS)
    order = np.argsort(~valid, axis=1, kind="stable")  # valid neighbours first, in their fixed order
    first = np.take_along_axis(ids, order[:, :1], 1)[:, 0]
    second = np.take_along_axis(ids, order[:, 1:2], 1)[:, 0] if ids.shape[1] > 1 else np.full_like(first, b - 1)
    out: np.ndarray = first * b + second
    return out


def context_cardinality(spec: StageSpec, j: int, prev: StageSpec | None) -> tuple[int, int, int]:
    """Sizes of the (previous stage, neighbours, previous digit) parts of digit j's context.

    Ordinal digit j: digit j of the previous stage when it has the same radices, the neighbours'
    :func:`ordinal_summary`, and digit j-1 of the same token. Nominal digit 0: the previous stage's
    bucket when it is nominal too, and the neighbours' :func:`nominal_summary`; a nominal high digit
    (only above MAX_RADIX codes) has no context.
    """
    if spec.ordinal:
        r = spec.radices[j]
        same = prev is not None and prev.ordinal and prev.radices == spec.radices
        return (r if same else 1), 2 * r, (spec.radices[j - 1] if j > 0 else 1)
    if j > 0:
        return 1, 1, 1
    return (NBR_BUCKETS if prev is not None and not prev.ordinal else 1), (NBR_BUCKETS + 1) ** 2, 1
