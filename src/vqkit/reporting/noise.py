"""How noisy a sweep's mean scores are, and which configurations are within noise of each other.

Why: a table of means invites reading every difference as real. Both reports (image PSNR, speech
PESQ/STOI/…) compare configurations with the same rules, kept here. When every configuration's
``metrics.json`` holds per-item scores for the same items (``per_image`` / ``per_utterance``, written by
``vqkit eval``), standard errors are exact and configurations are compared item by item: two are
within noise when |mean paired difference| < 2 × the standard error of the paired differences
(:func:`paired_difference`). Older results hold means only: PSNR's standard error is then estimated
(:func:`estimated_psnr_standard_error`) and comparisons are unpaired.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .cells import _fmt, _metrics, _num

_PSNR_VARIANCE_PER_GAP = 20 / math.log(10)
"""Var(per-image PSNR) = (20 / ln 10) × (mean PSNR − PSNR of the mean MSE) when per-image MSE is log-normal."""


PER_ITEM_KEYS = ("per_image", "per_utterance")
"""Where ``metrics.json`` keeps per-item scores: ``{"ids": [...], metric: [score or null, ...], ...}``."""


def item_scores(config: dict[str, Any], metric: str) -> tuple[list[str], list[float | None]] | None:
    """(item ids, each item's ``metric`` score, None where missing) of a config; None when its metrics
    hold no per-item ``metric`` with one id per score (results evaluated before they were stored)."""
    m = _metrics(config)
    for key in PER_ITEM_KEYS:
        block = m.get(key)
        if not isinstance(block, dict):
            continue
        values, ids = block.get(metric), block.get("ids")
        if isinstance(values, list) and isinstance(ids, list) and len(ids) == len(values):
            return [str(i) for i in ids], [_num(v) for v in values]
    return None


def paired_items(configs: list[dict[str, Any]], metric: str) -> bool:
    """Whether every config has per-item ``metric`` scores for the same items (same ids, same order),
    at least two of them: the condition for exact standard errors and paired comparisons."""
    found = [item_scores(c, metric) for c in configs]
    if not found or any(f is None for f in found):
        return False
    ids = [f[0] for f in found if f is not None]
    return len(ids[0]) >= 2 and all(i == ids[0] for i in ids)


def standard_error(values: Sequence[float | None]) -> float | None:
    """Standard error of the mean of the known values: sample standard deviation / √n; None under two."""
    known = [v for v in values if v is not None]
    n = len(known)
    if n < 2:
        return None
    mean = math.fsum(known) / n
    return math.sqrt(math.fsum((v - mean) ** 2 for v in known) / (n - 1) / n)


def paired_difference(a: list[float | None], b: list[float | None]) -> tuple[float, float, int] | None:
    """(mean of a_i − b_i, its standard error, n) over the items both score; None under two such items.

    The scores of one item under two configurations are correlated (a hard image is hard for both), so
    the difference of their means is far less noisy than two independent errors suggest: this is the
    standard error that decides whether two configurations are within noise (|mean| < 2 × s.e.).
    """
    diffs = [x - y for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    se = standard_error(diffs)
    return None if se is None else (math.fsum(diffs) / len(diffs), se, len(diffs))


def paired_better(a: dict[str, Any], b: dict[str, Any], metric: str, higher: bool = True) -> bool | None:
    """Whether ``a`` beats ``b`` on ``metric`` by more than twice the standard error of their paired
    differences (``higher``: larger is better); None when the two lack per-item scores of the same items."""
    sa, sb = item_scores(a, metric), item_scores(b, metric)
    if sa is None or sb is None or sa[0] != sb[0]:
        return None
    d = paired_difference(sa[1], sb[1])
    if d is None:
        return None
    mean, se, _ = d
    return (mean if higher else -mean) > 2 * se


def within_noise_rule(items: str) -> str:
    """The paired rule, in words, for the report text."""
    return (f"two configurations are within noise when |mean paired difference| < 2 × s.e. of the paired "
            f"differences (a paired difference: one {items}'s score under one configuration minus under the other; "
            f"its s.e.: the standard deviation of those differences / √{items}s)")


def psnr_standard_error(metrics: dict[str, Any]) -> float | None:
    """Standard error (dB) of the mean per-image PSNR over the evaluation images; None if unknown.

    Exact (:func:`standard_error` of the per-image PSNR) when ``metrics`` holds ``per_image`` PSNR;
    otherwise estimated from the means (:func:`estimated_psnr_standard_error`).
    """
    found = item_scores({"metrics": metrics}, "psnr")
    exact = standard_error(found[1]) if found is not None else None
    return exact if exact is not None else estimated_psnr_standard_error(metrics)


def psnr_standard_error_is_exact(metrics: dict[str, Any]) -> bool:
    """Whether :func:`psnr_standard_error` comes from per-image PSNR (not an estimate)."""
    found = item_scores({"metrics": metrics}, "psnr")
    return found is not None and standard_error(found[1]) is not None


def estimated_psnr_standard_error(metrics: dict[str, Any]) -> float | None:
    """An estimate of :func:`psnr_standard_error` from means only, for results without per-image PSNR.

    Such a ``metrics.json`` holds ``psnr`` (mean per-image PSNR), ``mse`` (mean per-image MSE,
    [-1, 1] scale) and ``images``. By Jensen's inequality the mean PSNR is at least the PSNR of the
    mean MSE, and the gap grows with the spread of per-image MSE: for log-normal per-image MSE, the
    variance of per-image PSNR is (20 / ln 10) × gap. The standard error is that spread / √images.
    None with fewer than two images or inconsistent numbers.
    """
    n, mean_psnr, mean_mse = _num(metrics.get("images")), _num(metrics.get("psnr")), _num(metrics.get("mse"))
    if n is None or n < 2 or mean_psnr is None or mean_mse is None or mean_mse <= 0:
        return None
    gap = mean_psnr - 10 * math.log10(4 / mean_mse)  # PSNR is on the [0, 1] scale: MSE / 4
    if gap < -1e-6:
        return None
    return math.sqrt(_PSNR_VARIANCE_PER_GAP * max(gap, 0.0) / n)


def _psnr_cell(config: dict[str, Any]) -> str:
    m = _metrics(config)
    se = psnr_standard_error(m)
    return _fmt(m.get("psnr"), 2) + ("" if se is None or _num(m.get("psnr")) is None else f" ± {se:.2f}")


def measurably_better(a: dict[str, Any], b: dict[str, Any], *, paired: bool | None = None) -> bool:
    """Whether ``a``'s PSNR is above ``b``'s by more than twice the standard error of the difference.

    Paired (``paired=None``: whenever both hold per-image PSNR of the same images): the mean of the
    per-image differences against twice its standard error (:func:`paired_better`). Unpaired
    (``paired=False``, or results without per-image PSNR): the difference of the means against twice
    the two standard errors combined as if independent, which overstates the noise since both saw
    the same images. Unknown uncertainty claims nothing (False). Training-seed variation is in
    neither (which would blunt the test).
    """
    if paired is not False:
        better = paired_better(a, b, "psnr")
        if better is not None:
            return better
        if paired:
            return False
    pa, pb = _num(_metrics(a).get("psnr")), _num(_metrics(b).get("psnr"))
    sa, sb = psnr_standard_error(_metrics(a)), psnr_standard_error(_metrics(b))
    if pa is None or pb is None or sa is None or sb is None:
        return False
    return pa - pb > 2 * math.hypot(sa, sb)


def psnr_ranks(configs: list[dict[str, Any]]) -> list[int]:
    """Per config, 1 + the number of configurations measurably better: configs within noise share a rank.

    Paired comparisons when every config holds per-image PSNR of the same images
    (:func:`paired_items`), else unpaired for all (one rule for the whole table).
    """
    paired = paired_items(configs, "psnr")
    return [1 + sum(measurably_better(other, c, paired=paired) for other in configs if other is not c)
            for c in configs]


__all__ = ["PER_ITEM_KEYS", "estimated_psnr_standard_error", "item_scores", "measurably_better", "paired_better",
           "paired_difference", "paired_items", "psnr_ranks", "psnr_standard_error", "psnr_standard_error_is_exact",
           "standard_error", "within_noise_rule"]
