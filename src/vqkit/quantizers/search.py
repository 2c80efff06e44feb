"""Nearest-code search shared by every codebook method (VQ, EMAVQ, FactorizedVQ, SimVQ).

argmin_k ||z - c_k||^2 = argmin_k (||c_k||^2 - 2 z.c_k): one matrix product per block, never
``cdist`` and never an (N, K, D) broadcast. Tokens and codes are processed in blocks whose
distance matrix fits ``max_bytes``, with a running argmin across code blocks, so the extra
memory is bounded whatever N and K are. One block buffer is allocated per call and reused: a
fresh large allocation per block costs page faults that made the search ~1.5× slower on CPU.

Ties: the lowest index wins, within a block (``min``/``argmin`` return the first minimum) and
across blocks (a later block replaces the running best only when strictly closer): the
convention of ``torch.argmin`` over the full distance matrix. Exact ties need exactly equal
computed distances: duplicate codes, or data whose products are exact (small integers).

Overflow and underflow: no entry of ||c||² - 2 z·c overflows float32 when max(|z|, |c|) stays below
:func:`safe_magnitude` (2^60 for D = 8, 2^55 for D = 2^14). Above it, z and the codes are both
multiplied by one power of two that brings them under it: exact, the argmin is scale-invariant,
and nothing is lost but terms below float32's resolution of the largest one. Below 2^-32 the products
would sink towards float32's subnormals (2^-80·2^-80 is 0: every distance ties and code 0 wins), so
tiny data are multiplied by the power of two that brings the largest value into (1/2, 1]: exact. No
host sync: the scale is chosen on the device, and it is 1 — the data untouched — in the ordinary range.

Precision: ``precision="bf16"`` (and ``"auto"`` on a CPU with AVX512-BF16 or AMX for K >= 4096 codes
and >= 256 tokens) finds exactly the same indices, ties included, from a bf16 product, a rigorous
per-pair error bound and a float32 rerank of the codes the bound cannot exclude: see
:mod:`.search_bf16`. The shared float32 row-block kernel lives in :mod:`.search_blocks`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from ..validation import Size
from .base import float32_math
from .search_bf16 import Bf16Search, use_bf16
from .search_bf16 import reduced_precision_available as reduced_precision_available
from .search_blocks import SearchStats as SearchStats
from .search_blocks import fp32_rows
from .search_blocks import squared_norms as squared_norms

DEFAULT_MAX_BYTES = 32 * 2**20
"""Default budget for the block of distances (32 MiB): measured as fast as larger blocks on 2 CPU
cores; blocks of fewer than ~256 rows lose matrix-product efficiency."""

_MIN_ROWS = 64  # below this many tokens per block the matrix product loses efficiency

SearchPrecision = Literal["auto", "bf16", "fp32"]
SEARCH_ARGS = {"search_bytes": Size, "check_finite": bool, "search_precision": SearchPrecision}
"""Types of the arguments every nearest-code quantizer takes (:func:`vqkit.validation.check_args`)."""
SEARCH_PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp32")


def check_search_bytes(owner: str, search_bytes: int) -> int:
    """A quantizer's ``search_bytes``, refused at construction unless it holds one float32 distance."""
    if isinstance(search_bytes, bool) or int(search_bytes) != search_bytes or search_bytes < 4:
        raise ValueError(f"{owner}: search_bytes must be an integer >= 4 (one float32 distance), got {search_bytes!r}")
    return int(search_bytes)


def check_search_precision(owner: str, precision: str) -> SearchPrecision:
    """A quantizer's ``search_precision``: "auto", "bf16" or "fp32" (the indices are the same in all three)."""
    if precision == "auto":
        return "auto"
    if precision == "bf16":
        return "bf16"
    if precision == "fp32":
        return "fp32"
    raise ValueError(f"{owner}: search_precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")


def safe_magnitude(dim: int) -> float:
    """Largest max(|z|, |c|) (a power of two) for which no distance entry can overflow float32.

    |·| ≤ m gives ||c||² ≤ D·m² and |2 z·c| ≤ 2D·m², so each entry and every partial sum stays
    below 3D·m² ≤ 2^126, half of float32's largest finite value.
    """
    return 2.0 ** ((126 - math.ceil(math.log2(3 * max(1, dim)))) // 2)


_TINY = 2.0**-32  # below this max(|z|, |c|), products near the smallest terms underflow: scaled up


def _overflow_scale(flat: Tensor, codes: Tensor) -> Tensor:
    """A power of two s (0-d tensor, on device) for z and the codes; 1 — the data untouched — in the ordinary range.

    Large data: max(|z|, |c|)·s <= safe_magnitude (no distance overflows). Tiny data (max < 2^-32,
    products below 2^-64 and their terms lost to underflow): max·s in (1/2, 1], or s = 2^126 at most
    (a subnormal max then lands >= 2^-23); exact whatever the values (a subnormal times a power of two
    that keeps it finite is exact). Non-finite data (only with
    ``check_finite=False`` or a non-finite codebook) and all-zero data keep s = 1.
    """
    limit = safe_magnitude(flat.shape[-1])
    lo_z, hi_z = torch.aminmax(flat)  # max |x| = max(max x, -min x): ~20× faster than a norm of order inf
    lo_c, hi_c = torch.aminmax(codes)
    m = torch.stack([hi_z, -lo_z, hi_c, -lo_c]).max()  # NaN if any value is NaN
    large = torch.isfinite(m) & (m > limit)
    tiny = (m > 0) & (m < _TINY)
    log_m = torch.ceil(torch.log2(torch.where(large | tiny, m, 1.0)))
    exponent = torch.where(large, math.log2(limit) - log_m, (-log_m).clamp(max=126))  # 2^127: float32's last
    return torch.where(large | tiny, torch.exp2(exponent), 1.0)


# -- the float32 search ---------------------------------------------------------------------------------
def _block_shape(n: int, k: int, max_bytes: int) -> tuple[int, int]:
    """(rows, cols) of the float32 search's blocks."""
    budget = max(1, max_bytes // 4)  # float32 entries per block
    if budget >= k * min(n, _MIN_ROWS):
        return max(1, min(n, budget // k)), k
    rows = min(n, _MIN_ROWS)
    return rows, max(1, budget // rows)


@torch.no_grad()
def nearest_code(
    z: Tensor,
    codes: Tensor,
    codes_sqnorm: Tensor | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    precision: SearchPrecision = "auto",
    stats: SearchStats | None = None,
) -> Tensor:
    """Index of the nearest code for each token.

    z: (..., D) float32, codes: (K, D) float32, codes_sqnorm: (K,) optional cache.
    Returns int64 indices of shape z.shape[:-1]. Ties resolve to the lowest index within a
    block and to the earlier block across blocks, so overall to the lowest index (``torch.argmin``'s
    rule). Values too large for float32 distances are rescaled first (module docstring); a given
    ``codes_sqnorm`` must be ``squared_norms(codes)``; it is used as is in the ordinary range and
    recomputed from the rescaled codes otherwise (a cache of huge codes may itself have overflowed).

    precision: "fp32" computes every distance in float32; "bf16" finds the same indices from a
    bfloat16 product, an error bound and a float32 rerank of the codes the bound cannot exclude
    (:mod:`.search_bf16`), where the platform allows it; "auto" does so where it is faster (a CPU with
    bf16 units, K >= 4096, >= 256 tokens). All three return the same indices. Autocast is ignored.
    ``stats``: a :class:`SearchStats` to add this call's counts to.
    """
    if codes.ndim != 2 or z.shape[-1] != codes.shape[1]:
        raise ValueError(f"nearest_code: z {tuple(z.shape)} and codes {tuple(codes.shape)} disagree")
    if max_bytes < 4:
        raise ValueError(f"nearest_code: max_bytes must be positive, got {max_bytes}")
    if precision not in SEARCH_PRECISIONS:
        raise ValueError(f"nearest_code: precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")
    lead = z.shape[:-1]
    flat = z.reshape(-1, z.shape[-1])
    n, k = flat.shape[0], codes.shape[0]
    if n == 0:
        return torch.empty(lead, dtype=torch.long, device=z.device)
    with float32_math(z.device):
        scale = _overflow_scale(flat, codes)  # exact: a power of two, 1 in the ordinary range
        unit = z.device.type == "cpu" and float(scale) == 1.0  # a host sync costs nothing on CPU, a copy does
        if not unit:
            codes = codes * scale
        if codes_sqnorm is None:
            sq = squared_norms(codes)
        else:
            sq = codes_sqnorm if unit else torch.where(scale == 1, codes_sqnorm, squared_norms(codes))
        rows, cols = _block_shape(n, k, max_bytes)
        if use_bf16(precision, z.device, n, k, codes.shape[1], rows, cols):
            out = Bf16Search(codes, sq, n, rows, cols, max_bytes, stats).run(flat, scale)
        else:
            out = torch.empty(n, dtype=torch.long, device=z.device)
            codes_t = codes.t()
            buffer = torch.empty(rows * cols, dtype=flat.dtype, device=z.device)
            for i in range(0, n, rows):
                out[i : i + rows] = fp32_rows(flat[i : i + rows] * scale, codes_t, sq, cols, buffer)
            if stats is not None:
                stats.fp32_tokens += n
                stats.fallback_tokens += n if precision == "bf16" else 0
    return out.reshape(lead)
