"""The error bound of the exact bf16 search (:mod:`.search_bf16`): which codes may still be the float32 argmin.

Let d32 be the float32 search's distance, ``addmm(sq, z, codes.T, alpha=-2)``, and y = -d32/2 (larger is
nearer). One bf16 product gives every score s = ẑ·ĉ - (h + m)/2: z and the codes rounded to bf16 (ẑ, ĉ),
sq split exactly enough into two bf16 columns h + m appended to the codes (and -1/2, -1/2 to z),
accumulated in float32, rounded to bf16. With Δz = z - ẑ, Δc = c - ĉ (exact in float32), Ĉ, δC the
largest |ĉ_j|, |Δc_j| of the codebook, P_t = (|ẑ_t| + |Δz_t|)·(Ĉ + δC) >= Σ|z_i c_i| and
γ_n = n·2^-24/(1 - n·2^-24), every pair has |s - y| <= A_t + ρ|s| (ρ = 2^-8/(1 - 2^-8): the output
rounding) where

    A_t = |ẑ_t|·δC + |Δz_t|·Ĉ + |Δz_t|·δC      z·c - ẑ·ĉ = ẑ·Δc + Δz·ĉ + Δz·Δc, Cauchy-Schwarz
        + γ_{D+4}·(P_t + sq_max)                the bf16 product's float32 accumulation, any order
        + 2^-17·sq_max                          |sq - h - m| <= 2^-16·sq
        + F_t                                   the float32 search's own error on y:
    F_t = γ_{D+4}·(P_t + sq_max/2) + (D + 8)·2^-120·(1 + |ẑ_t| + Ĉ)

F_t is the error of a sum of the D + 1 terms sq, -2·z_i·c_i in float32 in *any* order and blocking:
MKL's sgemm does not round once, fl(sq - 2·z·c); it adds its depth in blocks (of up to ~192) to a
running value that already holds sq and rounds after each (from D ≈ 200 ``addmm`` differs from
fl(sq - 2·mm)). Bounding every partial sum, as if each product were added to sq on its own
(⌈D/k⌉ roundings with k = 1), covers every blocking and thread count: no block size to measure. It
also covers a rescore v = fl(z·c) - sq/2 (any order, then one subtraction). The last term is
underflow and flushed subnormals (2^-126 an operation).

With M_t the token's best score, code j can be the float32 argmin only if its upper bound
s_j + A_t + ρ|s_j| reaches the best one's lower bound M_t - A_t - ρ|M_t|, i.e. only if
M_t - s_j <= W_t = (2·A_t + 2ρ|M_t|)/(1 - ρ): :func:`threshold`, then :func:`round_down_bf16` for the
compare against bf16 group maxima.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

U32 = 2.0**-24  # float32 unit roundoff
UBF = 2.0**-8  # bfloat16 unit roundoff
RHO = UBF / (1 - UBF)  # rounding a float32 S to bf16 s: |s - S| <= ρ·|s|


def gamma(n: int) -> float:
    """γ_n = n·u/(1 - n·u), u = 2^-24: the relative error of a float32 sum of n + 1 terms in any order."""
    return n * U32 / (1 - n * U32)


def norm_bound(x: Tensor) -> Tensor:
    """(..., D) float32 -> (...,) upper bound on each row's L2 norm: computed norm, rounded up, plus underflow."""
    d = x.shape[-1]
    norm: Tensor = torch.linalg.vector_norm(x, dim=-1)
    return norm * (1 + (d + 4) * 2.0**-23) + math.sqrt(d) * 2.0**-62


def code_norm_bound(sq_max: float, d: int) -> float:
    """Upper bound on max |c| from sq_max = max fl(Σ c_i²) >= (1 - γ_{d+2})·|c|² (minus squares that underflow)."""
    return math.sqrt(max(sq_max, 0.0) / (1 - gamma(d + 2))) * (1 + 4 * U32) + math.sqrt(d) * 2.0**-62


def slack(z: Tensor, z_hat: Tensor, c_hat: float, dc: float, sq_max: float) -> tuple[Tensor, Tensor]:
    """(A_t, F_t), each (r,), of the rows of the scaled float32 ``z`` (r, D) and its bf16 copy ``z_hat``.

    ``c_hat``, ``dc``: upper bounds on Ĉ and δC; ``sq_max``: the codebook's largest sq. |s - y| <= A_t + ρ|s|
    for a bf16 score s; |v - (z·c - sq/2)| <= F_t for a float32 one v (module docstring).
    """
    d = z.shape[-1]
    nz = norm_bound(z_hat.float())
    ndz = norm_bound(z - z_hat.float())  # the difference is exact
    p = (nz + ndz) * (c_hat + dc)  # >= sum |z_i c_i|
    g = gamma(d + 4)
    a = nz * dc + ndz * c_hat + ndz * dc  # |ẑ·ĉ - z·c|
    a = a + g * (p + sq_max)  # float32 accumulation of the bf16 product (its products are exact)
    a = a + 2.0**-17 * sq_max  # sq ≈ h + m: |sq - h - m| <= 2^-16·sq, halved in the score
    tiny = (d + 8) * 2.0**-120 * (1 + nz + c_hat)  # underflow and flushed subnormals
    f = g * (p + 0.5 * sq_max) + tiny  # sq + Σ -2·z_i·c_i in float32, any order and blocking, halved
    return a + f, f


def threshold(best: Tensor, slack_t: Tensor) -> Tensor:
    """Lowest score a code may have and still be the float32 argmin: M_t - W_t, rounded down.

    W_t = (2·A_t + 2ρ|M_t|)/(1 - ρ), widened by 2^-10 for the float32 arithmetic that evaluates it
    (a few dozen roundings of 2^-24), and by 2^-20·|M_t| for the subtraction.
    """
    width = (2 * slack_t + 2 * RHO * best.abs()) / (1 - RHO)
    return best - (width * (1 + 2.0**-10) + best.abs() * 2.0**-20)


def rescore_floor(top: Tensor, f: Tensor) -> Tensor:
    """Lowest float32 rescore a candidate may have and still be the float32 argmin: max v - 4·F_t, rounded down.

    A rescore v and the float32 search's y are each within F_t of z·c - sq/2, so y_j >= y_best implies
    v_j >= max v - 2·(F_t + F_t); widened like :func:`threshold`.
    """
    return top - (4 * f * (1 + 2.0**-10) + top.abs() * 2.0**-20)


def round_down_bf16(x: Tensor) -> Tensor:
    """The largest bf16 value <= each float32 ``x``: a bf16 group maximum is >= x iff it is >= this."""
    low = x.to(torch.bfloat16)  # to nearest: may round up
    return torch.where(low.float() > x, torch.nextafter(low, torch.full_like(low, -float("inf"))), low)
