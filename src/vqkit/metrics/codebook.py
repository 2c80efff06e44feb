"""Codebook usage over a whole evaluation set, per stage, summed across ranks.

Per-batch usage (what a quantizer's ``forward`` reports) understates utilization: a code used once
in the whole set counts as used. SimVQ defines utilization as the fraction of codes used at least
once over the validation set, so :class:`CodeUsage` keeps a count per code of every stage as
batches go by and reduces only at the end. Counts, not sets of seen codes: they sum across ranks
with one all-reduce, and they also give the perplexity (exp of the entropy of the code frequencies).

Codebooks up to 2^24 codes are counted in a dense int64 vector on the indices' device. Larger,
implicit codebooks (LFQ with 32 bits: 4·10^9 codes) cannot be; they are counted with
``torch.unique`` and merged into a dict of the codes actually seen, gathered across ranks as objects.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ..distributed import all_reduce_sum, is_distributed

DENSE_LIMIT = 1 << 24


class CodeUsage:
    """Accumulates code counts of indices ``(...)`` (one stage) or ``(..., S)`` (S stages).

    ``codebook_sizes`` is the quantizer's (``Quantizer.codebook_sizes``); its length says whether
    the last axis of the indices is the stage axis.
    """

    def __init__(self, codebook_sizes: tuple[int, ...] | list[int]) -> None:
        sizes = tuple(int(k) for k in codebook_sizes)
        if not sizes or any(k < 1 for k in sizes):
            raise ValueError(f"CodeUsage: codebook sizes must be positive, got {sizes}")
        self.codebook_sizes = sizes
        self._dense: list[Tensor | None] = [None] * len(sizes)
        self._sparse: list[dict[int, int]] = [{} for _ in sizes]

    @property
    def num_stages(self) -> int:
        return len(self.codebook_sizes)

    def _columns(self, indices: Tensor) -> list[Tensor]:
        if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
            raise ValueError(f"CodeUsage: indices must be an integer tensor, got {indices.dtype}")
        if self.num_stages == 1:
            return [indices.reshape(-1)]
        if indices.ndim == 0 or indices.shape[-1] != self.num_stages:
            raise ValueError(f"CodeUsage: expected indices (..., {self.num_stages}), got {tuple(indices.shape)}")
        flat = indices.reshape(-1, self.num_stages)
        return [flat[:, s] for s in range(self.num_stages)]

    @torch.no_grad()
    def update(self, indices: Tensor) -> None:
        """Count every index of this batch; out-of-range indices are an error, not silently dropped."""
        for s, (column, size) in enumerate(zip(self._columns(indices), self.codebook_sizes, strict=True)):
            if column.numel() == 0:
                continue
            column = column.long()
            lo, hi = int(column.min()), int(column.max())
            if lo < 0 or hi >= size:
                raise ValueError(f"CodeUsage: stage {s} indices span [{lo}, {hi}], codebook has {size} codes")
            if size <= DENSE_LIMIT:
                counts = self._dense[s]
                if counts is None:
                    counts = self._dense[s] = torch.zeros(size, dtype=torch.int64, device=column.device)
                counts.index_add_(0, column.to(counts.device), torch.ones_like(column, device=counts.device))
            else:
                codes, n = torch.unique(column, return_counts=True)
                seen = self._sparse[s]
                for code, count in zip(codes.tolist(), n.tolist(), strict=True):
                    seen[code] = seen.get(code, 0) + count

    @torch.no_grad()
    def all_reduce(self) -> None:
        """Sum the counts of every rank (a no-op without an initialised process group).

        Every rank must call it, with the same codebook sizes; a rank that saw no index of a
        stage takes part with zeros.
        """
        if not is_distributed():
            return
        for s, size in enumerate(self.codebook_sizes):
            if size <= DENSE_LIMIT:
                counts = self._dense[s]
                self._dense[s] = all_reduce_sum(counts if counts is not None else torch.zeros(size, dtype=torch.int64))
            else:
                gathered: list[Any] = [None] * dist.get_world_size()
                dist.all_gather_object(gathered, self._sparse[s])
                merged: dict[int, int] = {}
                for part in gathered:
                    for code, count in part.items():
                        merged[code] = merged.get(code, 0) + count
                self._sparse[s] = merged

    def counts(self, stage: int = 0) -> Tensor:
        """int64 counts of the codes of ``stage`` that were used, in descending order (for plots)."""
        dense = self._dense[stage]
        if dense is not None:
            used = dense[dense > 0].cpu()
        else:
            used = torch.tensor(list(self._sparse[stage].values()), dtype=torch.int64)
        return used.sort(descending=True).values

    def result(self) -> dict[str, Any]:
        """``usage`` (fraction of codes used at least once) and ``perplexity`` per stage and their means.

        Keys: ``usage``, ``perplexity`` (means over stages), ``usage_per_stage``,
        ``perplexity_per_stage`` (lists), ``tokens`` (indices counted per stage) and
        ``usage_ceiling``: the mean over stages of min(1, tokens / K), the most that ``tokens``
        indices could use — 16k tokens can use at most a quarter of 65k codes.
        """
        usage, perplexity, tokens = [], [], 0
        for s, size in enumerate(self.codebook_sizes):
            used = self.counts(s).double()
            total = float(used.sum())
            tokens = max(tokens, int(total))
            if total == 0:
                usage.append(0.0)
                perplexity.append(0.0)
                continue
            probs = used / total
            entropy = float(-(probs * probs.log()).sum())
            usage.append(used.numel() / size)
            perplexity.append(math.exp(entropy))
        ceiling = [min(1.0, tokens / size) for size in self.codebook_sizes]
        return {
            "usage": sum(usage) / len(usage), "perplexity": sum(perplexity) / len(perplexity),
            "usage_per_stage": usage, "perplexity_per_stage": perplexity, "tokens": tokens,
            "usage_ceiling": sum(ceiling) / len(ceiling),
        }


__all__ = ["DENSE_LIMIT", "CodeUsage"]
