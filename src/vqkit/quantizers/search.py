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

Overflow: no entry of ||c||² - 2 z·c overflows float32 when max(|z|, |c|) stays below
:func:`safe_magnitude` (2^60 for D = 8, 2^55 for D = 2^14). Above it, z and the codes are both
multiplied by one power of two that brings them under it: exact, the argmin is scale-invariant,
and nothing is lost but terms below float32's resolution of the largest one. No host sync: the
scale is chosen on the device, and it is 1 — the data untouched — in the ordinary range.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

DEFAULT_MAX_BYTES = 32 * 2**20
"""Default budget for the block of distances (32 MiB): measured as fast as larger blocks on 2 CPU
cores; blocks of fewer than ~256 rows lose matrix-product efficiency."""

_MIN_ROWS = 64  # below this many tokens per block the matrix product loses efficiency


def check_search_bytes(owner: str, search_bytes: int) -> int:
    """A quantizer's ``search_bytes``, refused at construction unless it holds one float32 distance."""
    if isinstance(search_bytes, bool) or int(search_bytes) != search_bytes or search_bytes < 4:
        raise ValueError(f"{owner}: search_bytes must be an integer >= 4 (one float32 distance), got {search_bytes!r}")
    return int(search_bytes)


def squared_norms(codes: Tensor) -> Tensor:
    """(K, D) -> (K,) squared L2 norms, the precomputable half of the distance."""
    return codes.pow(2).sum(dim=-1)


def safe_magnitude(dim: int) -> float:
    """Largest max(|z|, |c|) (a power of two) for which no distance entry can overflow float32.

    |·| ≤ m gives ||c||² ≤ D·m² and |2 z·c| ≤ 2D·m², so each entry and every partial sum stays
    below 3D·m² ≤ 2^126, half of float32's largest finite value.
    """
    return 2.0 ** ((126 - math.ceil(math.log2(3 * max(1, dim)))) // 2)


def _overflow_scale(flat: Tensor, codes: Tensor) -> Tensor:
    """A power of two s (0-d tensor, on device) with max(|z|, |c|)·s ≤ safe_magnitude; 1 when already so.

    Non-finite data (only with ``check_finite=False`` or a non-finite codebook) keep s = 1.
    """
    limit = safe_magnitude(flat.shape[-1])
    inf = float("inf")
    m = torch.maximum(torch.linalg.vector_norm(flat, ord=inf), torch.linalg.vector_norm(codes, ord=inf))
    need = torch.isfinite(m) & (m > limit)
    exponent = math.log2(limit) - torch.ceil(torch.log2(torch.where(need, m, 1.0)))
    return torch.where(need, torch.exp2(exponent), 1.0)


@torch.no_grad()
def nearest_code(
    z: Tensor,
    codes: Tensor,
    codes_sqnorm: Tensor | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Tensor:
    """Index of the nearest code for each token.

    z: (..., D) float32, codes: (K, D) float32, codes_sqnorm: (K,) optional cache.
    Returns int64 indices of shape z.shape[:-1]. Ties resolve to the lowest index within a
    block and to the earlier block across blocks, so overall to the lowest index (``torch.argmin``'s
    rule). Values too large for float32 distances are rescaled first (module docstring); a given
    ``codes_sqnorm`` must be ``squared_norms(codes)``; it is used as is in the ordinary range and
    recomputed from the rescaled codes otherwise (a cache of huge codes may itself have overflowed).
    """
    if codes.ndim != 2 or z.shape[-1] != codes.shape[1]:
        raise ValueError(f"nearest_code: z {tuple(z.shape)} and codes {tuple(codes.shape)} disagree")
    if max_bytes < 4:
        raise ValueError(f"nearest_code: max_bytes must be positive, got {max_bytes}")
    lead = z.shape[:-1]
    flat = z.reshape(-1, z.shape[-1])
    n, k = flat.shape[0], codes.shape[0]
    if n == 0:
        return torch.empty(lead, dtype=torch.long, device=z.device)
    scale = _overflow_scale(flat, codes)  # exact: a power of two, 1 in the ordinary range
    codes = codes * scale
    sq = squared_norms(codes) if codes_sqnorm is None else torch.where(scale == 1, codes_sqnorm, squared_norms(codes))
    budget = max(1, max_bytes // 4)  # float32 entries per block
    if budget >= k * min(n, _MIN_ROWS):
        rows, cols = max(1, min(n, budget // k)), k
    else:
        rows = min(n, _MIN_ROWS)
        cols = max(1, budget // rows)
    out = torch.empty(n, dtype=torch.long, device=z.device)
    codes_t = codes.t()
    buffer = torch.empty(rows * cols, dtype=flat.dtype, device=z.device)
    for i in range(0, n, rows):
        block = flat[i : i + rows] * scale  # per block: no full-size copy of z
        r = block.shape[0]
        if cols == k:
            dist = torch.addmm(sq, block, codes_t, alpha=-2.0, out=buffer[: r * k].view(r, k))
            out[i : i + rows] = dist.argmin(dim=1)
            continue
        best_val = torch.full((r,), float("inf"), device=z.device)
        best_idx = torch.zeros(r, dtype=torch.long, device=z.device)
        for j in range(0, k, cols):
            c = min(cols, k - j)
            dist = torch.addmm(sq[j : j + c], block, codes_t[:, j : j + c], alpha=-2.0, out=buffer[: r * c].view(r, c))
            val, idx = dist.min(dim=1)
            better = val < best_val
            best_val = torch.where(better, val, best_val)
            best_idx = torch.where(better, idx + j, best_idx)
        out[i : i + rows] = best_idx
    return out.reshape(lead)
