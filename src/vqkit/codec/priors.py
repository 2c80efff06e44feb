"""Priors over tokens: ``uniform``, ``static`` and ``context``, and the range coding they drive.

* ``uniform``: every digit uniform over its radix — the nominal rate Σ log2 K, within rounding.
* ``static``:  per stage, the symbol counts of the training set. A stage of at most
  :data:`JOINT_MAX` codes is one symbol (a joint histogram); a larger FSQ/LFQ stage is coded
  digit by digit, each with its own histogram.
* ``context``: per stage and digit, counts conditioned on already-decoded data (see
  :mod:`.symbols`): the previous stage at the same position, the neighbours of the same stage in a
  checkerboard order, and the previous digit of the same token; backed off to the digit's own
  histogram so that unseen contexts and symbols stay codable.

Probabilities are computed in float64 from integer counts by one fixed formula, so they are the
same bits on any IEEE platform, and constriction (``perfect=False``, as the decoder must match)
turns them into the same fixed-point model: encoding twice gives the same bytes.

Fitting counts happens once, at the end of training (:meth:`PriorModel.fit`); the tables are
saved beside the model as safetensors (integers only) and enter the model id of every token file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .symbols import (
    NBR_BUCKETS,
    StageSpec,
    context_cardinality,
    neighbours,
    nominal_summary,
    ordinal_summary,
    passes,
)

PRIOR_NAMES = ("uniform", "static", "context")
JOINT_MAX = 1 << 16
"""Stages with at most this many codes get a joint histogram in the static prior."""
BACKOFF = 2.0
"""Weight (in pseudo-counts) of a digit's histogram inside each of its contexts."""

Visit = Callable[[int, int, np.ndarray, "np.ndarray | int"], np.ndarray]
"""(stage, digit, flat positions, probabilities (R,) float64 or the radix of a uniform model)
-> that digit's symbols at those positions."""


def code_length(symbols: np.ndarray, probs: np.ndarray | int) -> float:
    """Ideal bits of ``symbols`` under ``probs`` (R,) — or a uniform model over ``probs`` symbols."""
    if isinstance(probs, int):
        return len(symbols) * math.log2(probs)
    return float(-np.log2(probs[symbols]).sum())


def static_spec(spec: StageSpec) -> StageSpec:
    """The symbolization of the static prior: joint when the stage is small enough."""
    return StageSpec.nominal(spec.size) if spec.size <= JOINT_MAX else spec


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


class PriorModel:
    """Integer tables of the static and context priors of one tokenizer.

    ``specs``: one :class:`StageSpec` per stage (the model's symbolization, from the quantizer).
    ``buckets``: per stage, a uint8 table (radices[0],) mapping a nominal stage's codes to
    :data:`NBR_BUCKETS` groups (None for ordinal stages).
    """

    def __init__(self, specs: Sequence[StageSpec], static: list[list[DigitTable]], context: list[list[DigitTable]],
                 buckets: list[np.ndarray | None]) -> None:
        self.specs = tuple(specs)
        self.static, self.context, self.buckets = static, context, buckets

    @classmethod
    def uniform(cls, specs: Sequence[StageSpec]) -> PriorModel:
        """No tables: the uniform prior needs only the specs (static and context are refused)."""
        return cls(specs, [], [], [])

    # -- fitting ----------------------------------------------------------------------------
    @classmethod
    def fit(cls, specs: Sequence[StageSpec], grids: Iterable[np.ndarray],
            embeddings: Sequence[np.ndarray | None] | None = None) -> PriorModel:
        """Count symbols over token grids (S, *positions) of a training set.

        ``embeddings``: per stage, the codes' vectors (K, d) of nominal stages, used to bucket
        similar codes together for contexts (frequency ranks otherwise).
        """
        grids = [np.asarray(g, dtype=np.int64) for g in grids]
        if not grids:
            raise ValueError("PriorModel.fit: no token grids to count")
        specs = tuple(specs)
        for g in grids:
            _check_grid(g, specs)
        static = []
        for s, spec in enumerate(specs):
            sspec = static_spec(spec)
            digits = np.concatenate([sspec.split(g[s].reshape(-1)) for g in grids], axis=1)
            static.append([DigitTable(np.bincount(digits[j], minlength=r).astype(np.int64))
                           for j, r in enumerate(sspec.radices)])
        buckets: list[np.ndarray | None] = []
        for s, spec in enumerate(specs):
            if spec.ordinal:
                buckets.append(None)
                continue
            emb = embeddings[s] if embeddings is not None else None
            # a nominal stage is its own static symbolization: digit 0's histogram is over radices[0]
            buckets.append(_buckets(static[s][0].marginal, emb, spec.radices[0]))
        empty = [[DigitTable(np.zeros(r, np.int64)) for r in spec.radices] for spec in specs]
        model = cls(specs, static, empty, buckets)
        collected: dict[tuple[int, int], list[np.ndarray]] = {}
        for g in grids:
            for s, j, ctx, sym in model._context_samples(g):
                collected.setdefault((s, j), []).append(ctx * specs[s].radices[j] + sym)
        context = []
        for s, spec in enumerate(specs):
            tables = []
            for j, r in enumerate(spec.radices):
                n_ctx = model._n_contexts(s, j)
                keys = np.concatenate(collected.get((s, j), [np.zeros(0, np.int64)]))
                uniq, counts = np.unique(keys, return_counts=True)
                ctx, sym = np.divmod(uniq, r)
                indptr = np.searchsorted(ctx, np.arange(n_ctx + 1)).astype(np.int64)
                marginal = np.bincount(sym, weights=counts, minlength=r).astype(np.int64)
                tables.append(DigitTable(marginal, indptr, sym.astype(np.int32), counts.astype(np.int64)))
            context.append(tables)
        model.context = context
        return model

    # -- coding -----------------------------------------------------------------------------
    def walk(self, prior: str, grid: tuple[int, ...], tokens: np.ndarray, visit: Visit) -> None:
        """Visit every digit of ``tokens`` (S, *positions) in coding order: ``visit(s, j, positions,
        probs)`` returns the digits at those positions (the encoder reads them; the decoder decodes and they
        are written back here). ``tokens`` is filled in place from those digits."""
        if prior not in PRIOR_NAMES:
            raise ValueError(f"unknown prior {prior!r}; known: {PRIOR_NAMES}")
        if prior != "uniform" and not self.static:
            raise ValueError(f"the {prior} prior needs fitted tables (PriorModel.fit); these have none")
        _check_specs(self.specs, grid)
        positions = grid[1:]
        n = math.prod(positions)
        for s, spec in enumerate(self.specs):
            sym_spec = static_spec(spec) if prior == "static" else spec
            if prior != "context":
                everywhere = np.arange(n)
                digits = np.stack([visit(s, j, everywhere, r if prior == "uniform" else self.static[s][j].base())
                                   for j, r in enumerate(sym_spec.radices)])
                tokens[s] = sym_spec.join(digits).reshape(positions)
                continue
            digits = np.zeros((len(spec.radices), n), np.int64)
            for p, flat in enumerate(passes(positions)):
                if not len(flat):
                    continue
                for j in range(len(spec.radices)):
                    table, ctx = self.context[s][j], self._contexts(tokens, digits, s, j, p, flat, positions)
                    base = table.base()
                    order = np.lexsort((flat, ctx))
                    ctx_sorted, pos_sorted = ctx[order], flat[order]
                    starts = np.flatnonzero(np.r_[True, ctx_sorted[1:] != ctx_sorted[:-1]])
                    for a, b in zip(starts, [*starts[1:], len(order)], strict=True):
                        where = pos_sorted[a:b]
                        digits[j, where] = visit(s, j, where, table.row(int(ctx_sorted[a]), base))
            tokens[s] = spec.join(digits).reshape(positions)

    def symbol_reader(self, prior: str, tokens: np.ndarray) -> Visit:
        """The encoder's ``visit``: reads the digits asked for out of complete ``tokens``."""
        specs = [static_spec(sp) if prior == "static" else sp for sp in self.specs]
        digits = [spec.split(tokens[s].reshape(-1)) for s, spec in enumerate(specs)]

        def visit(s: int, j: int, where: np.ndarray, probs: np.ndarray | int) -> np.ndarray:
            out: np.ndarray = digits[s][j][where]
            return out

        return visit

    def cross_entropy_bits(self, prior: str, tokens: np.ndarray) -> float:
        """Ideal code length (bits) of ``tokens`` (S, *positions) under ``prior``'s float64 model."""
        read, bits = self.symbol_reader(prior, tokens), [0.0]

        def visit(s: int, j: int, where: np.ndarray, probs: np.ndarray | int) -> np.ndarray:
            symbols = read(s, j, where, probs)
            bits[0] += code_length(symbols, probs)
            return symbols

        self.walk(prior, tuple(tokens.shape), np.zeros_like(tokens), visit)
        return bits[0]

    # -- contexts -----------------------------------------------------------------------------
    def _n_contexts(self, s: int, j: int) -> int:
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

    def _context_samples(self, grid: np.ndarray) -> Iterable[tuple[int, int, np.ndarray, np.ndarray]]:
        """(stage, digit, context ids, symbols) of every digit of one training grid."""
        positions = grid.shape[1:]
        for s, spec in enumerate(self.specs):
            digits = spec.split(grid[s].reshape(-1))
            for p, flat in enumerate(passes(positions)):
                for j in range(len(spec.radices)):
                    yield s, j, self._contexts(grid, digits, s, j, p, flat, positions), digits[j][flat]

    # -- storage ------------------------------------------------------------------------------
    def to_arrays(self) -> tuple[dict[str, np.ndarray], str]:
        """(integer arrays, JSON metadata) for safetensors."""
        arrays: dict[str, np.ndarray] = {}
        for kind, tables in (("static", self.static), ("context", self.context)):
            for s, stage in enumerate(tables):
                for j, t in enumerate(stage):
                    arrays[f"{kind}.{s}.{j}.marginal"] = t.marginal.astype(np.int64)
                    if t.indptr is not None and t.symbols is not None and t.counts is not None:
                        arrays[f"{kind}.{s}.{j}.indptr"] = t.indptr.astype(np.int64)
                        arrays[f"{kind}.{s}.{j}.symbols"] = t.symbols.astype(np.int32)
                        arrays[f"{kind}.{s}.{j}.counts"] = t.counts.astype(np.int64)
        for s, b in enumerate(self.buckets):
            if b is not None:
                arrays[f"buckets.{s}"] = b.astype(np.uint8)
        meta = json.dumps({"specs": [spec.to_json() for spec in self.specs], "backoff": BACKOFF,
                           "joint_max": JOINT_MAX, "nbr_buckets": NBR_BUCKETS}, sort_keys=True)
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: str) -> PriorModel:
        """Inverse of :meth:`to_arrays`; every table is checked against the specs (ValueError)."""
        info = json.loads(meta)
        if info.get("backoff") != BACKOFF or info.get("joint_max") != JOINT_MAX or \
                info.get("nbr_buckets") != NBR_BUCKETS:
            raise ValueError("prior tables were fitted with other coding constants than this vqkit uses")
        specs = [StageSpec.from_json(d) for d in info["specs"]]
        model = cls(specs, [], [], [])
        for kind, target in (("static", model.static), ("context", model.context)):
            for s, spec in enumerate(specs):
                radices = (static_spec(spec) if kind == "static" else spec).radices
                stage = []
                for j, r in enumerate(radices):
                    key = f"{kind}.{s}.{j}"
                    t = DigitTable(_get(arrays, f"{key}.marginal", (r,)))
                    if kind == "context":
                        t.indptr = _get(arrays, f"{key}.indptr", (model._n_contexts(s, j) + 1,))
                        t.symbols = _get(arrays, f"{key}.symbols", None)
                        t.counts = _get(arrays, f"{key}.counts", None)
                    _check_table(t, r, key)
                    stage.append(t)
                target.append(stage)
        model.buckets = [None if spec.ordinal else _get(arrays, f"buckets.{s}", (spec.radices[0],))
                         for s, spec in enumerate(specs)]
        for b in model.buckets:
            if b is not None and b.size and int(b.max()) >= NBR_BUCKETS:
                raise ValueError("prior tables: a bucket table holds an id out of range")
        return model


def _get(arrays: dict[str, np.ndarray], key: str, shape: tuple[int, ...] | None) -> np.ndarray:
    if key not in arrays:
        raise ValueError(f"prior tables: {key} is missing")
    a = arrays[key]
    if shape is not None and a.shape != shape:
        raise ValueError(f"prior tables: {key} has shape {a.shape}, expected {shape}")
    return a


def _check_table(t: DigitTable, radix: int, key: str) -> None:
    if np.any(t.marginal < 0):
        raise ValueError(f"prior tables: {key}.marginal has negative counts")
    if t.indptr is None or t.symbols is None or t.counts is None:
        return
    nnz = len(t.symbols)
    symbols_ok = nnz == 0 or 0 <= int(t.symbols.min()) <= int(t.symbols.max()) < radix
    if (len(t.counts) != nnz or t.indptr[0] != 0 or t.indptr[-1] != nnz or np.any(np.diff(t.indptr) < 0)
            or not symbols_ok or np.any(t.counts < 0)):
        raise ValueError(f"prior tables: {key} is inconsistent")


def _buckets(counts: np.ndarray, embeddings: np.ndarray | None, radix: int) -> np.ndarray:
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


def _check_specs(specs: Sequence[StageSpec], grid: tuple[int, ...]) -> None:
    if len(grid) < 2 or grid[0] != len(specs):
        raise ValueError(f"token grid {grid} does not match a model of {len(specs)} stages")


def _check_grid(g: np.ndarray, specs: Sequence[StageSpec]) -> None:
    _check_specs(specs, g.shape)
    for s, spec in enumerate(specs):
        if g[s].size and (g[s].min() < 0 or g[s].max() >= spec.size):
            raise ValueError(f"stage {s}: tokens outside [0, {spec.size})")
