"""nearest_code on data far from 1: huge values rescaled down, tiny ones up, by exact powers of two."""

from __future__ import annotations

import pytest
import torch

from vqkit.quantizers.search import DEFAULT_MAX_BYTES, SearchStats, nearest_code, reduced_precision_available

PRECISIONS = ["fp32", "bf16"]


def _data(seed: int = 0, n: int = 300, k: int = 200, d: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(k, d, generator=g)


# -- values too large for float32 distances ---------------------------------------------------------
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("exponent", [40, 70, 100, 124])
@pytest.mark.parametrize("max_bytes", [DEFAULT_MAX_BYTES, 4 * 64 * 7], ids=["one-block", "columns-of-7"])
def test_large_values_give_the_same_codes_as_small_ones(exponent: int, max_bytes: int, precision: str) -> None:
    """z and codes scaled by 2^e (exact): ||c||² would overflow float32 from 2^64 on, and 2z·c from
    about the same; the search rescales by a power of two, so the codes equal the unscaled ones."""
    z, codes = _data(7, n=100, k=50, d=8)
    s = 2.0**exponent
    assert torch.isfinite(z * s).all() and torch.isfinite(codes * s).all()
    idx = nearest_code(z * s, codes * s, max_bytes=max_bytes, precision=precision)
    assert torch.equal(idx, nearest_code(z, codes, max_bytes=max_bytes))
    # and a cache of squared norms that overflowed is not trusted
    cached = nearest_code(z * s, codes * s, codes_sqnorm=(codes * s).pow(2).sum(-1), max_bytes=max_bytes,
                          precision=precision)
    assert torch.equal(cached, idx)


@pytest.mark.parametrize("exponent", [30, 70, 125])
def test_huge_tokens_against_ordinary_codes(exponent: int) -> None:
    """Only z is huge: the nearest code is the one of largest z·c - ||c||²/2, checked in float64."""
    z, codes = _data(8, n=200, k=60, d=8)
    z = z * 2.0**exponent
    assert torch.isfinite(z).all()
    # ||z - c||² - ||z||²: in float64 (cdist would lose the code-dependent part under ||z||²)
    dist = codes.double().pow(2).sum(-1) - 2 * z.double() @ codes.double().t()
    ref = dist.argmin(dim=1)
    rows = torch.arange(len(ref))
    for max_bytes in (DEFAULT_MAX_BYTES, 4 * 64 * 7):
        got = nearest_code(z, codes, max_bytes=max_bytes)
        gap = (dist[rows, got] - dist[rows, ref]) / dist.abs().amax(dim=1)
        assert (gap <= 1e-6).all()  # float32-close to the exact nearest code
        assert (got == ref).float().mean() > 0.99


# -- values so small that float32 products underflow -----------------------------------------------
def _float64_nearest(z: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first index of the minimum, relative gap to the runner-up) of the stored float32 values, in float64."""
    dist = (z.double()[:, None, :] - codes.double()[None]).pow(2).sum(-1)
    top2 = dist.topk(2, dim=1, largest=False).values
    return dist.argmin(dim=1), (top2[:, 1] - top2[:, 0]) / top2[:, 1].clamp(min=1e-300)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_tiny_and_huge_values_agree_with_float64(precision: str) -> None:
    """z and codes scaled by 2^e, e from -120 to 100: the float64 argmin of the values as stored (subnormals
    included) wherever float32 can resolve it. Unscaled, 2^-80 data gave code 0 for every token (every
    product 0) and 2^-75 data 815 wrong codes of 1024."""
    z, codes = _data(21, n=256, k=64, d=16)
    bf16 = precision == "bf16" and reduced_precision_available()
    for e in range(-120, 101, 10):
        zs, cs = z * 2.0**e, codes * 2.0**e
        stats = SearchStats()
        got = nearest_code(zs, cs, precision=precision, stats=stats)  # type: ignore[arg-type]
        ref, gap = _float64_nearest(zs, cs)
        resolved = gap > 1e-5  # float32 resolves the nearest code
        assert resolved.sum() > 240
        assert torch.equal(got[resolved], ref[resolved]), (e, int((got != ref)[resolved].sum()))
        assert stats.bf16_tokens == (256 if bf16 else 0), e


def test_subnormal_data() -> None:
    """Down to float32's smallest subnormals (2^-149): the values' own float64 argmin, ties to the lowest index."""
    z, codes = _data(22, n=256, k=64, d=16)
    for e in (-126, -135, -145, -149):
        zs, cs = z * 2.0**e, codes * 2.0**e
        ref, _ = _float64_nearest(zs, cs)
        for precision in PRECISIONS:
            assert torch.equal(nearest_code(zs, cs, precision=precision), ref), (e, precision)  # type: ignore[arg-type]
    zero = torch.zeros(20, 16)
    assert nearest_code(zero, torch.zeros(5, 16)).tolist() == [0] * 20  # all ties: no scale, the first code
