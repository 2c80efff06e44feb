"""Finite Scalar Quantization.

Mentzer et al., "Finite Scalar Quantization: VQ-VAE Made Simple", ICLR 2024 — the core of
RFSQ (Zhu, "Robust Residual Finite Scalar Quantization for Neural Compression").

Each channel is bounded then rounded to one of L levels; the codebook is the grid of
∏L points and the index is the mixed-radix number of the per-channel digits.

Deviations from the papers' text, on purpose:
* the bound uses ``atanh(offset / half)`` as shift — the FSQ paper and both official repos
  print ``tan``, a typo its author confirmed;
* digits are rounded before the integer cast, and all math runs in float32: the official
  copies truncate, and bf16 corrupts their indices;
* ``symmetric=True`` is the grid of arXiv 2411.19842, ``2/(L-1)·floor((L-1)(tanh z+1)/2+½)-1``,
  symmetric about 0; the default grid of FSQ is asymmetric for even L (L=8 → {-1, …, 0.75}).
  A level of 2 needs the symmetric grid (the asymmetric one degenerates to {-1, 0}).

The grid and the index cast next to the other implementations (tests/test_interop.py checks each claim):

================  ==================================  =============================  ============================
                  Google reference (FSQ paper A.1)    vqp 1.32 ``FSQ``               vqkit ``FSQ``
================  ==================================  =============================  ============================
half-width        (L-1)(1-eps)/2, eps = 1e-3          (L-1)(1+eps)/2                 (L-1)(1+eps)/2
shift (even L)    tan(½ / half-width)                 atanh(½ / half-width)          atanh(½ / half-width)
code              round(bound)/(L//2)                 the same                       the same
digits -> index   Σ code-digits·basis as float, cast  the float sum, rounded, int32  digits rounded, then summed
                  to uint32: truncates                                               exactly, int64
symmetric grid    —                                   ``preserve_symmetry=True``     ``symmetric=True`` (same)
math dtype        the input's                         float32 (float64 kept)         float32 always
================  ==================================  =============================  ============================

So vqp and vqkit give identical codes and indices for float32 and bf16 inputs (float64 inputs: vqp keeps
float64, vqkit rounds to float32 first). The reference has the same implicit codebook (the same code for
every index) but its cells move by O(eps): an input whose bound lies within ~L·eps of a rounding boundary
can get the neighbouring code; and its truncating cast loses one from an index whenever the float sum
falls just below the integer (codes k/3 or k/5 stored in bf16 do).

Sizes: ∏levels must fit an int64 index (≤ 2^63 - 1), and each level ≤ 2^22 (:data:`MAX_LEVEL`):
digits are computed in float32, and beyond ~2^22 levels float32's tanh can no longer reach every
digit (at 2^23 some cells are unreachable). Both are refused at construction.

Speed: the bound, the rounding and the straight-through gradient are one autograd node
(:class:`_BoundRound`, backward ``grad·c·(1 - tanh²)``); the digits come out of the rounding
itself (no second pass from the codes back to digits), and the mixed-radix index is one float32
matrix-vector product where ∏levels ≤ 2^24 (every partial sum is then an exact float32 integer).
The codes are bit-identical to the step-by-step straight-through formulas, the indices identical.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any

import annotated_types as at
import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..validation import Dim, check_args
from .base import MAX_INDEX_SPACE, Quantizer, check_size
from .layout import SymbolLayout

_EPS = 1e-3
MAX_LEVEL = 2**22
"""Largest level whose every digit float32 FSQ reaches (checked for both grids; 2^23 is not)."""
ARGS = {"levels": Annotated[tuple[int, ...], at.MinLen(1)], "dim": Dim | None, "symmetric": bool,
        "check_finite": bool}
"""Types of FSQ's arguments (:func:`vqkit.validation.check_args`); ranges are checked in ``__init__``."""
_FLOAT_INDEX_LIMIT = 2**24
"""Up to this many codes, indices are summed in float32: every digit·basis and partial sum is an exact integer."""
_TILE = 8
"""Tokens per row of the view the per-channel arithmetic runs on: a constant of n values broadcast over
rows of n (n = 6) keeps CPU kernels from vectorizing, over rows of 8·n it does not (~4x faster per op)."""
_SHIFT, _HALF, _OFFSET, _HALF_WIDTH, _HALF_STEPS, _STEP, _GRAD_SCALE = range(7)


class _BoundRound(torch.autograd.Function):
    """FSQ's bound and rounding as one autograd node: ``z -> (codes, digits, tanh)``.

    Forward: :meth:`FSQ._bound_round`. Backward: the straight-through gradient of the codes,
    ``grad · c · (1 - tanh²)`` with ``c`` = d codes / d tanh (``half / half_width``, or 1 on the
    symmetric grid), the value the step-by-step straight-through formulas give up to float32 rounding
    (``round_ste`` / ``floor_ste``, the references in tests/test_fsq.py). Digits and tanh are outputs
    without gradient. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx: Any, z: Tensor, q: FSQ) -> tuple[Tensor, Tensor, Tensor]:
        codes, digits, t = q._bound_round(z)
        ctx.mark_non_differentiable(digits, t)
        ctx.save_for_backward(t)
        ctx.q = q
        return codes, digits, t

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor, _digits: Tensor, _tanh: Tensor) -> tuple[Tensor, None]:
        (t,) = ctx.saved_tensors
        q: FSQ = ctx.q
        if not q._unit_grad_scale:
            rows, consts = q._rows(grad)
            grad = (rows * consts[_GRAD_SCALE]).view(t.shape)
        return torch.ops.aten.tanh_backward(grad, t), None


def _bound_round_ste(z: Tensor, q: FSQ) -> tuple[Tensor, Tensor, Tensor]:
    """(codes with the straight-through gradient, digits, tanh) of z; see :class:`_BoundRound`."""
    out: tuple[Tensor, Tensor, Tensor] = _BoundRound.apply(z, q)  # type: ignore[no-untyped-call]
    return out


def _float_mixed_radix(digits: Tensor, basis: Tensor, matvec: bool) -> Tensor:
    """Σ digits·basis over the last dim in float32, as int64; exact while ∏levels ≤ 2^24. ``matvec``: one
    matrix-vector product (CPU: ~4x faster than an int64 multiply-and-sum); else a float32 multiply-and-sum
    (accelerators: no TF32 or reduced-precision matmul mode can touch it)."""
    flat = digits @ basis if matvec else (digits * basis).sum(-1)
    return flat.long()


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
    _consts: Tensor
    _consts_tiled: Tensor
    _basis_float: Tensor

    def __init__(
        self,
        levels: Sequence[int],
        dim: int | None = None,
        symmetric: bool = False,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        args = check_args("FSQ", ARGS, levels=levels, dim=dim, symmetric=symmetric, check_finite=check_finite)
        levels = list(args["levels"])
        symmetric, check_finite = args["symmetric"], args["check_finite"]
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
        # per-channel constants of the forward (rows _SHIFT ... _GRAD_SCALE), and tiled _TILE times. Symmetric
        # grid: digit = floor((tanh z + 1)·(L-1)/2 + ½), code = digit·2/(L-1) - 1; the last row is
        # d code / d tanh of the straight-through rounding: half/half_width, and exactly 1 on the symmetric grid.
        half_steps, step = (lv - 1) / 2, 2 / (lv - 1)
        grad_scale = torch.ones_like(lv) if symmetric else half / self._half_width
        self._unit_grad_scale = bool((grad_scale == 1).all())
        consts = torch.stack([self._shift, half, offset, self._half_width, half_steps, step, grad_scale])
        self.register_buffer("_consts", consts, persistent=False)
        self.register_buffer("_consts_tiled", consts.repeat(1, _TILE), persistent=False)
        self._float_index = self.codebook_size <= _FLOAT_INDEX_LIMIT
        self.register_buffer("_basis_float", basis.float() if self._float_index else basis.new_zeros(0).float(),
                             persistent=False)
        self.project_in: nn.Module = nn.Linear(self.dim, n) if self.dim != n else nn.Identity()
        self.project_out: nn.Module = nn.Linear(n, self.dim) if self.dim != n else nn.Identity()

    @property
    def bits_per_token(self) -> float:
        return sum(math.log2(v) for v in self.levels)

    # -- grid <-> digits <-> indices -----------------------------------------------------------
    def quantize_codes(self, z: Tensor) -> Tensor:
        """(..., n) -> grid codes in [-1, 1], straight-through rounding, before projection."""
        return _bound_round_ste(z, self)[0]

    def _rows(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` (..., n) viewed as rows of :data:`_TILE` tokens, with the constants tiled to match, where it is
        contiguous and holds a multiple of that many tokens; else ``x`` as it is with the plain constants.
        Elementwise results are identical either way (the same operations on the same values)."""
        width = self._consts_tiled.shape[1]
        if x.is_contiguous() and x.numel() % width == 0:
            return x.view(-1, width), self._consts_tiled
        return x, self._consts

    def _bound_round(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(..., n) -> (codes, digits as float integers, tanh of the bound), each (..., n); no autograd.

        Bit-identical to the straight-through formulas (``round_ste(tanh(z + shift)·half - offset) /
        half_width``; ``floor_ste((L-1)(tanh z + 1)/2 + ½)·2/(L-1) - 1``): ``x + (round(x) - x)`` is
        exactly ``round(x)`` (the difference is exact, Sterbenz), and ``(t+1)·((L-1)/2)`` is
        ``(L-1)(t+1)/2`` (halving is exact).
        """
        x, consts = self._rows(z)
        c = consts.unbind()
        if self.symmetric:
            t = torch.tanh(x)
            digits = ((t + 1) * c[_HALF_STEPS] + 0.5).floor()
            codes = digits * c[_STEP] - 1
        else:
            t = torch.tanh(x + c[_SHIFT])
            rounded = (t * c[_HALF] - c[_OFFSET]).round()
            codes, digits = rounded / c[_HALF_WIDTH], rounded + c[_HALF_WIDTH]
        shape = z.shape
        return codes.view(shape), digits.view(shape), t.view(shape)

    def _digits_to_indices(self, digits: Tensor) -> Tensor:
        """Float integer digits (..., n) -> int64 mixed-radix indices (...,).

        NaN digits (only reachable with check_finite=False) map to digit 0, not to garbage ints.
        """
        digits = torch.nan_to_num(digits, nan=0.0)
        if not self._float_index or digits.dtype != torch.float32 or self._basis_float.dtype != torch.float32:
            return (digits.long() * self._basis).sum(dim=-1)
        return _float_mixed_radix(digits, self._basis_float, matvec=digits.device.type == "cpu")

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """Grid codes (..., n) -> int64 mixed-radix indices (...,)."""
        if self.symmetric:
            digits = (codes + 1) * (self._levels - 1) / 2
        else:
            digits = codes * self._half_width + self._half_width
        return self._digits_to_indices(digits.round())

    def codes_to_digits(self, codes: Tensor) -> Tensor:
        """Grid codes (..., n) -> their digits as float integers, differentiable (a rate model's input: the
        straight-through gradient of the codes reaches the digits)."""
        if self.symmetric:
            return (codes + 1) * ((self._levels - 1) / 2)
        return codes * self._half_width + self._half_width

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
        codes, digits, _ = _bound_round_ste(self._project_in(z), self)
        quantized: Tensor = self.project_out(codes)
        return quantized, self._digits_to_indices(digits), z.new_zeros(())

    def _encode(self, z: Tensor) -> Tensor:
        return self._digits_to_indices(self._bound_round(self._project_in(z))[1])

    def _decode(self, indices: Tensor) -> Tensor:
        codes: Tensor = self.project_out(self.indices_to_codes(indices))
        return codes

    def symbol_layout(self) -> tuple[SymbolLayout, ...]:
        """One digit per level (the index is the mixed-radix number of the digits, first level lowest)."""
        return (SymbolLayout.digits(self.levels),)

    def extra_repr(self) -> str:
        return f"levels={list(self.levels)}, dim={self.dim}, symmetric={self.symmetric}"
