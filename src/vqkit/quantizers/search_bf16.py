"""Exact nearest-code search with a bfloat16 product: the float32 search's indices, ties included.

Run by :func:`.search.nearest_code` for ``precision="bf16"``; ``"auto"`` picks it on a CPU with
AVX512-BF16 or AMX for K >= 4096 codes and >= 256 tokens.

The bound. Let d32 = fl(sq - 2·dot32) be the float32
search's distance and y = -d32/2 (larger is nearer). One bf16 product gives every score
s = ẑ·ĉ - (h + m)/2: z and the codes rounded to bf16 (ẑ, ĉ), sq split exactly enough into two bf16
columns h + m appended to the codes (and -1/2, -1/2 to z), accumulated in float32, rounded to bf16.
With Δz = z - ẑ, Δc = c - ĉ (exact in float32), Ĉ, δC the largest |ĉ_j|, |Δc_j| of the codebook,
P_t = (|ẑ_t| + |Δz_t|)·(Ĉ + δC) >= Σ|z_i c_i| and γ_n = n·2^-24/(1 - n·2^-24), every pair has
|s - y| <= A_t + ρ|s| (ρ = 2^-8/(1 - 2^-8): the output rounding) where

    A_t = |ẑ_t|·δC + |Δz_t|·Ĉ + |Δz_t|·δC      z·c - ẑ·ĉ = ẑ·Δc + Δz·ĉ + Δz·Δc, Cauchy-Schwarz
        + γ_{D+4}·(P_t + sq_max)                the bf16 product's float32 accumulation, any order
        + 2^-17·sq_max                          |sq - h - m| <= 2^-16·sq
        + F_t                                   the float32 search's own error on y:
    F_t = γ_{D+4}·P_t + 2^-24·(2·P_t + sq_max) + (D + 8)·2^-120·(1 + |ẑ_t| + Ĉ)   (dot, rounding, underflow)

Why the result is exact. With M_t the token's best score, code j can be the float32 argmin only if its upper bound
s_j + A_t + ρ|s_j| reaches the best one's lower bound M_t - A_t - ρ|M_t|, i.e. only if
M_t - s_j <= W_t = (2·A_t + 2ρ|M_t|)/(1 - ρ). The scores are reduced while in cache to maxima of
groups of 16 codes (and of 256); the groups whose maximum reaches M_t - W_t (rounded outward) keep
their codes — the "candidates", ~2 groups a token on Gaussian data, the price of exactness — which
are rescored in float32 from z and the codes (error <= F_t, like y: their rescores v are within 2·F_t
of y), and a candidate stays only if v_j >= max v - 4·F_t. A token left with one code has its
answer; a token left with several (codes within float32's own error: duplicates, near-ties) is
decided by the float32 search's very ``addmm`` — same row block, same scaled z, same ``sq`` — on
the gathered candidates, lowest index on ties. The indices are the float32 search's, ties
included, provided the BLAS gives an entry the same value whatever the number (>= 16) of columns
of the call: true of MKL's sgemm (each entry one float32 FMA chain), checked once per process by
:func:`reduced_precision_available` together with the bf16 product's float32 accumulation; where a
check fails the search stays float32. Float32 also runs for row blocks of < 16 tokens and a last
code block of < 16 codes (MKL's small-matrix kernels round differently), non-finite data, and
where the bound keeps more than 32 groups a token on average (data far from the origin, where
bf16 cannot resolve the distances) or the rerank would cost as much as the float32 blocks.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

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
_U32 = 2.0**-24  # float32 unit roundoff
_UBF = 2.0**-8  # bfloat16 unit roundoff
_RHO = _UBF / (1 - _UBF)  # rounding a float32 S to bf16 s: |s - S| <= ρ·|s|


# -- platform checks ----------------------------------------------------------------------------------
_AVAILABLE: dict[str, bool] = {}


def _cpu_has_bf16_units() -> bool:
    """AVX512-BF16 or AMX: where a bf16 product runs ~2× faster than a float32 one."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def reduced_precision_available(device: torch.device | str = "cpu") -> bool:
    """Whether the exact bf16 search can run on ``device`` (CPU only); measured once per process.

    Two facts the exactness rests on are checked on small products: the bf16 matrix product
    accumulates in float32 (1 + 127·2^-9 survives; a bf16 accumulator would return 1), and the
    float32 ``addmm`` gives an entry the same value whatever the number of columns (>= 16) of the
    call. CUDA is not enabled: cuBLAS chooses kernels (split-K among them) by shape, so the second
    fact does not hold there.
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
        g = torch.Generator().manual_seed(0)
        z, codes = torch.randn(48, 37, generator=g), torch.randn(300, 37, generator=g)
        sq = squared_norms(codes)
        full = torch.addmm(sq, z, codes.t(), alpha=-2.0)
        for width in (16, 64, 77):
            pick = torch.randperm(300, generator=g)[:width].sort().values
            part = torch.addmm(sq[pick], z, codes[pick].t(), alpha=-2.0)
            if not torch.equal(part, full[:, pick]):
                return False
        return True
    except RuntimeError:
        return False



def use_bf16(precision: str, device: torch.device, n: int, k: int, rows: int, cols: int) -> bool:
    if precision == "fp32" or rows < _MIN_STD or cols < _MIN_STD or 0 < k % cols < _MIN_STD:
        return False  # small or narrow blocks: BLAS small-matrix kernels round differently
    if precision == "auto" and (k < _AUTO_MIN_CODES or n < _AUTO_MIN_TOKENS or not _cpu_has_bf16_units()):
        return False
    return reduced_precision_available(device)


def _norm_bound(x: Tensor) -> Tensor:
    """Upper bound on the L2 norm of each row of float32 ``x``: computed norm, rounded up, plus underflow."""
    d = x.shape[-1]
    norm: Tensor = torch.linalg.vector_norm(x, dim=-1)
    return norm * (1 + (d + 4) * 2.0**-23) + math.sqrt(d) * 2.0**-62


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
            dc_max = torch.maximum(dc_max, _norm_bound(piece - c_hat).max())  # the difference is exact
        self.dc_max, self.sq_max = float(dc_max), float(sq.max())
        # |c| from sq = fl(sum c_i²) >= (1 - γ_d)·|c|² (squares that underflow: the last term); |ĉ| <= |c| + |Δc|
        gamma = (d + 2) * _U32 / (1 - (d + 2) * _U32)
        c_max = math.sqrt(max(self.sq_max, 0.0) / (1 - gamma)) * (1 + 4 * _U32) + math.sqrt(d) * 2.0**-62
        self.c_hat_max = c_max + self.dc_max
        self.usable = all(math.isfinite(v) for v in (self.c_hat_max, self.dc_max, self.sq_max))
        self.buffer = torch.empty(self.span * self.chunk, dtype=torch.bfloat16, device=codes.device)
        self.fp32_buffer: Tensor | None = None
        self.fallbacks, self.kept = 0, torch.zeros(0)

    # -- bound ---------------------------------------------------------------------------------
    def slack(self, z: Tensor, z_hat: Tensor) -> tuple[Tensor, Tensor]:
        """(A_t, F_t) of each row of the scaled float32 ``z`` and its bf16 copy (module docstring).

        |s - y| <= A_t + ρ|s| for a bf16 score s; |v - (z·c - sq/2)| <= F_t for a float32 one v
        (a dot product in any order, then - sq/2), the float32 search's y = -d32/2 included.
        """
        d = self.d
        nz = _norm_bound(z_hat.float())
        ndz = _norm_bound(z - z_hat.float())  # the difference is exact
        c_hat, dc, sq_max = self.c_hat_max, self.dc_max, self.sq_max
        p = (nz + ndz) * (c_hat + dc)  # >= sum |z_i c_i|
        gamma = (d + 4) * _U32 / (1 - (d + 4) * _U32)
        a = nz * dc + ndz * c_hat + ndz * dc  # |ẑ·ĉ - z·c|
        a = a + gamma * (p + sq_max)  # float32 accumulation of the bf16 product (its products are exact)
        a = a + 2.0**-17 * sq_max  # sq ≈ h + m: |sq - h - m| <= 2^-16·sq, halved in the score
        tiny = (d + 8) * 2.0**-120 * (1 + nz + c_hat)  # underflow and flushed subnormals (2^-126 an operation)
        f = gamma * p + _U32 * (2 * p + sq_max) + tiny  # a float32 dot product in any order, then its rounding
        return a + f, f

    @staticmethod
    def threshold(best: Tensor, slack: Tensor) -> Tensor:
        """Lowest score a code may have and still be the float32 argmin: M_t - W_t, rounded down.

        W_t = (2·A_t + 2ρ|M_t|)/(1 - ρ) (module docstring), widened by 2^-10 for the float32
        arithmetic that evaluates it (a few dozen roundings of 2^-24), and by 2^-20·|M_t| for the
        subtraction.
        """
        width = (2 * slack + 2 * _RHO * best.abs()) / (1 - _RHO)
        return best - (width * (1 + 2.0**-10) + best.abs() * 2.0**-20)

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
        thr = self.threshold(best, slack)
        low = thr.to(torch.bfloat16)  # rounded down to bf16: a group is kept iff its maximum >= thr
        low = torch.where(low.float() > thr, torch.nextafter(low, torch.full_like(low, -float("inf"))), low)
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
        floor = top - (4 * fp32_err * (1 + 2.0**-10) + top.abs() * 2.0**-20)
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
