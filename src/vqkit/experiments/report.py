"""Turn a sweep's ``results.json`` into ``report.md`` plus PNG plots.

Why: a sweep's raw JSON is hard to compare against the papers; this lays every config out in one
table shaped like the papers' (with their numbers beside ours where the preset has them) and draws
the plots that show at a glance what the numbers mean: training curves, PSNR per method, codebook
usage, rate–distortion, and the best reconstruction of each family. Everything missing (a log file,
a reconstruction PNG, LPIPS without weights, paper numbers) is skipped or shown as "n/a", so a
partial sweep still gets a report.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from ..plotting import pyplot
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
                  "usage": "usage (%)"}
"""Metrics a preset may quote from its paper (``Entry.paper``), in table order."""


def _side_info_notes(configs: list[dict[str, Any]]) -> list[str]:
    """Configs whose decoder needs more than the indices (instance-LayerNorm RFSQ): say how much."""
    notes = []
    for c in configs:
        side = _num(_metrics(c).get("side_bits_per_image"))
        if side:
            notes.append(f"{c.get('name', '?')}: decoding also needs {side:.0f} bits of side information per "
                         f"image, {_fmt(_metrics(c).get('bits_per_pixel'), 4)} bits per pixel in all")
    return notes


def _main_table(configs: list[dict[str, Any]]) -> list[str]:
    papers = [c["paper"] if isinstance(c.get("paper"), dict) else {} for c in configs]
    paper_keys = [k for k in _PAPER_COLUMNS if any(_num(p.get(k)) is not None for p in papers)]
    ceilings = [_num(_metrics(c).get("usage_ceiling")) for c in configs]
    capped = any(x is not None and x < 1 for x in ceilings)  # the set has fewer tokens than some codebook
    files = any(isinstance(_metrics(c).get("file_bpp"), dict) for c in configs)
    rate_head = ["bpp nominal", "bpp file (static)", "bpp file (context)"] if files else []
    head = ["Method", "family", "bits/token", *rate_head, "L1", "LPIPS", "rFID", "PSNR (dB)", "SSIM", "usage (%)",
            *(["max usage (%)"] if capped else []), "perplexity", "train s",
            *(f"paper {_PAPER_COLUMNS[k]}" for k in paper_keys)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c, paper, ceiling in zip(configs, papers, ceilings, strict=True):
        m = _metrics(c)
        found = m.get("file_bpp")
        rates: dict[str, Any] = found if isinstance(found, dict) else {}
        file_cells = [_fmt(m.get("bits_per_pixel"), 3), _fmt(rates.get("static"), 3), _fmt(rates.get("context"), 3)]
        row = [md_cell(c.get("name", "?")), md_cell(c.get("family", "")), _bits(_bits_of(c)),
               *(file_cells if files else []), _fmt(m.get("l1"), 4),
               _fmt(m.get("lpips"), 4), _fmt(m.get("rfid"), 2), _fmt(m.get("psnr"), 2), _fmt(m.get("ssim"), 4),
               _percent(m.get("usage")), *([_percent(ceiling)] if capped else []), _fmt(m.get("perplexity"), 1),
               _fmt(c.get("train_seconds"), 0)]
        for k in paper_keys:
            x = _num(paper.get(k))
            row.append("" if x is None else _percent(x) if k == "usage" else f"{x:g}")
        lines.append("| " + " | ".join(row) + " |")
    if files:
        lines += ["", "_bpp file: each evaluation image's tokens entropy coded into a real .vqt file (header and "
                  "CRC included) with the prior fitted on training images at the end of training; nominal = "
                  "bits/token / f² (+ side information). The header (~40-50 bytes a file) is counted: on a "
                  "32×32 crop it alone is ~0.35 bpp, so small crops can cost more than nominal._"]
    if capped:
        lines += ["", "_max usage: the most codes the evaluation set's tokens could use, min(1, tokens / codebook "
                  "size), averaged over stages; a larger set is needed to test a claim of 100% usage._"]
    return lines


def _stage_table(configs: list[dict[str, Any]]) -> list[str]:
    """Per-stage usage/perplexity for residual configs (more than one stage)."""
    staged = [c for c in configs if isinstance(_metrics(c).get("usage_per_stage"), list)
              and len(_metrics(c)["usage_per_stage"]) > 1]
    if not staged:
        return []
    lines = ["## Per-stage codebook usage (residual configs)", "",
             "| Method | usage per stage (%) | perplexity per stage |", "|---|---|---|"]
    for c in staged:
        m = _metrics(c)
        usage = ", ".join(_percent(u) for u in m["usage_per_stage"])
        ppl = m.get("perplexity_per_stage")
        perplexity = ", ".join(_fmt(p, 1) for p in ppl) if isinstance(ppl, list) else "n/a"
        lines.append(f"| {md_cell(c.get('name', '?'))} | {usage} | {perplexity} |")
    return [*lines, ""]


def _read_log(run_dir: Any) -> list[dict[str, Any]]:
    """Training records of the run's log; [] if there is none."""
    if not run_dir:
        return []
    return [r for r in read_records(Path(run_dir) / LOG_FILE) if r.get("split") == "train" and "step" in r]


def _plot_curves(path: Path, configs: list[dict[str, Any]], metric: str = "l1") -> None:
    """Training ``metric`` (or the total loss where a log lacks it) per step, one line per configuration."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    keys = set()
    for c in configs:
        records = _read_log(c.get("run_dir"))
        key = metric if any(metric in r for r in records) else "loss"
        points = [(r["step"], r[key]) for r in records if _num(r.get(key)) is not None]
        if points:
            keys.add(key)
            ax.plot([p[0] for p in points], [p[1] for p in points], label=str(c.get("name", "?")), lw=1.2)
    if keys:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no training logs found", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel="step", ylabel=" / ".join(sorted(keys)) or "l1", title="training curves")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _barh(path: Path, configs: list[dict[str, Any]], values: list[float | None], xlabel: str, title: str,
          labels: list[str]) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(configs) + 1.5))
    y = list(range(len(configs)))
    ax.barh(y, [v or 0.0 for v in values], color="tab:blue")
    ax.set_yticks(y, [str(c.get("name", "?")) for c in configs], fontsize=8)
    ax.invert_yaxis()  # first config on top, as in the table
    for i, (v, text) in enumerate(zip(values, labels, strict=True)):
        ax.text(v or 0.0, i, f" {text}", va="center", fontsize=7)
    ax.set(xlabel=xlabel, title=title)
    ax.margins(x=0.2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_rate_distortion(path: Path, configs: list[dict[str, Any]]) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    families = sorted({str(c.get("family", "")) for c in configs})
    colors = plt.get_cmap("tab10")
    for i, family in enumerate(families):
        pts = [(_num(_bits_of(c)), _num(_metrics(c).get("psnr")), str(c.get("name", "?")))
               for c in configs if str(c.get("family", "")) == family]
        pts = [p for p in pts if p[0] is not None and p[1] is not None]
        if not pts:
            continue
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=colors(i % 10), label=family, s=40)
        for x, y, name in pts:
            ax.annotate(name, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel="bits per token", ylabel="PSNR (dB)", title="rate–distortion")
    ax.grid(alpha=0.3)
    if families:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
        panels.append((f"{family}: {c.get('name', '?')} ({_fmt(_metrics(c).get('psnr'), 2)} dB)", image))
    if not panels:
        return False
    label_h = 16
    width = max(image.width for _, image in panels)
    height = sum(image.height + label_h for _, image in panels)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    y = 0
    for text, image in panels:
        draw.text((2, y + 2), text, fill="black")
        sheet.paste(image, (0, y + label_h))
        y += image.height + label_h
    sheet.save(path)
    return True


def _minutes(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.0f} s ({seconds / 60:.1f} min)"


def _header(results: dict[str, Any]) -> list[str]:
    wall, train = _num(results.get("wall_seconds")), _num(results.get("train_seconds_total"))
    return [
        f"# {results.get('title') or results.get('preset', 'sweep')}",
        "",
        f"- preset: {results.get('preset', 'n/a')}",
        f"- data: {results.get('data', 'n/a')}",
        f"- scale: {results.get('scale', 'n/a')}",
        f"- steps: {results.get('steps', 'n/a')}",
        f"- seed: {results.get('seed', 'n/a')}",
        *([f"- image size: {results.get('image_size', 'n/a')}"] if results.get("modality", "image") == "image" else
          [f"- training crops: {results.get('segment', 'n/a')} samples"]),
        f"- wall time of this command: {_minutes(wall)} (a resumed sweep counts only its last run)",
        f"- training time, all configurations: {_minutes(train)}",
        "",
    ]


def write_report(out_dir: Path, results: dict[str, Any]) -> list[Path]:
    """Write ``report.md`` and the PNG plots for ``results`` (a sweep's results.json) into ``out_dir``.

    Returns the paths written, ``report.md`` first.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    configs: list[dict[str, Any]] = [c for c in results.get("configs", []) if isinstance(c, dict)]

    written: list[Path] = []
    _plot_curves(out_dir / "curves.png", configs)
    psnrs = [_num(_metrics(c).get("psnr")) for c in configs]
    _barh(out_dir / "psnr.png", configs, psnrs, "PSNR (dB, per image)", "PSNR per method",
          [f"{_fmt(p, 2)} dB, {_bits(_bits_of(c))} bits/token" for p, c in zip(psnrs, configs, strict=True)])
    usages = [_num(_metrics(c).get("usage")) for c in configs]
    ceilings = [_num(_metrics(c).get("usage_ceiling")) for c in configs]
    _barh(out_dir / "usage.png", configs, [None if u is None else 100 * u for u in usages], "codebook usage (%)",
          "codebook usage over the evaluation set",
          [f"{_percent(u)} %" + (f" (max {_percent(m)} %)" if m is not None and m < 1 else "")
           for u, m in zip(usages, ceilings, strict=True)])
    _plot_rate_distortion(out_dir / "rate_distortion.png", configs)
    written += [out_dir / name for name in PLOTS]
    has_best = _best_reconstructions(out_dir / BEST, configs)
    if has_best:
        written.append(out_dir / BEST)

    lines = [*_header(results), "## Results", "", *_main_table(configs), ""]
    notes = _unavailable_notes(configs) + _side_info_notes(configs)
    if notes:
        lines += [f"_{md_cell(note)}_  " for note in notes] + [""]
    lines += ["PSNR is the per-image mean (not SimVQ's batch PSNR); usage is the share of codes used over the "
              "whole evaluation split.", ""]
    ranked = sorted(configs, key=lambda c: _num(_metrics(c).get("psnr")) or -math.inf, reverse=True)
    lines += ["## Ranked by PSNR", ""]
    lines += [f"{i}. {c.get('name', '?')}: {_fmt(_metrics(c).get('psnr'), 2)} dB at {_bits(_bits_of(c))} bits/token"
              for i, c in enumerate(ranked, 1)]
    lines += ["", *_stage_table(configs), "## Plots", ""]
    lines += [f"- [{p.name}]({p.name})" for p in written]
    lines.append("")

    report = out_dir / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return [report, *written]


__all__ = ["md_cell", "write_report"]
