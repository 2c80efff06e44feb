"""Finite Scalar Quantization.

Mentzer et al., "Finite Scalar Quantization: VQ-VAE Made Simple", ICLR 2024 — the core of
RFSQ (Zhu, "Robust Residual Finite Scalar Quantization for Neural Compression").

Each channel is bounded then rounded to one of L levels; the codebook is the grid of
∏L points and the index is the mixed-radix number of the per-channel digits.

Deviations from the papers' text, on purpose:
* the bound uses ``atanh(offset / half)`` as shift — the FSQ paper and both official repos
  print ``tan``, a typo its author confirmed (ANCHORS.md);
* digits are rounded before the integer cast, and all math runs in float32: the official
  copies truncate, and bf16 corrupts their indices;
* ``symmetric=True`` is the grid of arXiv 2411.19842, ``2/(L-1)·floor((L-1)(tanh z+1)/2+½)-1``,
  symmetric about 0; the default grid of FSQ is asymmetric for even L (L=8 → {-1, …, 0.75}).
  A level of 2 needs the symmetric grid (the asymmetric one degenerates to {-1, 0}).

Sizes: ∏levels must fit an int64 index (≤ 2^63 - 1), and each level ≤ 2^22 (:data:`MAX_LEVEL`):
digits are computed in float32, and beyond ~2^22 levels float32's tanh can no longer reach every
digit (at 2^23 some cells are unreachable). Both are refused at construction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .base import MAX_INDEX_SPACE, Quantizer, check_size

_EPS = 1e-3
MAX_LEVEL = 2**22
"""Largest level whose every digit float32 FSQ reaches (checked for both grids; 2^23 is not)."""


def round_ste(x: Tensor) -> Tensor:
    return x + (x.round() - x).detach()


def floor_ste(x: Tensor) -> Tensor:
    return x + (x.floor() - x).detach()


class FSQ(Quantizer):
    """FSQ over ``levels``; projects ``dim -> len(levels) -> dim`` when ``dim`` differs.

    z: (..., dim) -> quantized (..., dim), indices (...,) in [0, ∏levels).
    """

    _levels: Tensor
    _basis: Tensor
    _half: Tensor
    _offset: Tensor
    _shift: Tensor
    _half_width: Tensor

    def __init__(
        self,
        levels: Sequence[int],
        dim: int | None = None,
        symmetric: bool = False,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        levels = [int(v) for v in levels]
        if not levels or any(v < 2 for v in levels):
            raise ValueError(f"FSQ: every level must be an integer >= 2, got {levels}")
        if max(levels) > MAX_LEVEL:
            raise ValueError(
                f"FSQ: every level must be <= {MAX_LEVEL} (2^22: float32 digits reach no more), got {max(levels)}"
            )
        if math.prod(levels) > MAX_INDEX_SPACE:
            raise ValueError(
                f"FSQ: levels {levels} give ∏levels = {math.prod(levels)} codes, over the int64 index limit "
                f"of {MAX_INDEX_SPACE} (2^63 - 1)"
            )
        if 2 in levels and not symmetric:
            raise ValueError("FSQ: a level of 2 needs symmetric=True (the asymmetric grid degenerates)")
        self.levels = tuple(levels)
        self.symmetric = symmetric
        self.check_finite = check_finite
        n = len(levels)
        self.dim = n if dim is None else check_size("FSQ", "dim", dim, 1)
        self.codebook_size = math.prod(levels)
        lv = torch.tensor(levels, dtype=torch.float32)
        basis = torch.cumprod(torch.tensor([1, *levels[:-1]], dtype=torch.long), dim=0)
        half = (lv - 1) * (1 + _EPS) / 2
        offset = torch.where(lv % 2 == 0, 0.5, 0.0)
        self.register_buffer("_levels", lv, persistent=False)
        self.register_buffer("_basis", basis, persistent=False)
        self.register_buffer("_half", half, persistent=False)
        self.register_buffer("_offset", offset, persistent=False)
        self.register_buffer("_shift", torch.atanh(offset / half), persistent=False)
        self.register_buffer("_half_width", torch.div(lv, 2, rounding_mode="floor"), persistent=False)
        self.project_in: nn.Module = nn.Linear(self.dim, n) if self.dim != n else nn.Identity()
        self.project_out: nn.Module = nn.Linear(n, self.dim) if self.dim != n else nn.Identity()

    @property
    def bits_per_token(self) -> float:
        return sum(math.log2(v) for v in self.levels)

    # -- grid <-> digits <-> indices -----------------------------------------------------------
    def quantize_codes(self, z: Tensor) -> Tensor:
        """(..., n) -> grid codes in [-1, 1], straight-through rounding, before projection."""
        if self.symmetric:
            steps = self._levels - 1
            return floor_ste(steps * (torch.tanh(z) + 1) / 2 + 0.5) * (2 / steps) - 1
        bounded = torch.tanh(z + self._shift) * self._half - self._offset
        return round_ste(bounded) / self._half_width

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """Grid codes (..., n) -> int64 mixed-radix indices (...,)."""
        if self.symmetric:
            digits = (codes + 1) * (self._levels - 1) / 2
        else:
            digits = codes * self._half_width + self._half_width
        # NaN digits (only reachable with check_finite=False) map to digit 0, not to garbage ints
        return (torch.nan_to_num(digits, nan=0.0).round().long() * self._basis).sum(dim=-1)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """int64 indices (...,) -> grid codes (..., n)."""
        digits = (indices.unsqueeze(-1) // self._basis) % self._levels.long()
        if self.symmetric:
            return digits * (2 / (self._levels - 1)) - 1
        return (digits - self._half_width) / self._half_width

    # -- hooks ---------------------------------------------------------------------------
    def _project_in(self, z: Tensor) -> Tensor:
        x: Tensor = self.project_in(z)
        if not isinstance(self.project_in, nn.Identity):
            self._require_finite(x, "project_in(z)")
        return x

    def _quantize(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        codes = self.quantize_codes(self._project_in(z))
        quantized: Tensor = self.project_out(codes)
        return quantized, self.codes_to_indices(codes.detach()), z.new_zeros(())

    def _encode(self, z: Tensor) -> Tensor:
        return self.codes_to_indices(self.quantize_codes(self._project_in(z)))

    def _decode(self, indices: Tensor) -> Tensor:
        codes: Tensor = self.project_out(self.indices_to_codes(indices))
        return codes

    def extra_repr(self) -> str:
        return f"levels={list(self.levels)}, dim={self.dim}, symmetric={self.symmetric}"
