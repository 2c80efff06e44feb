"""Turn a sweep's ``results.json`` into ``report.md`` plus PNG plots (:mod:`vqkit.reporting.plots`).

Why: a sweep's raw JSON is hard to compare against the papers; this lays every config out in one
table shaped like the papers' (with their numbers beside ours where the preset has them), ranks
them by PSNR and links the plots. Everything missing (a log file, a reconstruction PNG, LPIPS
without weights, paper numbers) is skipped or shown as "n/a", so a partial sweep still gets a report.

What a reader must not be misled by: the evaluation set's size is stated and PSNR carries a standard
error, with configurations within noise of each other sharing a rank (the rules: :mod:`vqkit.reporting.noise`;
paired, image by image, when every configuration holds per-image PSNR of the same images, else
unpaired, and the report says why). Whole-codebook and per-stage usage never share a column
(:mod:`vqkit.reporting.cells`); every file is written atomically. Paths in ``results.json`` are relative to its
folder (older files hold absolute paths; both are read).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ...plotting import save_figure
from ...reporting.cells import (
    _bits,
    _bits_of,
    _fmt,
    _metrics,
    _num,
    _percent,
    md_cell,
    stage_count,
    stage_size,
    usage_columns,
    usage_notes,
)
from ...reporting.common import header, with_resolved_paths
from ...reporting.noise import (
    _psnr_cell,
    item_scores,
    paired_difference,
    paired_items,
    psnr_ranks,
    psnr_standard_error_is_exact,
    within_noise_rule,
)
from ...reporting.plots import (
    BEST,
    PLOTS,
    best_reconstructions,
    curves_figure,
    psnr_figure,
    rate_distortion_figure,
    usage_figure,
)
from ...storage import atomic_write


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


def _images(configs: list[dict[str, Any]]) -> str:
    counts = sorted({round(n) for c in configs if (n := _num(_metrics(c).get("images"))) is not None})
    if not counts:
        return "an unknown number of"
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


def _ranking(configs: list[dict[str, Any]]) -> list[str]:
    scored = sorted((c for c in configs if _num(_metrics(c).get("psnr")) is not None),
                    key=lambda c: _num(_metrics(c).get("psnr")) or -math.inf, reverse=True)
    unscored = [c for c in configs if _num(_metrics(c).get("psnr")) is None]
    ranks = psnr_ranks(scored)  # "within noise" is not transitive: a lower mean can rank higher
    order = sorted(range(len(scored)), key=lambda i: ranks[i])  # stable: by PSNR within a rank
    scored, ranks = [scored[i] for i in order], [ranks[i] for i in order]
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
                "Rows are in rank order; configurations sharing a rank (=) are not ranked against each other: their "
                "order is by PSNR only._")
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


def eval_set_line(results: dict[str, Any], configs: list[dict[str, Any]]) -> str:
    """'- evaluation set: 14 images of photos (val split), 32×32 px each, ...' for an image sweep."""
    size = results.get("image_size")
    source = results.get("val_data") or f"{results.get('data', '?')} (its val split)"
    pixels = f", {size}×{size} px each" if size else ""
    same = ", the same images for every configuration" if paired_items(configs, "psnr") else ""
    return f"- evaluation set: {_images(configs)} images of {source}{pixels}{same}"


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
    save_figure(curves_figure(configs), out_dir / "curves.png")
    save_figure(psnr_figure(configs, images), out_dir / "psnr.png")
    save_figure(usage_figure(configs, f"the evaluation set{images}"), out_dir / "usage.png")
    save_figure(rate_distortion_figure(configs), out_dir / "rate_distortion.png")
    written += [out_dir / name for name in PLOTS]
    has_best = best_reconstructions(out_dir / BEST, configs)
    if has_best:
        written.append(out_dir / BEST)

    configs_all = [c for c in results.get("configs", []) if isinstance(c, dict)]
    lines = [*header(results, [f"- image size: {results.get('image_size', 'n/a')}",
                                eval_set_line(results, configs_all)]), "## Results", "", *_main_table(configs), ""]
    notes = _unavailable_notes(configs) + _side_info_notes(configs)
    if notes:
        lines += [f"_{md_cell(note)}_  " for note in notes] + [""]
    lines += [*_ranking(configs), *_stage_table(configs), "## Plots", ""]
    lines += [f"- [{p.name}]({p.name})" for p in written]
    lines.append("")

    report = out_dir / "report.md"
    atomic_write(report, "\n".join(lines).encode())
    return [report, *written]


__all__ = ["eval_set_line", "write_report"]
