"""Low-level pieces shared by the float32 search (:mod:`.search`) and the exact bf16 one (:mod:`.search_bf16`).

The float32 row-block search proper (:func:`fp32_rows`), the codes' squared norms, and the counters
a call reports (:class:`SearchStats`). Kept apart so that :mod:`.search` imports :mod:`.search_bf16`
and not the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class SearchStats:
    """What :func:`.search.nearest_code` did, accumulated over the calls it is passed to (``stats=``).

    ``candidates`` / ``max_candidates``: codes per token that the bf16 error bound could not exclude
    (summed over tokens / largest), kept by whole groups of 16 and rescored in float32: the price of
    exactness. ``reranked_tokens``: tokens left with two or more codes within float32's own error
    after that rescoring (near-ties, duplicates), decided by the float32 search's ``addmm`` values.
    """

    bf16_tokens: int = 0  # tokens decided by the bf16 search
    fp32_tokens: int = 0  # tokens searched in float32: precision "fp32", or a fallback
    fallback_tokens: int = 0  # of fp32_tokens: the bf16 search was chosen but those tokens ran in float32
    candidates: int = 0
    max_candidates: int = 0
    reranked_tokens: int = 0

    @property
    def mean_candidates(self) -> float:
        return self.candidates / self.bf16_tokens if self.bf16_tokens else 0.0


def squared_norms(codes: Tensor) -> Tensor:
    """(K, D) -> (K,) squared L2 norms, the precomputable half of the distance.

    By pieces of 4096 codes: the same values as ``codes.pow(2).sum(-1)`` (each row's sum is the
    same reduction), ~5× faster on CPU for a large codebook, whose full-size temporary costs page faults.
    """
    if codes.shape[0] <= 4096:
        return codes.pow(2).sum(dim=-1)
    return torch.cat([codes[j : j + 4096].pow(2).sum(dim=-1) for j in range(0, codes.shape[0], 4096)])


def fp32_rows(block: Tensor, codes_t: Tensor, sq: Tensor, cols: int, buffer: Tensor) -> Tensor:
    """Nearest code of each row of ``block`` (already scaled), the float32 search proper."""
    r, k = block.shape[0], codes_t.shape[1]
    if cols == k:
        dist = torch.addmm(sq, block, codes_t, alpha=-2.0, out=buffer[: r * k].view(r, k))
        return dist.argmin(dim=1)
    best_val = torch.full((r,), float("inf"), device=block.device)
    best_idx = torch.zeros(r, dtype=torch.long, device=block.device)
    for j in range(0, k, cols):
        c = min(cols, k - j)
        dist = torch.addmm(sq[j : j + c], block, codes_t[:, j : j + c], alpha=-2.0, out=buffer[: r * c].view(r, c))
        val, idx = dist.min(dim=1)
        better = val < best_val
        best_val = torch.where(better, val, best_val)
        best_idx = torch.where(better, idx + j, best_idx)
    return best_idx
