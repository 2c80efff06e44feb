"""Bjøntegaard delta rate and PSNR between two rate–distortion curves (VCEG-M33), piecewise-cubic form.

Each curve is a set of (rate, PSNR) operating points. BD-rate is the mean horizontal gap between the two
curves in log rate over the PSNR range they share: ``10^(mean Δ log10 R) − 1`` — negative means the test
curve needs fewer bits for the same PSNR. BD-PSNR is the mean vertical gap over their shared log-rate range.

Interpolation: the piecewise cubic Hermite form (PCHIP, monotone, through every point) rather than
VCEG-M33's single cubic polynomial, as the JVET common-test-conditions sheet and the ``bjontegaard``
package's ``pchip`` method do — a cubic fitted to four or more points can overshoot between them, and a
tokenizer family may have only two or three. The integrals are exact (the Hermite pieces integrated in
closed form by :class:`scipy.interpolate.PchipInterpolator`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator


def _curve(rates: Sequence[float], psnrs: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(log10 rate, PSNR) sorted by rate, keeping the points that raise PSNR over every cheaper point (a
    dominated point — more bits, no better — is not on the curve); ValueError for non-positive or NaN rates."""
    r, p = np.asarray(rates, np.float64), np.asarray(psnrs, np.float64)
    if r.shape != p.shape or r.ndim != 1:
        raise ValueError(f"rates {r.shape} and PSNRs {p.shape} must be two 1-D sequences of one length")
    if not (np.isfinite(r).all() and np.isfinite(p).all()) or (r <= 0).any():
        raise ValueError("rates must be positive and finite, PSNRs finite")
    order = np.lexsort((-p, r))
    keep, best = [], -np.inf
    for i in order:
        if p[i] > best:
            keep.append(i)
            best = p[i]
    return np.log10(r[keep]), p[keep]


def _mean_gap(xa: np.ndarray, ya: np.ndarray, xb: np.ndarray, yb: np.ndarray) -> float | None:
    """Mean of f_b − f_a over the shared x range, f the PCHIP interpolants of y(x); None without overlap."""
    if len(xa) < 2 or len(xb) < 2:
        return None
    lo, hi = max(xa[0], xb[0]), min(xa[-1], xb[-1])
    if hi <= lo:
        return None
    fa, fb = PchipInterpolator(xa, ya), PchipInterpolator(xb, yb)
    return float((fb.integrate(lo, hi) - fa.integrate(lo, hi)) / (hi - lo))


def bd_rate(ref_rates: Sequence[float], ref_psnr: Sequence[float], rates: Sequence[float],
            psnr: Sequence[float]) -> float | None:
    """Bjøntegaard delta rate of the test curve against the reference, as a fraction (−0.1 = 10% fewer bits at
    equal PSNR); None when either curve has fewer than two useful points or their PSNR ranges do not overlap."""
    lr_ref, p_ref = _curve(ref_rates, ref_psnr)
    lr, p = _curve(rates, psnr)
    gap = _mean_gap(p_ref, lr_ref, p, lr)  # log10 rate as a function of PSNR
    return None if gap is None else float(10.0**gap - 1.0)


def bd_psnr(ref_rates: Sequence[float], ref_psnr: Sequence[float], rates: Sequence[float],
            psnr: Sequence[float]) -> float | None:
    """Bjøntegaard delta PSNR (dB) of the test curve against the reference over their shared log-rate range
    (positive = better picture at equal rate); None as for :func:`bd_rate`."""
    lr_ref, p_ref = _curve(ref_rates, ref_psnr)
    lr, p = _curve(rates, psnr)
    return _mean_gap(lr_ref, p_ref, lr, p)


def overlap(ref_rates: Sequence[float], ref_psnr: Sequence[float], rates: Sequence[float],
            psnr: Sequence[float]) -> tuple[float, float] | None:
    """The PSNR range two curves share over the points BD-rate uses (dominated points dropped), or None."""
    p_ref, p = _curve(ref_rates, ref_psnr)[1], _curve(rates, psnr)[1]
    lo, hi = max(p_ref[0], p[0]), min(p_ref[-1], p[-1])
    return (float(lo), float(hi)) if hi > lo else None
