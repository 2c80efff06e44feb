"""Bjøntegaard deltas: exact on curves whose answer is known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vqkit.metrics.bjontegaard import bd_psnr, bd_rate, overlap

RATES = [0.2, 0.35, 0.6, 1.0, 1.6]
PSNR = [27.0, 29.1, 31.0, 33.2, 35.0]


def test_scaled_rates_give_that_bd_rate() -> None:
    for factor in (0.8, 0.5, 1.25):
        assert bd_rate(RATES, PSNR, [r * factor for r in RATES], PSNR) == pytest.approx(factor - 1, abs=1e-12)


def test_shifted_psnr_gives_that_bd_psnr() -> None:
    assert bd_psnr(RATES, PSNR, RATES, [p + 1.5 for p in PSNR]) == pytest.approx(1.5, abs=1e-12)
    assert bd_psnr(RATES, PSNR, RATES, PSNR) == pytest.approx(0.0, abs=1e-12)


def test_a_linear_curve_in_log_rate_matches_the_closed_form() -> None:
    """PSNR = a + b·log10(R) for both curves with a 0.5 dB offset: BD-rate = 10^(-0.5/b) − 1 exactly."""
    b = 10.0
    lr = np.linspace(-1, 0.3, 6)
    ref, test = a_curve(lr, 30.0, b), a_curve(lr, 30.5, b)
    assert bd_rate(10**lr, ref, 10**lr, test) == pytest.approx(10 ** (-0.5 / b) - 1, rel=1e-9)
    assert bd_psnr(10**lr, ref, 10**lr, test) == pytest.approx(0.5, abs=1e-9)


def a_curve(lr: np.ndarray, a: float, b: float) -> list[float]:
    return [a + b * x for x in lr]


def test_order_and_dominated_points_do_not_matter() -> None:
    shuffled = [3, 0, 4, 1, 2]
    rates, psnr = [RATES[i] for i in shuffled], [PSNR[i] for i in shuffled]
    worse = [*RATES, 1.2], [*PSNR, 32.0]  # more bits than a point with 33.2 dB's neighbour, lower PSNR
    want = bd_rate(RATES, PSNR, [r * 0.9 for r in RATES], PSNR)
    assert bd_rate(rates, psnr, [r * 0.9 for r in rates], psnr) == pytest.approx(want, abs=1e-12)
    assert bd_rate(*worse, [r * 0.9 for r in RATES], PSNR) == pytest.approx(want, abs=1e-12)


def test_no_overlap_or_one_point_is_none() -> None:
    assert bd_rate(RATES, PSNR, [5.0, 6.0], [40.0, 41.0]) is None
    assert bd_rate(RATES, PSNR, [0.5], [30.0]) is None
    assert overlap(RATES, PSNR, [1.0, 2.0], [40.0, 41.0]) is None
    assert overlap(RATES, PSNR, [1.0, 2.0], [30.0, 40.0]) == (30.0, 35.0)
    # a dominated point (more bits, lower PSNR) is not where the curve starts
    assert overlap(RATES, PSNR, [0.1, 0.2, 0.4], [30.0, 29.0, 33.0]) == (30.0, 33.0)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        bd_rate(RATES, PSNR, [0.0, 1.0], [30.0, 31.0])
    with pytest.raises(ValueError, match="positive"):
        bd_rate(RATES, PSNR, [math.nan, 1.0], [30.0, 31.0])
    with pytest.raises(ValueError, match="one length"):
        bd_rate(RATES, PSNR, [0.5, 1.0], [30.0])


def test_rd_table_skips_lossless_points() -> None:
    """A classical codec that reproduces an image exactly (PSNR = inf) is off the curve, not a crash."""
    from vqkit.experiments.rd import bd_table

    summary = [{"codec": "JPEG", "setting": str(q), "bpp_file": r, "psnr": p}
               for q, r, p in ((10, 0.2, 27.0), (50, 0.6, 31.0), (90, 1.6, math.inf))]
    summary += [{"codec": "m", "setting": "context", "stages": k, "bpp_file": r, "psnr": p}
                for k, r, p in ((1, 0.3, 28.0), (2, 0.5, 30.0))]
    (row,) = bd_table(summary, ["m"])
    assert row["against"] == "JPEG" and row["bd_rate"] is not None and math.isfinite(row["bd_rate"])
