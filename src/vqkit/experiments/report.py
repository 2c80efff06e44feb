"""Turn a sweep's ``results.json`` into ``report.md`` plus PNG plots.

Why: a sweep's raw JSON is hard to compare against the papers; this lays every config out in one
table shaped like the papers' (with their numbers beside ours where the preset has them) and draws
the plots that show at a glance what the numbers mean: training curves, PSNR per method, codebook
usage, rate–distortion, and the best reconstruction of each family. Everything missing (a log file,
a reconstruction PNG, LPIPS without weights, paper numbers) is skipped or shown as "n/a", so a
partial sweep still gets a report.

What a reader must not be misled by: the evaluation set's size is stated and PSNR carries a standard
error, with configurations within noise of each other sharing a rank. When every configuration's
``metrics.json`` holds per-image PSNR for the same images (``per_image``, written by ``vqkit eval``),
the standard error is exact and configurations are compared image by image: two are within noise
when |mean paired difference| < 2 × the standard error of the paired differences
(:func:`paired_difference`). Older results hold means only: the standard error is then estimated
(:func:`estimated_psnr_standard_error`), comparisons are unpaired, and the report says so. Usage
of a whole codebook and the mean usage of a residual quantizer's stages (a share of far fewer codes)
never share a column or an axis; configurations at one rate get a dot plot, not labels stacked on
one point; bar labels stay inside their axes; every file is written atomically. Paths in
``results.json`` are relative to its folder (older files hold absolute paths; both are read).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from ..models.pretrained import atomic_write
from ..plotting import label_bars, pyplot, save_figure
from ..train.log import LOG_FILE, read_records

PLOTS = ("curves.png", "psnr.png", "usage.png", "rate_distortion.png")
BEST = "best_reconstructions.png"


def _num(value: Any) -> float | None:
    """A metric as float, or None when it is absent, unavailable ({"unavailable": ...}) or not finite."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt(value: Any, digits: int = 3) -> str:
    x = _num(value)
    return "n/a" if x is None else f"{x:.{digits}f}"


def _percent(value: Any) -> str:
    x = _num(value)
    return "n/a" if x is None else f"{100 * x:.1f}"


def _bits(value: Any) -> str:
    """12.0 stays 12.0, 15.965784 becomes 15.97."""
    x = _num(value)
    if x is None:
        return "n/a"
    return f"{x:.1f}" if abs(x - round(x, 1)) < 1e-9 else f"{x:.2f}"


def md_cell(text: Any) -> str:
    """Escape pipes so a name like ||x - q||² does not split a markdown table cell."""
    return str(text).replace("|", "\\|")


def _metrics(config: dict[str, Any]) -> dict[str, Any]:
    metrics = config.get("metrics")
    return metrics if isinstance(metrics, dict) else {}


def _bits_of(config: dict[str, Any]) -> Any:
    return config.get("bits_per_token", _metrics(config).get("bits_per_token"))


def resolve_path(base: Path, value: Any) -> Path | None:
    """A path stored in ``results.json``: relative to ``base`` (the report's folder, as ``vqkit compare``
    writes it) or absolute (results.json files written before paths were relative); None when absent."""
    if not value:
        return None
    path = Path(str(value))
    return path if path.is_absolute() else Path(base).resolve() / path  # absolute: resolving twice is a no-op


def with_resolved_paths(base: Path, configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``configs`` whose ``run_dir`` and ``eval_dir`` are resolved against ``base``."""
    resolved = []
    for config in configs:
        copy = dict(config)
        for key in ("run_dir", "eval_dir"):
            path = resolve_path(base, copy.get(key))
            if path is not None:
                copy[key] = str(path)
        resolved.append(copy)
    return resolved


def _unavailable_notes(configs: list[dict[str, Any]]) -> list[str]:
    """One note per metric (LPIPS, rFID) that is unavailable, with the first config's reason."""
    notes = []
    for key, label in (("lpips", "LPIPS"), ("rfid", "rFID")):
        reasons = [_metrics(c)[key]["unavailable"] for c in configs
                   if isinstance(_metrics(c).get(key), dict) and "unavailable" in _metrics(c)[key]]
        if reasons:
            notes.append(f"{label} n/a: {reasons[0]}")
    return notes


_PAPER_COLUMNS = {"l1": "L1", "lpips": "LPIPS", "rfid": "rFID", "psnr": "PSNR", "ssim": "SSIM",
                  "usage": "codebook usage (%)"}
"""Metrics a preset may quote from its paper (``Entry.paper``), in table order (the papers' usage is of
the whole codebook)."""


def _side_info_notes(configs: list[dict[str, Any]]) -> list[str]:
    """Configs whose decoder needs more than the indices (instance-LayerNorm RFSQ): say how much."""
    notes = []
    for c in configs:
        side = _num(_metrics(c).get("side_bits_per_image"))
        if side:
            notes.append(f"{c.get('name', '?')}: decoding also needs {side:.0f} bits of side information per "
                         f"image, {_fmt(_metrics(c).get('bits_per_pixel'), 4)} bits per pixel in all")
    return notes


# --- codebook usage: a whole codebook's, or the mean of a residual quantizer's stages (never mixed) ---

def stage_count(config: dict[str, Any]) -> int:
    """How many codebooks (residual stages) a config's tokens index: ``len(usage_per_stage)``, else 1."""
    stages = _metrics(config).get("usage_per_stage")
    return len(stages) if isinstance(stages, list) and stages else 1


def stage_size(config: dict[str, Any]) -> int | None:
    """Codes per stage, 2^(bits per token / stages), when that is a whole number (equal stages)."""
    bits = _num(_bits_of(config))
    if bits is None:
        return None
    size = 2 ** (bits / stage_count(config))
    return round(size) if abs(size - round(size)) <= 1e-6 * size else None


def codes_label(config: dict[str, Any]) -> str:
    """What a config's usage is a share of: '4096' codes, or '2 × 64' (two residual stages of 64 codes)."""
    stages, size = stage_count(config), stage_size(config)
    if size is None:
        return "n/a" if _num(_bits_of(config)) is None else f"{stages} stages, {_bits(_bits_of(config))} bits"
    return f"{size}" if stages == 1 else f"{stages} × {size}"


def _ceiling_text(metrics: dict[str, Any]) -> str:
    ceiling = _num(metrics.get("usage_ceiling"))
    return f" (max {_percent(ceiling)})" if ceiling is not None and ceiling < 1 else ""


def usage_columns(configs: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Table columns for codebook use: 'codes (K)', then the whole-codebook usage and perplexity of
    single-codebook configs and, in columns of their own, the per-stage means of residual configs
    (a stage has far fewer codes: its usage is not comparable with a whole codebook's). Returns
    (header, one row of cells per config); a cell that does not apply is '—'."""
    single = any(stage_count(c) == 1 for c in configs)
    staged = any(stage_count(c) > 1 for c in configs)
    head = ["codes (K)", *(["codebook usage (% of K)", "perplexity"] if single else []),
            *(["per-stage usage (% of a stage's codes, mean)", "per-stage perplexity (mean)"] if staged else [])]
    rows = []
    for c in configs:
        m, multi = _metrics(c), stage_count(c) > 1
        cells = [_percent(m.get("usage")) + _ceiling_text(m), _fmt(m.get("perplexity"), 1)]
        rows.append([md_cell(codes_label(c)), *((["—", "—"] if multi else cells) if single else []),
                     *((cells if multi else ["—", "—"]) if staged else [])])
    return head, rows


def usage_notes(configs: list[dict[str, Any]], tokens_of: str = "evaluation set") -> list[str]:
    """The notes that say what the usage columns are shares of."""
    notes = [f"_codes (K): how many codes a token's index is drawn from (stages × codes per stage for a residual "
             f"quantizer). codebook usage: share of the K codes used at least once over every token of the "
             f"{tokens_of}; perplexity: exp of the entropy of their use._"]
    if any(stage_count(c) > 1 for c in configs):
        notes.append("_per-stage usage / perplexity (residual quantizers): each stage's own codes, averaged over "
                     "stages. A stage has far fewer codes than the whole codebook (64 against 4096 for 2 × 64 and "
                     "4096), so these are not comparable with the codebook usage column; the joint use of all "
                     "stages' codes is not measured._")
    if any(_ceiling_text(_metrics(c)) for c in configs):
        notes.append(f"_(max …): the most usage the {tokens_of}'s tokens allow, min(1, tokens / codes), averaged "
                     "over stages; a larger set is needed to test a claim of 100% usage._")
    return notes


# --- PSNR and its uncertainty ---

_PSNR_VARIANCE_PER_GAP = 20 / math.log(10)
"""Var(per-image PSNR) = (20 / ln 10) × (mean PSNR − PSNR of the mean MSE) when per-image MSE is log-normal."""


# --- per-item scores (metrics.json's per_image / per_utterance) and paired comparisons ---

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


def _images(configs: list[dict[str, Any]]) -> str:
    counts = sorted({round(n) for c in configs if (n := _num(_metrics(c).get("images"))) is not None})
    if not counts:
        return "an unknown number of"
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


def _ranking(configs: list[dict[str, Any]]) -> list[str]:
    scored = sorted((c for c in configs if _num(_metrics(c).get("psnr")) is not None),
                    key=lambda c: _num(_metrics(c).get("psnr")) or -math.inf, reverse=True)
    unscored = [c for c in configs if _num(_metrics(c).get("psnr")) is None]
    ranks = psnr_ranks(scored)
    paired = len(scored) > 1 and paired_items(scored, "psnr")
    lines = ["## Ranked by PSNR", ""]
    if len(scored) > 1 and set(ranks) == {1}:
        lines += [f"**All {len(scored)} configurations are within noise of one another**: the order below is by "
                  "PSNR only, not a ranking.", ""]
    head = "| rank | Method | PSNR (dB) ± s.e. | bits/token |"
    lines += [head + " paired Δ to the row above (dB) ± s.e. |" if paired else head,
              "|---|---|---|---|" + ("---|" if paired else "")]
    for i, (c, rank) in enumerate(zip(scored, ranks, strict=True)):
        shared = ranks.count(rank) > 1
        row = (f"| {rank}{'=' if shared else ''} | {md_cell(c.get('name', '?'))} | {_psnr_cell(c)} | "
               f"{_bits(_bits_of(c))} |")
        lines.append(row + f" {_paired_cell(scored[i - 1], c) if i else '—'} |" if paired else row)
    lines += [f"| n/a | {md_cell(c.get('name', '?'))} | n/a | {_bits(_bits_of(c))} |" + (" n/a |" if paired else "")
              for c in unscored]
    if paired:
        rule = (f"_rank: 1 + the number of configurations measurably better. Every configuration was evaluated "
                f"on the same {_images(scored)} images, so they are compared image by image: "
                f"{within_noise_rule('image')}; otherwise the one with the higher mean is measurably better. "
                "paired Δ: the mean over images of (the row above's PSNR − this row's PSNR) ± its standard error. "
                "Configurations sharing a rank (=) are not ranked against each other: their order is by PSNR only._")
    else:
        rule = ("_rank: 1 + the number of configurations measurably better, i.e. with a PSNR higher by more than "
                "twice the standard error of the difference (otherwise the two are within noise), the two "
                f"standard errors combined as if independent{_fallback_reason(scored)}. Configurations sharing a "
                "rank (=) are not ranked against each other: their order is by PSNR only._")
    return [*lines, "", rule, ""]


def _paired_cell(above: dict[str, Any], below: dict[str, Any]) -> str:
    a, b = item_scores(above, "psnr"), item_scores(below, "psnr")
    d = paired_difference(a[1], b[1]) if a is not None and b is not None else None
    return "n/a" if d is None else f"{d[0]:+.2f} ± {d[1]:.2f}"


def _fallback_reason(configs: list[dict[str, Any]]) -> str:
    """Why comparisons are unpaired, in parentheses; '' for a single configuration."""
    if len(configs) < 2:
        return ""
    missing = [str(c.get("name", "?")) for c in configs if item_scores(c, "psnr") is None]
    if len(missing) == len(configs):
        return (" (these results hold no per-image PSNR: they were evaluated before `vqkit eval` stored it; "
                "re-running `vqkit eval` into each run's eval-val/, then `vqkit compare`, stores it and makes the "
                "comparison paired and sharper)")
    if missing:
        return f" (no per-image PSNR for {md_cell(', '.join(missing))}: evaluated before `vqkit eval` stored it)"
    return " (the configurations' per-image PSNR is not of the same images, so it cannot be paired)"


def _psnr_note(configs: list[dict[str, Any]]) -> str:
    head = (f"_PSNR: mean over the {_images(configs)} evaluation images of each image's PSNR (not SimVQ's batch "
            "PSNR). ± s.e.: its standard error")
    seeds = ("Training-seed variation is left out (one seed here; another seed moves PSNR too): the comparisons "
             "are a guide to what is noise, not a test._")
    configs = [c for c in configs if _num(_metrics(c).get("psnr")) is not None] or configs
    exact = [psnr_standard_error_is_exact(_metrics(c)) for c in configs]
    spread = "the standard deviation of the per-image PSNR (stored in metrics.json) / √images"
    gap = ("estimated from the gap between the mean PSNR and the PSNR of the mean MSE (exact when per-image MSE "
           "is log-normal)")
    if all(exact) and (len(configs) < 2 or paired_items(configs, "psnr")):
        return (f"{head}, exact: {spread}. "
                + ("Comparisons are paired, image by image (see the ranking). " if len(configs) > 1 else "") + seeds)
    unpaired = ("Comparisons treat two configurations' errors as independent although both saw the same images "
                "(per-image PSNR of the same images for every configuration makes them paired and sharper).")
    if all(exact):
        return (f"{head}, exact: {spread}. The configurations' per-image PSNR is not of the same images (their "
                f"names or count differ), so comparisons are unpaired: {unpaired} {seeds}")
    if not any(exact):
        return (f"{head}; metrics.json holds no per-image PSNR here (evaluated before `vqkit eval` stored it), so "
                f"the spread over images is {gap}. {unpaired} {seeds}")
    names = ", ".join(str(c.get("name", "?")) for c, e in zip(configs, exact, strict=True) if not e)
    return (f"{head}, exact ({spread}) except for {md_cell(names)}, whose metrics.json holds no per-image PSNR "
            f"(evaluated before `vqkit eval` stored it): there the spread over images is {gap}. {unpaired} {seeds}")


def _main_table(configs: list[dict[str, Any]]) -> list[str]:
    papers = [c["paper"] if isinstance(c.get("paper"), dict) else {} for c in configs]
    paper_keys = [k for k in _PAPER_COLUMNS if any(_num(p.get(k)) is not None for p in papers)]
    files = any(isinstance(_metrics(c).get("file_bpp"), dict) for c in configs)
    rate_head = ["bpp nominal", "bpp file (static)", "bpp file (context)"] if files else []
    usage_head, usage_rows = usage_columns(configs)
    head = ["Method", "family", "bits/token", *rate_head, "L1", "LPIPS", "rFID", "PSNR (dB) ± s.e.", "SSIM",
            *usage_head, "train s", *(f"paper {_PAPER_COLUMNS[k]}" for k in paper_keys)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c, paper, usage in zip(configs, papers, usage_rows, strict=True):
        m = _metrics(c)
        found = m.get("file_bpp")
        rates: dict[str, Any] = found if isinstance(found, dict) else {}
        file_cells = [_fmt(m.get("bits_per_pixel"), 3), _fmt(rates.get("static"), 3), _fmt(rates.get("context"), 3)]
        row = [md_cell(c.get("name", "?")), md_cell(c.get("family", "")), _bits(_bits_of(c)),
               *(file_cells if files else []), _fmt(m.get("l1"), 4),
               _fmt(m.get("lpips"), 4), _fmt(m.get("rfid"), 2), _psnr_cell(c), _fmt(m.get("ssim"), 4),
               *usage, _fmt(c.get("train_seconds"), 0)]
        for k in paper_keys:
            x = _num(paper.get(k))
            row.append("" if x is None else _percent(x) if k == "usage" else f"{x:g}")
        lines.append("| " + " | ".join(row) + " |")
    if files:
        lines += ["", "_bpp file: each evaluation image's tokens entropy coded into a real .vqt file (header and "
                  "CRC included) with the prior fitted on training images at the end of training; nominal = "
                  "bits/token / f² (+ side information). The header (~40-50 bytes a file) is counted: on a "
                  "32×32 crop it alone is ~0.35 bpp, so small crops can cost more than nominal._"]
    lines += ["", _psnr_note(configs)]
    for note in usage_notes(configs):
        lines += ["", note]
    return lines


def _stage_table(configs: list[dict[str, Any]]) -> list[str]:
    """Per-stage usage/perplexity for residual configs (more than one stage)."""
    staged = [c for c in configs if stage_count(c) > 1]
    if not staged:
        return []
    lines = ["## Per-stage codebook usage (residual configs)", "",
             "| Method | codes per stage | usage per stage (% of that stage's codes) | perplexity per stage |",
             "|---|---|---|---|"]
    for c in staged:
        m = _metrics(c)
        usage = ", ".join(_percent(u) for u in m["usage_per_stage"])
        ppl = m.get("perplexity_per_stage")
        perplexity = ", ".join(_fmt(p, 1) for p in ppl) if isinstance(ppl, list) else "n/a"
        size = stage_size(c)
        lines.append(f"| {md_cell(c.get('name', '?'))} | {size or 'n/a'} | {usage} | {perplexity} |")
    return [*lines, ""]


# --- plots (each a figure builder, saved atomically by the caller) ---

def _read_log(run_dir: Any) -> list[dict[str, Any]]:
    """Training records of the run's log; [] if there is none."""
    if not run_dir:
        return []
    return [r for r in read_records(Path(run_dir) / LOG_FILE) if r.get("split") == "train" and "step" in r]


def curves_figure(configs: list[dict[str, Any]], metric: str = "l1") -> Any:
    """Training ``metric`` (or the total loss where a log lacks it) per step, one line per configuration."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 5))
    keys = set()
    for c in configs:
        records = _read_log(c.get("run_dir"))
        key = metric if any(metric in r for r in records) else "loss"
        points = [(r["step"], r[key]) for r in records if _num(r.get(key)) is not None]
        if points:
            keys.add(key)
            ax.plot([p[0] for p in points], [p[1] for p in points], label=str(c.get("name", "?")), lw=1.2)
    if keys:  # beside the axes: inside, it hides the curves
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        ax.text(0.5, 0.5, "no training logs found", ha="center", va="center", transform=ax.transAxes)
    shown = " / ".join(sorted(keys)) or metric
    ax.set(xlabel="step", ylabel=shown, title=f"training curves ({shown})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _plot_curves(path: Path, configs: list[dict[str, Any]], metric: str = "l1") -> None:
    save_figure(curves_figure(configs, metric), path)


def draw_bars(ax: Any, names: list[str], values: list[float | None], xlabel: str, title: str, *,
              errors: list[float] | None = None, xlim: tuple[float, float] | None = None) -> None:
    """One horizontal bar per name into ``ax``, first on top (as in the table); labels come later
    (:func:`~vqkit.plotting.label_bars`, once the figure is laid out). ``xlim``: a fixed scale."""
    y = list(range(len(names)))
    ax.barh(y, [v or 0.0 for v in values], color="tab:blue",
            xerr=errors, error_kw={"ecolor": "black", "capsize": 3, "lw": 1})
    ax.set_yticks(y, names, fontsize=8)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_xlabel(xlabel, fontsize=9)
    if title:
        ax.set_title(title, fontsize=10)
    ends = [(v or 0.0) + e for v, e in zip(values, errors or [0.0] * len(values), strict=True)]
    ax.set_xlim(*(xlim or (0.0, max([*ends, 1e-9]) * 1.02)))


def barh_figure(names: list[str], values: list[float | None], labels: list[str], xlabel: str, title: str, *,
                errors: list[float] | None = None, xlim: tuple[float, float] | None = None) -> Any:
    """A figure of :func:`draw_bars`, each bar labelled at its end and every label inside the axes:
    the x-axis grows to fit them, or with a fixed ``xlim`` a label that does not fit goes inside its bar."""
    fig, ax = pyplot().subplots(figsize=(8, 0.45 * len(names) + 1.5))
    draw_bars(ax, names, values, xlabel, title, errors=errors, xlim=xlim)
    fig.tight_layout()
    label_bars(ax, values, labels, errors=errors, extend=xlim is None)
    return fig


def _psnr_axis_label(configs: list[dict[str, Any]]) -> str:
    """'PSNR (dB, mean over images; whiskers ± 1 s.e.)', and when comparisons are paired a warning that
    overlapping whiskers do not make a tie."""
    label = "PSNR (dB, mean over images; whiskers ± 1 s.e.)"
    scored = [c for c in configs if _num(_metrics(c).get("psnr")) is not None]
    if len(scored) > 1 and paired_items(scored, "psnr"):
        label += "\nsame images for all: ties are judged on paired differences (report.md), not on whiskers"
    return label


def psnr_figure(configs: list[dict[str, Any]], images: str = "") -> Any:
    psnrs = [_num(_metrics(c).get("psnr")) for c in configs]
    ses = [psnr_standard_error(_metrics(c)) for c in configs]
    labels = [f"{_psnr_cell(c)} dB at {_bits(_bits_of(c))} bits/token" for c in configs]
    return barh_figure([str(c.get("name", "?")) for c in configs], psnrs, labels, _psnr_axis_label(configs),
                       f"PSNR per configuration{images}", errors=[s or 0.0 for s in ses])


def usage_figure(configs: list[dict[str, Any]], where: str) -> Any:
    """Codebook usage, whole-codebook configs and residual configs (mean per-stage usage) in separate panels."""
    plt = pyplot()
    single = [c for c in configs if stage_count(c) == 1]
    staged = [c for c in configs if stage_count(c) > 1]
    panels = [(group, title) for group, title in (
        (single, "whole codebook: % of its K codes used"),
        (staged, "residual quantizers: % of each stage's codes used, mean over stages")) if group] or [([], "")]
    heights = [max(1, len(group)) for group, _ in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 0.45 * sum(heights) + 1.4 * len(panels) + 0.6),
                             squeeze=False, gridspec_kw={"height_ratios": heights})
    fig.suptitle(f"codebook usage over {where}", fontsize=11)
    labelled = []
    for ax, (group, title) in zip(axes[:, 0], panels, strict=True):
        usages = [_num(_metrics(c).get("usage")) for c in group]
        labels = []
        for c, u in zip(group, usages, strict=True):
            of = (f"of {codes_label(c)} codes" if stage_count(c) == 1
                  else f"of {stage_size(c) or '?'} codes per stage (mean of {stage_count(c)} stages)")
            labels.append(f"{_percent(u)} % {of}{_ceiling_text(_metrics(c)).replace(')', ' %)')}")
        values = [None if u is None else 100 * u for u in usages]
        draw_bars(ax, [str(c.get("name", "?")) for c in group], values, "codes used (%)", title, xlim=(0, 100))
        labelled.append((ax, values, labels))
    fig.tight_layout()
    for ax, values, labels in labelled:
        label_bars(ax, values, labels, extend=False)
    return fig


_MARKERS = "osD^vP*Xh<>p"


def rate_distortion_figure(configs: list[dict[str, Any]]) -> Any:
    """PSNR against bits per token; when every configuration has one rate, a dot plot of PSNR at that rate.

    No text is written at a point: configurations are told apart by the y axis (one rate) or by a
    legend of distinct markers; configurations sharing a rate among several are spread sideways.
    """
    plt = pyplot()
    pts = [(c, bits, psnr, psnr_standard_error(_metrics(c)) or 0.0) for c in configs
           if (bits := _num(_bits_of(c))) is not None and (psnr := _num(_metrics(c).get("psnr"))) is not None]
    families = sorted({str(c.get("family", "")) for c, *_ in pts})
    color = {f: plt.get_cmap("tab10")(i % 10) for i, f in enumerate(families)}
    rates = sorted({round(b, 2) for _, b, _, _ in pts})
    if len(rates) <= 1:
        ordered = sorted(pts, key=lambda p: p[2], reverse=True)
        fig, ax = plt.subplots(figsize=(8, 0.42 * max(1, len(ordered)) + 1.8))
        seen: set[str] = set()
        for i, (c, _, psnr, se) in enumerate(ordered):
            family = str(c.get("family", ""))
            ax.errorbar(psnr, i, xerr=se, fmt="o", color=color[family], capsize=3, ms=6,
                        label=family if family not in seen else None)
            seen.add(family)
        ax.set_yticks(range(len(ordered)), [str(c.get("name", "?")) for c, *_ in ordered], fontsize=8)
        ax.set_ylim(len(ordered) - 0.5, -0.5)
        rate_text = f"{_bits(rates[0])} bits/token" if rates else "no rate recorded"
        ax.set_title(f"PSNR at one rate: all {len(ordered)} configurations at {rate_text}", fontsize=10)
        ax.set_xlabel(_psnr_axis_label(configs), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        if ordered:
            low = min(p - s for _, _, p, s in ordered)
            high = max(p + s for _, _, p, s in ordered)
            pad = max(0.05, 0.08 * (high - low))
            ax.set_xlim(low - pad, high + pad)
        if len(families) > 1:
            ax.legend(fontsize=7, title="family", title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                      borderaxespad=0)
        fig.tight_layout()
        label_bars(ax, [p for _, _, p, _ in ordered], [f"{p:.2f} ± {s:.2f}" for _, _, p, s in ordered],
                   errors=[s for *_, s in ordered])
        return fig
    fig, ax = plt.subplots(figsize=(9, 5.5))
    span = rates[-1] - rates[0]
    at_rate = {r: [p for p in pts if round(p[1], 2) == r] for r in rates}
    dodged = any(len(group) > 1 for group in at_rate.values())
    markers = {f: 0 for f in families}
    for rate, group in at_rate.items():
        for k, (c, _, psnr, se) in enumerate(group):
            family = str(c.get("family", ""))
            offset = (k - (len(group) - 1) / 2) * 0.015 * span
            ax.errorbar(rate + offset, psnr, yerr=se, fmt=_MARKERS[markers[family] % len(_MARKERS)],
                        color=color[family], capsize=3, ms=7, label=f"{c.get('name', '?')} ({family})")
            markers[family] += 1
    ax.set_xticks(rates, [_bits(r) for r in rates])
    ax.set_xlim(rates[0] - 0.08 * span, rates[-1] + 0.08 * span)
    ax.set_xlabel("bits per token" + (" (configurations at one rate are spread sideways to stay visible)"
                                      if dodged else ""), fontsize=9)
    ax.set_ylabel("PSNR (dB; whiskers ± 1 s.e.)")
    ax.set_title("rate–distortion", fontsize=10)
    ax.grid(alpha=0.3)
    legend = ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    width = legend.get_window_extent(fig.canvas.get_renderer()).width / fig.dpi
    fig.set_figwidth(7 + width)  # the plot keeps its width however long the names in the legend
    fig.tight_layout()
    return fig


def _best_reconstructions(path: Path, configs: list[dict[str, Any]]) -> bool:
    """Per family, the highest-PSNR config's reconstructions.png under its name; False if none exists."""
    best: dict[str, dict[str, Any]] = {}
    for c in configs:
        psnr = _num(_metrics(c).get("psnr"))
        png = Path(str(c.get("eval_dir") or "")) / "reconstructions.png"
        if psnr is None or not c.get("eval_dir") or not png.is_file():
            continue
        family = str(c.get("family", ""))
        if family not in best or psnr > (_num(_metrics(best[family]).get("psnr")) or -math.inf):
            best[family] = c
    panels: list[tuple[str, Image.Image]] = []
    for family, c in best.items():
        try:
            with Image.open(Path(str(c["eval_dir"])) / "reconstructions.png") as im:
                image = im.convert("RGB")
        except OSError:
            continue
        panels.append((f"{family}: {c.get('name', '?')} ({_psnr_cell(c)} dB)", image))
    if not panels:
        return False
    label_h = 16
    legend = "each panel: originals (top row), reconstructions (bottom row)"
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = max([image.width for _, image in panels]
                + [round(measure.textlength(text)) + 10 for text in [legend, *(t for t, _ in panels)]])
    height = label_h + sum(image.height + label_h for _, image in panels)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((2, 2), legend, fill="dimgray")
    y = label_h
    for text, image in panels:
        draw.text((2, y + 2), text, fill="black")
        sheet.paste(image, (0, y + label_h))
        y += image.height + label_h
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    atomic_write(path, buffer.getvalue())
    return True


def _minutes(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.0f} s ({seconds / 60:.1f} min)"


def eval_set_line(results: dict[str, Any], configs: list[dict[str, Any]]) -> str:
    """'- evaluation set: 14 images of photos (val split), 32×32 px each, ...' for an image sweep."""
    size = results.get("image_size")
    source = results.get("val_data") or f"{results.get('data', '?')} (its val split)"
    pixels = f", {size}×{size} px each" if size else ""
    same = ", the same images for every configuration" if paired_items(configs, "psnr") else ""
    return f"- evaluation set: {_images(configs)} images of {source}{pixels}{same}"


def _header(results: dict[str, Any]) -> list[str]:
    wall, train = _num(results.get("wall_seconds")), _num(results.get("train_seconds_total"))
    configs = [c for c in results.get("configs", []) if isinstance(c, dict)]
    return [
        f"# {results.get('title') or results.get('preset', 'sweep')}",
        "",
        f"- preset: {results.get('preset', 'n/a')}",
        f"- data: {results.get('data', 'n/a')}",
        f"- scale: {results.get('scale', 'n/a')}",
        f"- steps: {results.get('steps', 'n/a')}",
        f"- seed: {results.get('seed', 'n/a')}",
        *([f"- image size: {results.get('image_size', 'n/a')}", eval_set_line(results, configs)]
          if results.get("modality", "image") == "image" else
          [f"- training crops: {results.get('segment', 'n/a')} samples"]),
        f"- wall time of this command: {_minutes(wall)} (a resumed sweep counts only its last run)",
        f"- training time, all configurations: {_minutes(train)}",
        "",
    ]


def write_report(out_dir: Path, results: dict[str, Any]) -> list[Path]:
    """Write ``report.md`` and the PNG plots for ``results`` (a sweep's results.json) into ``out_dir``.

    Relative ``run_dir`` / ``eval_dir`` paths are taken relative to ``out_dir`` (results.json's folder).
    Every file is written atomically. Returns the paths written, ``report.md`` first.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    configs = with_resolved_paths(out_dir, [c for c in results.get("configs", []) if isinstance(c, dict)])
    size = results.get("image_size")
    images = f" ({_images(configs)} images" + (f" at {size}×{size} px)" if size else ")")

    written: list[Path] = []
    _plot_curves(out_dir / "curves.png", configs)
    save_figure(psnr_figure(configs, images), out_dir / "psnr.png")
    save_figure(usage_figure(configs, f"the evaluation set{images}"), out_dir / "usage.png")
    save_figure(rate_distortion_figure(configs), out_dir / "rate_distortion.png")
    written += [out_dir / name for name in PLOTS]
    has_best = _best_reconstructions(out_dir / BEST, configs)
    if has_best:
        written.append(out_dir / BEST)

    lines = [*_header(results), "## Results", "", *_main_table(configs), ""]
    notes = _unavailable_notes(configs) + _side_info_notes(configs)
    if notes:
        lines += [f"_{md_cell(note)}_  " for note in notes] + [""]
    lines += [*_ranking(configs), *_stage_table(configs), "## Plots", ""]
    lines += [f"- [{p.name}]({p.name})" for p in written]
    lines.append("")

    report = out_dir / "report.md"
    atomic_write(report, "\n".join(lines).encode())
    return [report, *written]


__all__ = ["PER_ITEM_KEYS", "codes_label", "estimated_psnr_standard_error", "eval_set_line", "item_scores",
           "md_cell", "measurably_better", "paired_better", "paired_difference", "paired_items", "psnr_ranks",
           "psnr_standard_error", "psnr_standard_error_is_exact", "resolve_path", "stage_count", "stage_size",
           "standard_error", "usage_columns", "usage_notes", "with_resolved_paths", "within_noise_rule",
           "write_report"]
