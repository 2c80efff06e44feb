"""The bf16 search's error bound, term by term, against exact rational arithmetic (``fractions.Fraction``).

End-to-end tests cannot pin the bound: its 2ρ|M| term (the bf16 output rounding) is so much larger
than the others on ordinary data that a smaller slack, threshold or rounding still finds the right
codes. Here each term is compared with its formula evaluated exactly, on inputs chosen so that every
term is a sizeable share of the total: the implementation must never be below the formula (a bound)
and not far above it (a bound that is not the documented one).
"""

from __future__ import annotations

import math
import sys
from fractions import Fraction

import pytest
import torch

from vqkit.quantizers import search_bound
from vqkit.quantizers.search import SearchStats, nearest_code, reduced_precision_available
from vqkit.quantizers.search_bf16 import _cpu_has_bf16_units
from vqkit.quantizers.search_blocks import squared_norms
from vqkit.quantizers.search_bound import RHO, gamma, round_down_bf16, slack, threshold

LOOSE = Fraction(1, 2**12)  # the implementation may exceed the formula by this much (norms rounded up)


def _sqrt_down(x: Fraction) -> Fraction:
    """The largest float <= sqrt(x), exactly."""
    r = math.sqrt(float(x))
    while Fraction(r) * Fraction(r) > x:
        r = math.nextafter(r, 0.0)
    return Fraction(r)


def _norm(v: list[Fraction]) -> Fraction:
    return _sqrt_down(sum((x * x for x in v), Fraction(0)))


def _exact(t: torch.Tensor) -> list[list[Fraction]]:
    return [[Fraction(x) for x in row] for row in t.double().tolist()]


def _formula(z: torch.Tensor, codes: torch.Tensor) -> tuple[list[Fraction], list[Fraction], Fraction]:
    """(A_t, F_t) of each token by the documented formula (search_bound's docstring), in exact arithmetic,
    without the underflow term, with Ĉ taken as max |c| + δC (the search's bound on it); and sq_max."""
    d = z.shape[1]
    z_hat, c_hat = _exact(z.to(torch.bfloat16)), _exact(codes.to(torch.bfloat16))
    z_ex, c_ex = _exact(z), _exact(codes)
    small_c = max(_norm([a - b for a, b in zip(c, ch, strict=True)]) for c, ch in zip(c_ex, c_hat, strict=True))
    big_c = max(_norm(c) for c in c_ex) + small_c  # |ĉ| <= |c| + |Δc|: the bound the search uses for Ĉ
    sq_max = Fraction(float(squared_norms(codes).max()))
    g = Fraction(d + 4, 2**24 - (d + 4))  # γ_{D+4}
    a_out, f_out = [], []
    for zt, zh in zip(z_ex, z_hat, strict=True):
        nz, ndz = _norm(zh), _norm([a - b for a, b in zip(zt, zh, strict=True)])
        p = (nz + ndz) * (big_c + small_c)
        f = g * (p + sq_max / 2)
        a = nz * small_c + ndz * big_c + ndz * small_c + g * (p + sq_max) + sq_max / 2**17 + f
        a_out.append(a)
        f_out.append(f)
    return a_out, f_out, sq_max


def _bf16_exact_data() -> tuple[torch.Tensor, torch.Tensor]:
    """D = 64, values exact in bf16: the input-rounding terms vanish, the accumulation, split and float32
    terms are each 20-45% of A."""
    z = torch.cat([torch.ones(1, 64), torch.full((1, 64), 0.5), torch.full((1, 64), 3.0)])
    codes = torch.cat([torch.full((1, 64), 2.0), -torch.ones(3, 64)])
    return z, codes


def _rounded_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Components that bf16 rounds (1 + 2^-9 -> 1, 2 + 2^-8 -> 2): the Cauchy-Schwarz terms dominate."""
    z = torch.full((2, 64), 1 + 2.0**-9)
    z[1, ::2] = -1.5 - 2.0**-10
    codes = torch.full((3, 64), 2 + 2.0**-8)
    codes[1] = 0.25
    return z, codes


@pytest.mark.parametrize("data", [_bf16_exact_data, _rounded_data], ids=["bf16-exact", "rounded"])
def test_slack_terms_equal_the_formula_in_exact_arithmetic(data: object) -> None:
    z, codes = data()  # type: ignore[operator]
    a_ref, f_ref, sq_max = _formula(z, codes)
    sq = squared_norms(codes)
    from vqkit.quantizers.search_bf16 import Bf16Search

    bf = Bf16Search(codes, sq, z.shape[0], z.shape[0], codes.shape[0], 2**30, None)
    a_got, f_got = bf.slack(z, z.to(torch.bfloat16))
    for t in range(z.shape[0]):
        a, f = Fraction(float(a_got[t])), Fraction(float(f_got[t]))
        assert a_ref[t] <= a <= a_ref[t] * (1 + LOOSE), (t, float(a), float(a_ref[t]))
        assert f_ref[t] <= f <= f_ref[t] * (1 + LOOSE), (t, float(f), float(f_ref[t]))
    assert Fraction(bf.sq_max) == sq_max


def test_each_term_of_the_slack_matters_here() -> None:
    """The inputs above are chosen so that dropping any one term moves A by more than the tolerance."""
    z, codes = _bf16_exact_data()
    a_ref, f_ref, sq_max = _formula(z, codes)
    d = z.shape[1]
    for t in range(z.shape[0]):
        split = sq_max / 2**17
        accumulation = Fraction(d + 4, 2**24 - (d + 4)) * sq_max
        for term in (split, f_ref[t], accumulation):
            assert term > 8 * LOOSE * a_ref[t]


def test_gamma_is_exact_enough() -> None:
    for n in (1, 8, 68, 4100):
        assert Fraction(gamma(n)) >= Fraction(n, 2**24 - n) * (1 - Fraction(1, 2**50))
        assert Fraction(gamma(n)) <= Fraction(n, 2**24 - n) * (1 + Fraction(1, 2**50))


def _blocked_case(d: int, n: int = 256, k: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes 0 and 1 of equal norm (||c||² ≈ 2^20, held by every partial sum of the float32 search); a token
    that adds +0.249 ulp(2^20) to code 0's distance and -0.249 ulp to code 1's per depth block of 192 (each
    rounded away by a blocked sum, not by exact arithmetic); the other codes far. Small z: Σ|z_i c_i| is
    tiny next to ||c||², so nothing but a term for the roundings of ||c||² covers the error."""
    z = torch.zeros(n, d)
    z[:, 1:] = 2.0**-10
    codes = torch.zeros(k, d)
    codes[:, 0] = 2.0**10
    codes[2:, 0] += 64  # ||c||² = 2^20 + 2^17 + 2^12: far beyond the bf16 window, sq_max near 2^20
    step = 2.0**10 * 2.0**-3 * 0.249 / (2 * 192)  # -2·z_i·c_i summed over 192 coordinates: 0.249 ulp(2^20)
    codes[0, 1:], codes[1, 1:] = -step, step
    return z, codes


def test_the_float32_term_covers_the_search_as_computed() -> None:
    """|y32 - (z·c - sq/2)| <= F for the float32 search's own ``addmm`` on shapes like the real ones (256 tokens,
    4096 codes, D = 6144), where MKL rounds a running value holding ||c||² after each depth block: an error
    larger than a bound that assumes one rounding (γ_{D+4}·P + u·(2P + sq))."""
    d = 6144
    z, codes = _blocked_case(d)
    sq = squared_norms(codes)
    y32 = -torch.addmm(sq, z, codes.t(), alpha=-2.0)[0, :2].double() / 2
    zr = _exact(z[:1])[0]
    exact = [sum((a * b for a, b in zip(zr, cr, strict=True)), Fraction(0)) - Fraction(float(sq[j])) / 2
             for j, cr in enumerate(_exact(codes[:2]))]
    sq_max = float(sq[:2].max())
    c_max = search_bound.code_norm_bound(sq_max, d)
    _, f = slack(z[:1], z[:1].to(torch.bfloat16), c_max, 0.0, sq_max)
    err = max(abs(Fraction(float(y32[j])) - exact[j]) for j in range(2))
    assert err <= Fraction(float(f[0]))
    p = Fraction(float(search_bound.norm_bound(z[:1])[0])) * Fraction(c_max)
    once = Fraction(d + 4, 2**24 - d - 4) * p + (2 * p + Fraction(sq_max)) / 2**24
    assert err > once, "this BLAS rounds once here: the case no longer shows the blocked rounding"


@pytest.mark.parametrize("threads", [1, 2])
def test_large_dim_constructed_case_gives_the_float32_answer(threads: int) -> None:
    """The constructed case for D = 64..8192: "auto" and "bf16" return the float32 search's index (the bf16
    search runs up to D = 512, the float32 one beyond), which differs from exact arithmetic's at large D."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        wrong = 0
        for d in (64, 128, 256, 512, 1024, 2048, 4096, 6144, 8192):
            z, codes = _blocked_case(d)
            fp32 = nearest_code(z, codes, precision="fp32")
            for precision in ("auto", "bf16"):
                stats = SearchStats()
                got = nearest_code(z, codes, precision=precision, stats=stats)  # type: ignore[arg-type]
                assert torch.equal(got, fp32), (d, precision, int((got != fp32).sum()))
                ran = d <= 512 and reduced_precision_available() and (  # the documented limit
                    precision == "bf16" or _cpu_has_bf16_units())
                assert stats.bf16_tokens == (256 if ran else 0), (d, precision)
            assert set(fp32.tolist()) <= {0, 1}
            wrong += int((fp32 != 1).sum())  # code 1 is the nearer in exact arithmetic
        if threads == 1:
            assert wrong > 0, "this BLAS rounds once here: the case no longer shows the blocked rounding"
    finally:
        torch.set_num_threads(old)


CASES = [(0.0, 1.0), (0.0, 2.0**-30), (-1000.0, 1e-3), (12345.6, 3.0), (-7.5, 0.25), (1e30, 1e20)]


@pytest.mark.parametrize(("best", "a"), CASES)
def test_threshold_is_below_the_exact_window(best: float, a: float) -> None:
    """thr <= M - (2A + 2ρ|M|)/(1 - ρ) exactly, and not more than ~0.1% + 2^-19·|M| below it."""
    b32, a32 = torch.tensor([best]), torch.tensor([a])
    got = Fraction(float(threshold(b32, a32)[0]))
    m, slack_t, rho = Fraction(float(b32[0])), Fraction(float(a32[0])), Fraction(1, 255)  # 2^-8/(1 - 2^-8)
    assert abs(Fraction(RHO) - rho) < rho / 2**50
    window = (2 * slack_t + 2 * rho * abs(m)) / (1 - rho)
    assert got <= m - window
    assert got >= m - window * (1 + Fraction(1, 2**9)) - abs(m) / 2**19


@pytest.mark.parametrize(("top", "f"), [(0.0, 1.0), (-524288.0, 0.03), (3.5, 2.0**-20), (-1e30, 1e22)])
def test_rescore_floor_is_below_twice_the_two_errors(top: float, f: float) -> None:
    """floor <= max v - 2·(F + F) exactly (a rescore and the float32 search's value each within F of the
    exact z·c - sq/2), and not more than ~0.1% + 2^-19·|max v| below it."""
    t32, f32 = torch.tensor([top]), torch.tensor([f])
    got = Fraction(float(search_bound.rescore_floor(t32, f32)[0]))
    m, err = Fraction(float(t32[0])), Fraction(float(f32[0]))
    assert got <= m - 4 * err
    assert got >= m - 4 * err * (1 + Fraction(1, 2**9)) - abs(m) / 2**19


def test_threshold_rounds_down_to_bf16() -> None:
    """round_down_bf16(x): the largest bf16 <= x, including values that round-to-nearest sends up."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([
        torch.randn(2000, generator=g) * torch.exp2(torch.randint(-30, 30, (2000,), generator=g).float()),
        torch.tensor([1 + 2.0**-8 + 2.0**-10, -(1 + 2.0**-9), 3.0, 0.0, -0.0, 1e-40, -1e-40, 3.0e38, -3.0e38]),
    ])
    low = round_down_bf16(x)
    assert low.dtype == torch.bfloat16
    up = torch.nextafter(low, torch.full_like(low, float("inf")))
    for lo, hi, v in zip(low.double().tolist(), up.double().tolist(), x.double().tolist(), strict=True):
        assert Fraction(lo) <= Fraction(v) < Fraction(hi), (v, lo)
    assert (x.to(torch.bfloat16).float() > x).sum() > 500  # to nearest would have gone up for these


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
