"""The context prior: per stage and digit, counts conditioned on already-decoded data (see
:mod:`..symbols`) — the previous stage at the same position, the neighbours of the same stage in a
checkerboard order, and the previous digit of the same token — backed off to the digit's own histogram
so that unseen contexts and symbols stay codable.

``buckets``: per nominal stage, a uint8 table (radices[0],) that maps its codes to
:data:`~..symbols.NBR_BUCKETS` groups (by the code vectors' principal directions where the quantizer
gives them, by frequency rank otherwise); None for ordinal stages.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..symbols import (
    NBR_BUCKETS,
    StageSpec,
    context_cardinality,
    neighbours,
    nominal_summary,
    ordinal_summary,
    passes,
)
from .base import Prior, Visit
from .counts import DigitTable, buckets, check_table, get_array, tables_to_arrays


class Context(Prior):
    name = "context"

    def __init__(self, specs: Sequence[StageSpec], tables: list[list[DigitTable]],
                 bucket_tables: list[np.ndarray | None]) -> None:
        super().__init__(specs)
        self.tables, self.buckets = tables, bucket_tables

    # -- fitting ----------------------------------------------------------------------------
    @classmethod
    def fit(cls, specs: Sequence[StageSpec], grids: Sequence[np.ndarray],
            embeddings: Sequence[np.ndarray | None] | None = None) -> Context:
        """Count every digit in its context over checked token grids (S, *positions); ``embeddings``:
        per stage, the codes' vectors (K, d) of nominal stages (None: group codes by frequency)."""
        bucket_tables: list[np.ndarray | None] = []
        for s, spec in enumerate(specs):
            if spec.ordinal:
                bucket_tables.append(None)
                continue
            first = np.concatenate([spec.split(g[s].reshape(-1))[0] for g in grids])
            emb = embeddings[s] if embeddings is not None else None
            bucket_tables.append(buckets(np.bincount(first, minlength=spec.radices[0]), emb, spec.radices[0]))
        model = cls(specs, [], bucket_tables)
        collected: dict[tuple[int, int], list[np.ndarray]] = {}
        for g in grids:
            for s, j, ctx, sym in model._samples(g):
                collected.setdefault((s, j), []).append(ctx * specs[s].radices[j] + sym)
        for s, spec in enumerate(specs):
            stage = []
            for j, r in enumerate(spec.radices):
                keys = np.concatenate(collected.get((s, j), [np.zeros(0, np.int64)]))
                uniq, counts = np.unique(keys, return_counts=True)
                ctx, sym = np.divmod(uniq, r)
                indptr = np.searchsorted(ctx, np.arange(model.n_contexts(s, j) + 1)).astype(np.int64)
                marginal = np.bincount(sym, weights=counts, minlength=r).astype(np.int64)
                stage.append(DigitTable(marginal, indptr, sym.astype(np.int32), counts.astype(np.int64)))
            model.tables.append(stage)
        return model

    # -- coding -----------------------------------------------------------------------------
    def _walk(self, tokens: np.ndarray, positions: tuple[int, ...], visit: Visit) -> None:
        n = int(np.prod(positions))
        for s, spec in enumerate(self.specs):
            digits = np.zeros((len(spec.radices), n), np.int64)
            for p, flat in enumerate(passes(positions)):
                if not len(flat):
                    continue
                for j in range(len(spec.radices)):
                    table, ctx = self.tables[s][j], self._contexts(tokens, digits, s, j, p, flat, positions)
                    base = table.base()
                    order = np.lexsort((flat, ctx))
                    ctx_sorted, pos_sorted = ctx[order], flat[order]
                    starts = np.flatnonzero(np.r_[True, ctx_sorted[1:] != ctx_sorted[:-1]])
                    for a, b in zip(starts, [*starts[1:], len(order)], strict=True):
                        where = pos_sorted[a:b]
                        digits[j, where] = visit(s, j, where, table.row(int(ctx_sorted[a]), base))
            tokens[s] = spec.join(digits).reshape(positions)

    # -- contexts -----------------------------------------------------------------------------
    def n_contexts(self, s: int, j: int) -> int:
        a, b, c = context_cardinality(self.specs[s], j, self.specs[s - 1] if s else None)
        return 3 * a * b * c

    def _contexts(self, tokens: np.ndarray, digits: np.ndarray, s: int, j: int, p: int, flat: np.ndarray,
                  positions: tuple[int, ...]) -> np.ndarray:
        """Context ids of digit j of stage s at positions ``flat`` (pass p), from coded data only."""
        spec, prev = self.specs[s], self.specs[s - 1] if s else None
        a, b, c = context_cardinality(spec, j, prev)
        zero = np.zeros(len(flat), np.int64)
        if spec.ordinal:
            cprev = prev.split(tokens[s - 1].reshape(-1)[flat])[j] if a > 1 and prev is not None else zero
            nbr, valid = neighbours(positions, p, flat)
            cnbr = ordinal_summary(digits[j][nbr], valid, spec.radices[j])
            cintra = digits[j - 1][flat] if j > 0 else zero
        elif j == 0:
            table = self.buckets[s]
            assert table is not None
            if a > 1:
                prev_table = self.buckets[s - 1]
                assert prev_table is not None and prev is not None
                cprev = prev_table[tokens[s - 1].reshape(-1)[flat] % prev.radices[0]].astype(np.int64)
            else:
                cprev = zero
            nbr, valid = neighbours(positions, p, flat)
            cnbr = nominal_summary(table[digits[0][nbr]].astype(np.int64), valid)
            cintra = zero
        else:
            cprev = cnbr = cintra = zero
        ids: np.ndarray = ((p * a + cprev) * b + cnbr) * c + cintra
        return ids

    def _samples(self, grid: np.ndarray) -> Iterable[tuple[int, int, np.ndarray, np.ndarray]]:
        """(stage, digit, context ids, symbols) of every digit of one training grid."""
        positions = grid.shape[1:]
        for s, spec in enumerate(self.specs):
            digits = spec.split(grid[s].reshape(-1))
            for p, flat in enumerate(passes(positions)):
                for j in range(len(spec.radices)):
                    yield s, j, self._contexts(grid, digits, s, j, p, flat, positions), digits[j][flat]

    # -- storage ------------------------------------------------------------------------------
    def to_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        tables_to_arrays(self.name, self.tables, arrays)
        for s, b in enumerate(self.buckets):
            if b is not None:
                arrays[f"buckets.{s}"] = b.astype(np.uint8)

    @classmethod
    def from_arrays(cls, specs: Sequence[StageSpec], arrays: dict[str, np.ndarray]) -> Context:
        model = cls(specs, [], [None if spec.ordinal else get_array(arrays, f"buckets.{s}", (spec.radices[0],))
                                for s, spec in enumerate(specs)])
        for b in model.buckets:
            if b is not None and b.size and int(b.max()) >= NBR_BUCKETS:
                raise ValueError("prior tables: a bucket table holds an id out of range")
        for s, spec in enumerate(specs):
            stage = []
            for j, r in enumerate(spec.radices):
                key = f"{cls.name}.{s}.{j}"
                t = DigitTable(get_array(arrays, f"{key}.marginal", (r,)),
                               get_array(arrays, f"{key}.indptr", (model.n_contexts(s, j) + 1,)),
                               get_array(arrays, f"{key}.symbols", None), get_array(arrays, f"{key}.counts", None))
                check_table(t, r, key)
                stage.append(t)
            model.tables.append(stage)
        return model
