"""Exact nearest-code search with a bfloat16 product: the float32 search's indices, ties included.

Run by :func:`.search.nearest_code` for ``precision="bf16"``; ``"auto"`` picks it on a CPU with
AVX512-BF16 or AMX for K >= 4096 codes and >= 256 tokens.

The bound (:mod:`.search_bound`): every bf16 score s is within A_t + ρ|s| of the float32 search's
y = -d32/2, and a float32 rescore within F_t of the exact z·c - sq/2, whatever the order and blocking
of the float32 sums.

Why the result is exact. With M_t the token's best score, code j can be the float32 argmin only if
its upper bound s_j + A_t + ρ|s_j| reaches the best one's lower bound M_t - A_t - ρ|M_t|, i.e. only
if M_t - s_j <= W_t = (2·A_t + 2ρ|M_t|)/(1 - ρ). The scores are reduced while in cache to maxima of
groups of 16 codes (and of 256); the groups whose maximum reaches M_t - W_t (rounded outward) keep
their codes — the "candidates", ~2 groups a token on Gaussian data, the price of exactness — which
are rescored in float32 from z and the codes (error <= F_t, like y: their rescores v are within 2·F_t
of y), and a candidate stays only if v_j >= max v - 4·F_t. A token left with one code has its
answer; a token left with several (codes within float32's own error: duplicates, near-ties) is
decided by the float32 search's very ``addmm`` — same row block, same scaled z, same ``sq`` — on
the gathered candidates, lowest index on ties. The indices are the float32 search's, ties
included, provided the BLAS gives an entry the same value whatever the number (>= 16) of columns
of the call. MKL's sgemm does so up to a depth of 768 here (1 or 2 threads, 16 to 2048 rows), not
from 800 on (at D = 1024, 2048, 8192 a call of 16..128 columns blocks the depth otherwise than a
wide one), so the bf16 search runs for D <= 512 only (``_MAX_DIM``); the column independence at
D = 512 and the bf16 product's float32 accumulation over that depth are checked once per process by
:func:`reduced_precision_available`; where a check fails the search stays float32. Float32 also
runs for row blocks of < 16 tokens and a last code block of < 16 codes (MKL's small-matrix kernels
round differently), non-finite data, and where the bound keeps more than 32 groups a token on
average (data far from the origin, where bf16 cannot resolve the distances) or the rerank would
cost as much as the float32 blocks.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import search_bound as bound
from .base import float32_math
from .search_blocks import SearchStats, fp32_rows, squared_norms

_GROUP = 16  # codes per candidate group: codes [16·i, 16·i + 16) form group i
_FAN = 16  # groups per group of the second level (256 codes)
_MIN_STD = 16  # smaller row or column blocks may use BLAS small-matrix kernels with other rounding
_MIN_GATHER = 64  # columns of the float32 rerank product, at least (padded with repeated codes)
_MAX_GROUPS_PER_TOKEN = 32  # candidate groups a token may keep on average before its tokens run in float32
_SPAN = 2048  # tokens per bf16 pass, at most (whole float32 row blocks)
_SCORE_BLOCK_BYTES = 8 * 2**20  # bf16 scores per product: reduced to group maxima while still in cache (L3)
_AUTO_MIN_CODES = 4096  # "auto" uses the bf16 product from this many codes ...
_AUTO_MIN_TOKENS = 256  # ... and this many tokens; below, converting the codebook costs what it saves
_MAX_DIM = 512  # deeper products: MKL's sgemm rounds an entry differently in narrow and wide calls
_RHO = bound.RHO


# -- platform checks ----------------------------------------------------------------------------------
_AVAILABLE: dict[str, bool] = {}


def _cpu_has_bf16_units() -> bool:
    """AVX512-BF16 or AMX: where a bf16 product runs ~2× faster than a float32 one."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def reduced_precision_available(device: torch.device | str = "cpu") -> bool:
    """Whether the exact bf16 search can run on ``device`` (CPU only); measured once per process.

    Two facts the exactness rests on are checked on small products: the bf16 matrix product
    accumulates in float32 (1 + 127·2^-9 survives, where a bf16 accumulator would return 1; over a
    depth of 514, 1 + 3·2^-9 survives, where bf16 partial sums between depth blocks would drop each
    term), and the float32 ``addmm`` gives an entry the same value whatever the number of columns
    (>= 16) of the call, at D = 37 and D = 512. CUDA is not enabled: cuBLAS chooses kernels (split-K
    among them) by shape, so the second fact does not hold there.
    """
    device = torch.device(device)
    if device.type != "cpu":
        return False
    if "cpu" not in _AVAILABLE:
        with torch.no_grad(), float32_math(device):
            _AVAILABLE["cpu"] = _probe_cpu()
    return _AVAILABLE["cpu"]


def _probe_cpu() -> bool:
    try:
        for rows, cols, depth in ((16, 64, 132), (128, 1024, 132)):
            a = torch.zeros(rows, depth, dtype=torch.bfloat16)
            a[:, 0], a[:, 1:128] = 1.0, 2.0**-9
            got = torch.mm(a, torch.ones(cols, depth, dtype=torch.bfloat16).t())
            if not bool((got.float() == 1.25).all()):  # 1 + 127/512 = 1.248..., rounded to bf16
                return False
        depth = _MAX_DIM + 2  # 1 and three terms of 2^-9, 256 apart: a bf16 partial sum per depth block
        a = torch.zeros(64, depth, dtype=torch.bfloat16)  # of <= 256 would drop each (1 + 2^-9 -> 1)
        a[:, 0], a[:, [1, depth // 2, depth - 1]] = 1.0, 2.0**-9
        got = torch.mm(a, torch.ones(256, depth, dtype=torch.bfloat16).t())
        if not bool((got.float() == 1 + 2.0**-7).all()):  # 1 + 3/512 = 1.0059, rounded to bf16
            return False
        g = torch.Generator().manual_seed(0)
        for rows, k, d in ((48, 300, 37), (256, 2048, _MAX_DIM)):  # d = 512: MKL blocks the depth (>= 192)
            z, codes = torch.randn(rows, d, generator=g), torch.randn(k, d, generator=g) + 1
            sq = squared_norms(codes)
            full = torch.addmm(sq, z, codes.t(), alpha=-2.0)
            for width in (16, 64, 77, 128):
                pick = torch.randperm(k, generator=g)[:width].sort().values
                part = torch.addmm(sq[pick], z, codes[pick].t(), alpha=-2.0)
                if not torch.equal(part, full[:, pick]):
                    return False
        return True
    except RuntimeError:
        return False


def use_bf16(precision: str, device: torch.device, n: int, k: int, d: int, rows: int, cols: int) -> bool:
    """Whether :func:`.search.nearest_code` runs the bf16 search: n tokens, K codes of D, (rows, cols) blocks."""
    if precision == "fp32" or rows < _MIN_STD or cols < _MIN_STD or 0 < k % cols < _MIN_STD:
        return False  # small or narrow blocks: BLAS small-matrix kernels round differently
    if d > _MAX_DIM:
        return False  # deep products: the rerank's narrow addmm would not reproduce the float32 search's values
    if precision == "auto" and (k < _AUTO_MIN_CODES or n < _AUTO_MIN_TOKENS or not _cpu_has_bf16_units()):
        return False
    return reduced_precision_available(device)


class Bf16Search:
    """One call of the exact bf16 search over the scaled codebook (module docstring).

    Tokens go by spans of whole float32 row blocks (up to 2048 tokens), codes by chunks whose bf16
    scores (~8 MiB: a product of fewer codes or tokens is slower) are reduced to group maxima while
    still in cache. Extra memory: the codebook's bf16 copy, the scores buffer and a span's group
    maxima (1/16 of its scores), the last two within ``max_bytes``. The float32 rerank and every
    fallback run on the float32 search's own row blocks.
    """

    # a rerank of more codes than this fraction of the codebook (and than rerank_floor) costs about as much
    # as the float32 blocks: they run instead
    rerank_limit, rerank_floor = 0.5, 1024

    def __init__(self, codes: Tensor, sq: Tensor, n: int, rows: int, cols: int, max_bytes: int,
                 stats: SearchStats | None) -> None:
        k, d = codes.shape
        g = _GROUP
        self.codes, self.sq, self.k, self.d, self.rows, self.cols, self.stats = codes, sq, k, d, rows, cols, stats
        self.width = d + 2 + d % 2  # z | -1/2, -1/2 against codes | sq's two bf16 parts; even for the bf16 kernels
        # span x K/16 group maxima and span x chunk scores (bf16) within max_bytes
        groups_per_token = 2 * (-(-k // g))
        self.span = rows * max(1, min(_SPAN // rows, max_bytes // 2 // (groups_per_token * rows), -(-n // rows)))
        limit = max(g, min(_SCORE_BLOCK_BYTES, max_bytes // 2) // (2 * self.span))
        unit = g * _FAN  # chunks hold whole second-level groups
        self.chunk = min(-(-k // unit) * unit, max(unit, limit // unit * unit))
        padded = -(-k // self.chunk) * self.chunk  # whole chunks; padding codes never become candidates
        aug = torch.empty(padded, self.width, dtype=torch.bfloat16, device=codes.device)
        aug[:k, :d] = codes
        hi = sq.to(torch.bfloat16)
        aug[:k, d], aug[:k, d + 1] = hi, (sq - hi.float()).to(torch.bfloat16)  # sq - hi: exact (Sterbenz)
        aug[:k, d + 2 :] = 0
        aug[k:] = 0
        aug[k:, d] = 3.0e38  # padding codes: score -1.5e38, below every real one, and dropped by index anyway
        self.aug = aug
        dc_max = torch.zeros((), device=codes.device)
        for j in range(0, k, 4096):  # cache-sized pieces: no codebook-sized float32 temporaries
            piece = codes[j : j + 4096]
            c_hat = aug[j : j + piece.shape[0], :d].float()
            dc_max = torch.maximum(dc_max, bound.norm_bound(piece - c_hat).max())  # the difference is exact
        self.dc_max, self.sq_max = float(dc_max), float(sq.max())
        self.c_hat_max = bound.code_norm_bound(self.sq_max, d) + self.dc_max  # |ĉ| <= |c| + |Δc|
        self.usable = all(math.isfinite(v) for v in (self.c_hat_max, self.dc_max, self.sq_max))
        self.buffer = torch.empty(self.span * self.chunk, dtype=torch.bfloat16, device=codes.device)
        self.fp32_buffer: Tensor | None = None
        self.fallbacks, self.kept = 0, torch.zeros(0)

    # -- bound ---------------------------------------------------------------------------------
    def slack(self, z: Tensor, z_hat: Tensor) -> tuple[Tensor, Tensor]:
        """(A_t, F_t) of each row of the scaled float32 ``z`` and its bf16 copy: :func:`.search_bound.slack`."""
        return bound.slack(z, z_hat, self.c_hat_max, self.dc_max, self.sq_max)

    def augmented(self, z_hat: Tensor) -> Tensor:
        """(r, width) bf16 rows [ẑ, -1/2, -1/2, 0]: their product with ``aug`` is the score ẑ·ĉ - (h + m)/2."""
        za = torch.zeros(z_hat.shape[0], self.width, dtype=torch.bfloat16, device=z_hat.device)
        za[:, : self.d], za[:, self.d : self.d + 2] = z_hat, -0.5
        return za

    # -- search --------------------------------------------------------------------------------
    def run(self, flat: Tensor, scale: Tensor) -> Tensor:
        n = flat.shape[0]
        out = torch.empty(n, dtype=torch.long, device=flat.device)
        for i in range(0, n, self.span):
            z = flat[i : i + self.span] * scale  # row blocks of the float32 search: same rows, same values
            std = z.shape[0] if z.shape[0] % self.rows >= _MIN_STD else z.shape[0] - z.shape[0] % self.rows
            found = None
            if std and self.usable and self.fallbacks < 2:
                found = self.candidates(z[:std])
            done = 0 if found is None else std
            if found is not None and not self.decide(z[:std], *found, out[i : i + std]):
                done = 0
            for b in range(done, z.shape[0], self.rows):  # fallbacks and a last block of < 16 tokens
                block = z[b : b + self.rows]
                out[i + b : i + b + block.shape[0]] = self.fp32(block)
            if self.stats is not None:
                self.stats.fp32_tokens += z.shape[0] - done
                self.stats.fallback_tokens += z.shape[0] - done
        return out

    def fp32(self, block: Tensor) -> Tensor:
        if self.fp32_buffer is None:
            self.fp32_buffer = torch.empty(self.rows * self.cols, dtype=block.dtype, device=block.device)
        return fp32_rows(block, self.codes.t(), self.sq, self.cols, self.fp32_buffer)

    def candidates(self, z: Tensor) -> tuple[Tensor, Tensor] | None:
        """(token, code) pairs of the span ``z`` that may be its float32 argmin; None where the bound cannot help.

        The bf16 bound keeps whole groups; their codes are rescored in float32 from z and the codes
        (error <= F_t, as the float32 search's own values: |rescore - y| <= 2·F_t), and a code stays
        a candidate iff its rescore is within 4·F_t of the token's best rescore.
        """
        r, g, chunk = z.shape[0], _GROUP, self.chunk
        w = chunk // g
        z_hat = z.to(torch.bfloat16)
        slack, fp32_err = self.slack(z, z_hat)
        if not bool(torch.isfinite(slack).all()):
            self.fallbacks += 1
            return None
        za_t = self.augmented(z_hat).t()
        maxima = torch.empty(self.aug.shape[0] // g, r, dtype=torch.bfloat16, device=z.device)
        for i in range(self.aug.shape[0] // chunk):
            part = self.aug[i * chunk : (i + 1) * chunk]
            s = torch.mm(part, za_t, out=self.buffer[: chunk * r].view(chunk, r))  # (codes, tokens) scores
            torch.amax(s.view(w, g, r), dim=1, out=maxima[i * w : (i + 1) * w])  # group i: codes [g·i, g·i + g)
        top2 = maxima.view(-1, _FAN, r).amax(dim=1)  # groups of 16 groups: 256 codes
        best = top2.amax(dim=0).float()
        if not bool(torch.isfinite(best).all()):
            self.fallbacks += 1
            return None
        low = bound.round_down_bf16(bound.threshold(best, slack))  # a group is kept iff its maximum >= the threshold
        outer, t = (top2 >= low).nonzero(as_tuple=True)  # two levels: the compare runs on 1/16 of the maxima
        if t.numel() > _MAX_GROUPS_PER_TOKEN * r:
            self.fallbacks += 1
            return None
        inner = (outer * _FAN)[:, None] + torch.arange(_FAN, device=z.device)  # (P, 16) groups
        sub = maxima.view(-1).index_select(0, (inner * r + t[:, None]).reshape(-1)).view(-1, _FAN)
        keep, pos = (sub >= low[t][:, None]).nonzero(as_tuple=True)
        group, t = inner[keep, pos], t[keep]
        if t.numel() > _MAX_GROUPS_PER_TOKEN * r:
            self.fallbacks += 1
            return None
        members = group[:, None] * g + torch.arange(g, device=z.device)  # (P, g) code indices, contiguous runs
        valid = members < self.k
        members = torch.where(valid, members, 0)
        self.kept = torch.bincount(t, weights=valid.sum(dim=1).float(), minlength=r)  # codes the bf16 bound kept
        rescore = torch.empty(members.shape, device=z.device)
        for j in range(0, t.numel(), 512):  # z·c - sq/2 in float32 (any order), by pieces of 512 groups
            idx = members[j : j + 512].reshape(-1)
            rows = self.codes.index_select(0, idx).view(-1, g, self.d)  # index_select: ~10× faster than [idx]
            dots = rows.mul_(z.index_select(0, t[j : j + 512])[:, None, :]).sum(dim=-1)
            rescore[j : j + 512] = dots - self.sq.index_select(0, idx).view(-1, g) / 2
        rescore.masked_fill_(~valid, -float("inf"))
        top = torch.full((r,), -float("inf"), device=z.device).scatter_reduce_(0, t, rescore.amax(dim=1), "amax")
        floor = bound.rescore_floor(top, fp32_err)
        pick = (rescore >= floor[t][:, None]).nonzero(as_tuple=True)
        return t[pick[0]], members[pick]

    def decide(self, z: Tensor, t: Tensor, code: Tensor, out: Tensor) -> bool:
        """Indices of a span's tokens from their candidates, alone or reranked in float32, into ``out``;
        False (``out`` untouched) where the rerank would cost as much as the float32 blocks."""
        r = z.shape[0]
        counts = torch.bincount(t, minlength=r)
        single = counts[t] == 1
        multi = ~single
        union = torch.unique(code[multi])  # sorted: the first minimum is the lowest index
        if union.numel() > max(self.rerank_limit * self.k, self.rerank_floor):
            return False
        if self.stats is not None:
            self.stats.bf16_tokens += r
            self.stats.candidates += int(self.kept.sum())
            self.stats.max_candidates = max(self.stats.max_candidates, int(self.kept.max()))
            self.stats.reranked_tokens += int((counts > 1).sum())
        out[t[single]] = code[single]
        if not union.numel():
            return True
        width = max(_MIN_GATHER, -(-union.numel() // _GROUP) * _GROUP)
        gather = torch.cat([union, union[:1].expand(width - union.numel())])
        sq, codes_t = self.sq.index_select(0, gather), self.codes.index_select(0, gather).t()
        dist = torch.empty(r, width, device=z.device)
        for b in range(0, r, self.rows):  # the float32 search's row blocks: its kernels, its values
            torch.addmm(sq, z[b : b + self.rows], codes_t, alpha=-2.0, out=dist[b : b + self.rows])
        allowed = torch.zeros_like(dist, dtype=torch.bool)
        allowed[t[multi], torch.searchsorted(union, code[multi])] = True
        dist.masked_fill_(~allowed, float("inf"))
        rerank = counts > 1
        out[rerank] = union[dist.argmin(dim=1)][rerank]
        return True
