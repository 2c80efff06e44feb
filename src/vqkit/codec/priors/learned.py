"""The learned prior: each FSQ/LFQ digit's distribution predicted by a small network from what is already
decoded — the neighbours of the same stage in the checkerboard order of :mod:`..symbols`, the digits
before it in the same token, and the previous stage at the same position — instead of counted.

**Bit-exact across machines and thread counts.** A decoder must rebuild the encoder's probabilities to the
last bit, so inference is integer arithmetic only: inputs are the digits themselves (centred: 2d − (R − 1)),
weights are fixed-point integers (:data:`FW` fraction bits), the hidden layer is floored to :data:`FH`
fraction bits, logits to :data:`FL`, and the softmax is a lookup in a stored integer table of exp(−k / 2^FL)
(computed once when fitted, then stored: no ``exp`` at decode). Every table entry is at least 1, so no
symbol ever gets probability zero. The weights' bounds are checked when loaded so that every sum of products
is an integer below 2^53 in magnitude: the two matrix products run in float64 BLAS (10× numpy's int64
loops), where every product and every partial sum of such integers is exact, so the result is the same
integer in any summation order, blocking, FMA use or thread count — then back to int64 for the floors and
the table.

Fitting trains the same network in float32 with torch (cross-entropy, Adam) on token grids of the
training set, then rounds the weights: the rate it is judged by is the integer model's.
Per stage and digit one MLP ``features -> HIDDEN (ReLU) -> R logits``; its features:

* the four (2-D) or 2·rank neighbours' digits of the same stage, all of them, masked to 0 where there is
  no neighbour yet (pass 0) or beyond the border, plus one validity flag per neighbour;
* the same token's digits before this one (the later ones 0);
* the previous stage's digits at this position (0 for stage 0);
* the pass, one-hot.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from ..symbols import StageSpec, neighbours, passes
from .base import Prior, Visit
from .counts import get_array

FW, FH, FL = 12, 8, 5
"""Fraction bits of the weights, the hidden layer and the logits."""
LOGIT_SPAN = 20
"""Logits more than this many nats below the largest share the table's last entry (probability ≈ e^-20)."""
EXP_ONE = 1 << 24
"""exp(0) in the softmax table; entries are round(EXP_ONE · exp(−k / 2^FL)), at least 1."""
HIDDEN = 32
WEIGHT_CAP = 1 << 24
"""|integer weight| bound checked on load; with the features' bound (:func:`feature_bound`) and hidden ≤ 2^20
every sum stays below 2^53 (checked too), so float64 products are exact."""
EXACT = 1 << 53
"""Integers of smaller magnitude are exact in float64, and so are their sums while they stay below it."""
HIDDEN_CAP = (1 << 20) - 1
CHUNK = 1 << 14
"""Positions whose features are built at once (coding order is the same for any chunking; memory is not)."""


def exp_table() -> np.ndarray:
    """(LOGIT_SPAN · 2^FL + 1,) int64: round(EXP_ONE · exp(−k / 2^FL)), each at least 1."""
    k = np.arange(LOGIT_SPAN * (1 << FL) + 1, dtype=np.float64)
    return np.maximum(np.round(EXP_ONE * np.exp(-k / (1 << FL))), 1).astype(np.int64)


def n_passes(rank: int) -> int:
    """Passes of the checkerboard order of :func:`..symbols.passes` for grids of ``rank`` axes."""
    return 3 if rank == 2 else 2


def _neighbours_of(rank: int) -> int:
    return 4 if rank == 2 else 2 * rank


def n_features(spec: StageSpec, prev: StageSpec | None, rank: int) -> int:
    d, m = len(spec.radices), _neighbours_of(rank)
    return m * (d + 1) + d + (len(prev.radices) if prev is not None else 0) + n_passes(rank)


def feature_bound(spec: StageSpec, prev: StageSpec | None) -> int:
    """The largest |feature| of a stage's digits: a centred digit 2d − (R − 1) is at most R − 1; flags are 1."""
    return int(max([1, *(r - 1 for r in spec.radices), *((r - 1 for r in prev.radices) if prev else ())]))


def _centred(digits: np.ndarray, radix: int | np.ndarray) -> np.ndarray:
    return 2 * digits - (radix - 1)


def base_features(spec: StageSpec, prev: StageSpec | None, digits: np.ndarray, prev_tokens: np.ndarray | None,
                  p: int, flat: np.ndarray, positions: tuple[int, ...]) -> np.ndarray:
    """Integer features (n, F) at positions ``flat`` of pass ``p`` with the same token's digits left 0: what
    every digit of the pass shares (its neighbours are decoded in earlier passes). ``digits`` (D, N) the
    stage's digits (only those already decoded are read), ``prev_tokens`` (N,) the previous stage's tokens or
    None."""
    d, n = len(spec.radices), len(flat)
    nbr, valid = neighbours(positions, p, flat)
    radices = np.array(spec.radices, np.int64)[:, None, None]
    nd = _centred(digits[:, nbr], radices) * valid[None]  # (D, n, m)
    parts = [nd.transpose(1, 2, 0).reshape(n, -1), valid.astype(np.int64), np.zeros((n, d), np.int64)]
    if prev is not None:
        assert prev_tokens is not None
        pd = prev.split(prev_tokens[flat])
        parts.append(np.stack([_centred(pd[i], r) for i, r in enumerate(prev.radices)], 1))
    onehot = np.zeros((n, n_passes(len(positions))), np.int64)
    onehot[:, p] = 1
    parts.append(onehot)
    return np.concatenate(parts, axis=1)


def set_intra(x: np.ndarray, spec: StageSpec, digits: np.ndarray, j: int, flat: np.ndarray, rank: int) -> np.ndarray:
    """Fill in place the columns of the same token's digits before ``j`` (the later ones stay 0); returns x."""
    start = _neighbours_of(rank) * (len(spec.radices) + 1)
    for i in range(j):
        x[:, start + i] = _centred(digits[i, flat], spec.radices[i])
    return x


def features(spec: StageSpec, prev: StageSpec | None, digits: np.ndarray, prev_tokens: np.ndarray | None,
             j: int, p: int, flat: np.ndarray, positions: tuple[int, ...]) -> np.ndarray:
    """Integer features (n, F) of digit ``j`` at positions ``flat`` of pass ``p`` (:func:`base_features` with the
    token's digits before ``j``)."""
    x = base_features(spec, prev, digits, prev_tokens, p, flat, positions)
    return set_intra(x, spec, digits, j, flat, len(positions))


class IntMLP:
    """One digit's network in fixed point: w1 (H, F), b1 (H,) at 2^FW; w2 (R, H) at 2^FW, b2 (R,) at 2^(FW+FH)."""

    def __init__(self, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray, *, x_max: int) -> None:
        for name, a in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)):
            cap = WEIGHT_CAP << (FH if name == "b2" else 0)  # min/max, not abs: abs(INT64_MIN) is negative
            if a.dtype != np.int64 or (a.size and (a.min() < -cap or a.max() > cap)):
                raise ValueError(f"learned prior: {name} is not int64 within the fixed-point bounds")
        # every partial sum of the two products, bounded by the sum of the magnitudes (x_max: |feature| bound)
        if w1.shape[1] * x_max * WEIGHT_CAP + WEIGHT_CAP >= EXACT or w2.shape[1] * HIDDEN_CAP * WEIGHT_CAP >= EXACT:
            raise ValueError("learned prior: these features and weights could reach 2^53: not exact in float64")
        self.w1, self.b1, self.w2, self.b2 = w1, b1, w2, b2
        self._w1t, self._w2t = w1.T.astype(np.float64), w2.T.astype(np.float64)  # exact: |w| ≤ 2^24

    def weights(self, x: np.ndarray, table: np.ndarray) -> np.ndarray:
        """Integer features (n, F), |x| ≤ ``x_max`` (the features' bound, :func:`feature_bound`) -> unnormalised
        integer probabilities (n, R), each at least 1. The products are float64 BLAS on integers below 2^53:
        exact, so the same on every machine."""
        h = np.clip((x.astype(np.float64) @ self._w1t).astype(np.int64) + self.b1 >> (FW - FH), 0, HIDDEN_CAP)
        logits = (h.astype(np.float64) @ self._w2t).astype(np.int64) + self.b2 >> (FW + FH - FL)
        gap = np.minimum(logits.max(axis=1, keepdims=True) - logits, len(table) - 1)
        out: np.ndarray = table[gap]
        return out


class Learned(Prior):
    """Integer MLPs per stage and digit (``nets[s][j]``) for grids of spatial ``rank``; ordinal stages only."""

    name = "learned"

    def __init__(self, specs: Sequence[StageSpec], nets: list[list[IntMLP]], table: np.ndarray, rank: int) -> None:
        super().__init__(specs)
        if not all(spec.ordinal for spec in self.specs):
            raise ValueError("the learned prior models FSQ/LFQ digits: every stage must be ordinal")
        self.nets, self.table, self.rank = nets, table, rank

    def _prev(self, s: int) -> StageSpec | None:
        return self.specs[s - 1] if s else None

    def _walk(self, tokens: np.ndarray, positions: tuple[int, ...], visit: Visit) -> None:
        if len(positions) != self.rank:
            raise ValueError(f"learned prior fitted on {self.rank}-D token grids, got a {len(positions)}-D one")
        n = int(np.prod(positions))
        for s, spec in enumerate(self.specs):
            digits = np.zeros((len(spec.radices), n), np.int64)
            prev = tokens[s - 1].reshape(-1) if s else None
            for p, whole in enumerate(passes(positions)):
                chunks = [whole[a : a + CHUNK] for a in range(0, len(whole), CHUNK)]  # bounded memory
                shared = None  # a pass of one chunk: the features all its digits share are built once
                if len(chunks) == 1:
                    shared = base_features(spec, self._prev(s), digits, prev, p, whole, positions)
                for j in range(len(spec.radices)):
                    for flat in chunks:
                        if shared is not None:
                            x = set_intra(shared, spec, digits, j, flat, self.rank)
                        else:
                            x = features(spec, self._prev(s), digits, prev, j, p, flat, positions)
                        probs = self.nets[s][j].weights(x, self.table).astype(np.float64)
                        digits[j, flat] = visit(s, j, flat, probs)
            tokens[s] = spec.join(digits).reshape(positions)

    # -- fitting ----------------------------------------------------------------------------
    @classmethod
    def samples(cls, specs: Sequence[StageSpec], grids: Sequence[np.ndarray], s: int, j: int,
                rng: np.random.Generator, share: float = 1.0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(features, symbols) of digit j of stage s over ``grids``, as the walk will compute them, at a random
        ``share`` of each pass's positions (features are built for the chosen positions only)."""
        spec, prev = specs[s], specs[s - 1] if s else None
        for grid in grids:
            positions = tuple(grid.shape[1:])
            digits = spec.split(grid[s].reshape(-1))
            prev_tokens = grid[s - 1].reshape(-1) if s else None
            for p, flat in enumerate(passes(positions)):
                if share < 1.0:
                    flat = np.sort(rng.choice(flat, int(np.ceil(share * len(flat))), replace=False))
                if len(flat):
                    yield features(spec, prev, digits, prev_tokens, j, p, flat, positions), digits[j][flat]

    @classmethod
    def fit(cls, specs: Sequence[StageSpec], grids: Sequence[np.ndarray], max_samples: int = 200_000,
            steps: int = 600, seed: int = 0) -> Learned:
        """Train one network per stage and digit on about ``max_samples`` digits each (positions drawn at
        random before any feature is built: memory does not grow with the training set), then round it."""
        from .learned_fit import train_mlp

        if not grids:
            raise ValueError("Learned.fit: no token grids")
        rank = grids[0].ndim - 1
        rng = np.random.default_rng(seed)
        share = min(1.0, max_samples / max(1, sum(int(np.prod(g.shape[1:])) for g in grids)))
        nets = []
        for s, spec in enumerate(specs):
            stage = []
            for j, r in enumerate(spec.radices):
                xs, ys = zip(*cls.samples(specs, grids, s, j, rng, share), strict=True)
                x, y = np.concatenate(xs), np.concatenate(ys)
                stage.append(train_mlp(x, y, r, HIDDEN, steps, seed + 1000 * s + j,
                                       feature_bound(spec, specs[s - 1] if s else None)))
            nets.append(stage)
        return cls(specs, nets, exp_table(), rank)

    # -- storage ------------------------------------------------------------------------------
    def to_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        arrays["learned.exp"] = self.table
        arrays["learned.rank"] = np.array([self.rank], np.int64)
        for s, stage in enumerate(self.nets):
            for j, net in enumerate(stage):
                for part in ("w1", "b1", "w2", "b2"):
                    arrays[f"learned.{s}.{j}.{part}"] = getattr(net, part)

    @classmethod
    def from_arrays(cls, specs: Sequence[StageSpec], arrays: dict[str, np.ndarray]) -> Learned:
        table = get_array(arrays, "learned.exp", (LOGIT_SPAN * (1 << FL) + 1,))
        if table.dtype != np.int64 or table.min() < 1 or table.max() > EXP_ONE:
            raise ValueError("prior tables: learned.exp is not a table of positive integers")
        rank = int(get_array(arrays, "learned.rank", (1,))[0])
        if not 1 <= rank <= 4:
            raise ValueError(f"prior tables: learned.rank {rank} out of range")
        nets = []
        for s, spec in enumerate(specs):
            prev = specs[s - 1] if s else None
            f, x_max = n_features(spec, prev, rank), feature_bound(spec, prev)
            nets.append([IntMLP(get_array(arrays, f"learned.{s}.{j}.w1", (HIDDEN, f)),
                                get_array(arrays, f"learned.{s}.{j}.b1", (HIDDEN,)),
                                get_array(arrays, f"learned.{s}.{j}.w2", (r, HIDDEN)),
                                get_array(arrays, f"learned.{s}.{j}.b2", (r,)), x_max=x_max)
                         for j, r in enumerate(spec.radices)])
        return cls(specs, nets, table, rank)
