"""Integer count tables, the stuff fitted priors are made of, and their checks on load.

Probabilities are computed in float64 from integer counts by one fixed formula, so they are the same bits
on any IEEE platform, and constriction (``perfect=False``, as the decoder must match) turns them into the
same fixed-point model: encoding twice gives the same bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..symbols import NBR_BUCKETS

BACKOFF = 2.0
"""Weight (in pseudo-counts) of a digit's histogram inside each of its contexts."""


@dataclass
class DigitTable:
    """Counts of one digit of one stage: ``marginal`` (R,) and, for the context prior, a CSR
    matrix contexts × symbols (``indptr`` (C+1,), ``symbols`` and ``counts`` (nnz,))."""

    marginal: np.ndarray
    indptr: np.ndarray | None = None
    symbols: np.ndarray | None = None
    counts: np.ndarray | None = None

    def base(self) -> np.ndarray:
        """The digit's histogram with +1/2 per symbol, float64, summing to 1."""
        m = self.marginal.astype(np.float64) + 0.5
        out: np.ndarray = m / m.sum()
        return out

    def row(self, ctx: int, base: np.ndarray) -> np.ndarray:
        """p(symbol | ctx) = (n[ctx, symbol] + BACKOFF·base) / (n[ctx] + BACKOFF)."""
        assert self.indptr is not None and self.symbols is not None and self.counts is not None
        lo, hi = int(self.indptr[ctx]), int(self.indptr[ctx + 1])
        p = base * BACKOFF
        p[self.symbols[lo:hi]] += self.counts[lo:hi]
        return p / (BACKOFF + float(self.counts[lo:hi].sum()))


def get_array(arrays: dict[str, np.ndarray], key: str, shape: tuple[int, ...] | None) -> np.ndarray:
    """``arrays[key]``, ValueError if missing or of another shape."""
    if key not in arrays:
        raise ValueError(f"prior tables: {key} is missing")
    a = arrays[key]
    if shape is not None and a.shape != shape:
        raise ValueError(f"prior tables: {key} has shape {a.shape}, expected {shape}")
    return a


def check_table(t: DigitTable, radix: int, key: str) -> None:
    """ValueError for negative counts or an inconsistent CSR matrix (a damaged or forged file)."""
    if np.any(t.marginal < 0):
        raise ValueError(f"prior tables: {key}.marginal has negative counts")
    if t.indptr is None or t.symbols is None or t.counts is None:
        return
    nnz = len(t.symbols)
    symbols_ok = nnz == 0 or 0 <= int(t.symbols.min()) <= int(t.symbols.max()) < radix
    if (len(t.counts) != nnz or t.indptr[0] != 0 or t.indptr[-1] != nnz or np.any(np.diff(t.indptr) < 0)
            or not symbols_ok or np.any(t.counts < 0)):
        raise ValueError(f"prior tables: {key} is inconsistent")


def buckets(counts: np.ndarray, embeddings: np.ndarray | None, radix: int) -> np.ndarray:
    """uint8 (radix,): codes grouped by the signs of their top principal directions (embeddings), or
    by frequency rank (0 = the most frequent code, then octaves of rank)."""
    if embeddings is not None and embeddings.ndim == 2 and embeddings.shape[0] >= radix:
        x = embeddings[:radix].astype(np.float64)
        x = x - x.mean(0)
        k = int(math.log2(NBR_BUCKETS))
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        signs = (x @ vt[:k].T > 0).astype(np.int64)
        ids = (signs * (1 << np.arange(signs.shape[1]))).sum(1)
        out: np.ndarray = ids.astype(np.uint8)
        return out
    rank = np.empty(radix, np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(radix)
    return np.minimum(np.floor(np.log2(rank + 1)).astype(np.int64), NBR_BUCKETS - 1).astype(np.uint8)


def tables_to_arrays(kind: str, tables: list[list[DigitTable]], arrays: dict[str, np.ndarray]) -> None:
    """Add ``kind``'s tables to ``arrays`` under ``kind.stage.digit.{marginal,indptr,symbols,counts}``."""
    for s, stage in enumerate(tables):
        for j, t in enumerate(stage):
            arrays[f"{kind}.{s}.{j}.marginal"] = t.marginal.astype(np.int64)
            if t.indptr is not None and t.symbols is not None and t.counts is not None:
                arrays[f"{kind}.{s}.{j}.indptr"] = t.indptr.astype(np.int64)
                arrays[f"{kind}.{s}.{j}.symbols"] = t.symbols.astype(np.int32)
                arrays[f"{kind}.{s}.{j}.counts"] = t.counts.astype(np.int64)
