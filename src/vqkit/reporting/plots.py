"""The image report's plots: training curves, PSNR per configuration, codebook usage, rate–distortion
and the best reconstruction of each family.

Why these: they show at a glance what the report's table means. What they must not mislead with:
PSNR carries ± 1 standard-error whiskers (and, when comparisons are paired, a warning that
overlapping whiskers are no tie); usage of a whole codebook and the mean usage of a residual
quantizer's stages never share an axis; configurations at one rate get a dot plot, not labels
stacked on one point; bar labels stay inside their axes. Each ``*_figure`` builds a figure for the
caller to save (atomically, :func:`~vqkit.plotting.save_figure`); :func:`curves_figure`,
:func:`usage_figure` and :func:`draw_bars` serve the speech report too.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from ..plotting import label_bars, pyplot
from ..storage import LOG_FILE, atomic_write, read_records
from .cells import _bits, _bits_of, _ceiling_text, _metrics, _num, _percent, codes_label, stage_count, stage_size
from .noise import _psnr_cell, paired_items, psnr_standard_error

PLOTS = ("curves.png", "psnr.png", "usage.png", "rate_distortion.png")
BEST = "best_reconstructions.png"


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


def best_reconstructions(path: Path, configs: list[dict[str, Any]]) -> bool:
    """Write one sheet to ``path``: per family, the highest-PSNR config's reconstructions.png under its name;
    False (nothing written) if none exists."""
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


__all__ = ["BEST", "PLOTS", "barh_figure", "best_reconstructions", "curves_figure", "draw_bars", "psnr_figure",
           "rate_distortion_figure", "usage_figure"]
