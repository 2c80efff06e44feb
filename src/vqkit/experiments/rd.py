"""``vqkit rd``: rate–distortion of tokenizers beside JPEG, WebP and AVIF, on the same images, in one run.

Each tokenizer gives one operating point with four rates — nominal (tokens × Σ log2 K, what the
papers quote), the prior's cross-entropy (the ideal code length), the range-coded payload, and the
whole file with its header — and each classical codec a curve over a sweep of qualities. Rates are
bits per pixel of the original image; PSNR and SSIM are per image, then averaged over the images,
for every codec alike.
"""

from __future__ import annotations

import dataclasses
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types as at
import numpy as np
from PIL import Image, features
from tqdm import tqdm

from ..codec.tiled import Codec
from ..data.files import find_images, spread
from ..metrics import psnr, ssim
from ..metrics.bjontegaard import bd_psnr, bd_rate, overlap
from ..modalities import IMAGE, open_codec
from ..modalities.image.codec import to_tensor
from ..modalities.image.io import read_image
from ..models.pretrained import FAMILY, QUALITY
from ..plotting import pyplot, save_figure
from ..storage import atomic_write
from ..validation import ConfigError, Device, NonEmptyStr, NonNegativeInt, check_fields, resolve_device

CLASSICAL = {"JPEG": "jpeg", "WebP": "webp", "AVIF": "avif"}
RATES = ("nominal", "cross_entropy", "payload", "file")
PRIOR_STYLE = {"learned": ("*", 1.0), "context": ("s", 0.6), "static": ("D", 0.35), "uniform": ("x", 0.35)}
"""Marker and opacity of each prior's curve in rd.png: the best prior (learned) drawn boldest."""


@dataclass(frozen=True)
class RDConfig:
    """What ``vqkit rd`` measures."""

    data: str = ""
    """folder of images (searched recursively), e.g. ../shared/data/images/kodak24"""
    out: NonEmptyStr = "results/rd"
    """folder for report.md, rd.json and rd.png"""
    priors: tuple[Literal["uniform", "static", "context", "learned"], ...] = ("static", "context", "learned")
    """the tokenizers' entropy models, each a row: uniform, static, context, learned (a model without fitted
    tables for one is measured without it, and the report says so)"""
    qualities: tuple[Annotated[int, at.Ge(0), at.Le(100)], ...] = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90)
    """quality settings of the classical codecs (Pillow's 0-100 scale)"""
    max_images: NonNegativeInt = 0
    """use at most this many images, evenly spread (0 = all)"""
    device: Device = "cpu"
    """'cpu' or 'cuda[:N]' for the tokenizers"""

    def __post_init__(self) -> None:
        if not self.data:
            raise ConfigError("vqkit rd: --data (a folder of images) is required")
        check_fields(self)
        if not self.qualities or not self.priors:
            raise ConfigError(f"vqkit rd: give at least one quality and one prior, got {self.qualities}, {self.priors}")


def classical_codecs() -> dict[str, str]:
    """The classical codecs this Pillow can write (AVIF and WebP depend on how it was built)."""
    return {name: fmt for name, fmt in CLASSICAL.items() if fmt == "jpeg" or features.check(fmt)}


def _quality(image: np.ndarray, decoded: np.ndarray) -> tuple[float, float]:
    a, b = to_tensor(image), to_tensor(decoded)
    return float(psnr(a, b)[0]), float(ssim(a, b)[0])


def _classical(image: np.ndarray, fmt: str, quality: int) -> tuple[int, np.ndarray]:
    pil = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)
    buf = io.BytesIO()
    pil.save(buf, format=fmt.upper(), quality=quality)
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as back:
        decoded = np.asarray(back.convert("L" if image.shape[2] == 1 else "RGB"), dtype=np.uint8)
    return 8 * len(data), decoded.reshape(image.shape)


def run_rd(cfg: RDConfig, models: list[str]) -> dict[str, Any]:
    """Measure ``models`` (saved models, shipped names, or :data:`FAMILY`: the shipped ``--quality`` ladder as one
    curve) and the classical codecs on ``cfg.data``; writes report.md, rd.json and rd.png."""
    files = find_images(cfg.data, IMAGE.extensions)
    files = spread(files, cfg.max_images or None)
    family = list(dict.fromkeys(m for m, _ in QUALITY))
    wanted, models = models, list(dict.fromkeys(m for name in models for m in (family if name == FAMILY else [name])))
    codecs = [open_codec(m, resolve_device(cfg.device)) for m in models]
    for model, (_, modality) in zip(models, codecs, strict=True):
        if modality is not IMAGE:
            raise ValueError(f"vqkit rd compares image tokenizers with JPEG, WebP and AVIF; {model} is a "
                             f"{modality.name} model")
    classical = classical_codecs()
    usable = {m: [p for p in cfg.priors if p == "uniform" or p in c.fitted_priors]
              for m, (c, _) in zip(models, codecs, strict=True)}
    missing = {m: [p for p in cfg.priors if p not in usable[m]] for m in models if len(usable[m]) < len(cfg.priors)}
    bare = [m for m in models if not usable[m]]
    if bare:
        raise ValueError(f"vqkit rd: {bare} have tables for none of the priors {cfg.priors}: fit them with "
                         "`vqkit fit-prior`, or add --priors uniform")
    records: list[dict[str, Any]] = []
    start = time.perf_counter()
    # progress always shown: a terminal's bar, or a line every 30 s in a log (no terminal)
    for path in tqdm(files, desc="rd", unit="image", file=sys.stderr, mininterval=1 if sys.stderr.isatty() else 30):
        image = read_image(path)
        pixels = image.shape[0] * image.shape[1]
        for model, (codec, _) in zip(models, codecs, strict=True):
            grid, side, shape = codec.tokens(image)
            side_bytes = b"" if side is None else side.tobytes()
            total = grid.shape[0]
            for k in _stage_cuts(codec):
                decoded = codec.render(grid[:k], side, shape)
                p, s = _quality(image, decoded)
                for prior in usable[model]:
                    encoded = codec.pack(grid, side_bytes, shape, prior, None if k == total else k)
                    if prior == usable[model][0] and not np.array_equal(codec.decode(encoded.data), decoded):
                        raise RuntimeError(f"{path}: the .vqt file does not decode to the measured image")
                    records.append({"codec": model, "setting": prior, "stages": k, "image": path.name, "psnr": p,
                                    "ssim": s, **{f"bpp_{n}": v for n, v in encoded.bits_per_sample().items()}})
        for name, fmt in classical.items():
            for q in cfg.qualities:
                bits, decoded = _classical(image, fmt, q)
                p, s = _quality(image, decoded)
                records.append({"codec": name, "setting": q, "image": path.name, "psnr": p, "ssim": s,
                                "bpp_file": bits / pixels})
    records, models = _family(records, wanted), wanted
    summary = _summarise(records)
    result = {"config": dataclasses.asdict(cfg), "models": models, "images": len(files),
              "wall_seconds": time.perf_counter() - start, "skipped_codecs": sorted(set(CLASSICAL) - set(classical)),
              "missing_priors": missing, "summary": summary, "bd": bd_table(summary, models), "records": records}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "rd.json", (json.dumps(result, indent=1) + "\n").encode())
    _plot(summary, models, out / "rd.png", Path(cfg.data).name, len(files))
    atomic_write(out / "report.md", format_report(result).encode())
    return result


def _family(records: list[dict[str, Any]], wanted: list[str]) -> list[dict[str, Any]]:
    """With :data:`FAMILY` wanted: the records of its operating points relabelled as one model whose 'stages'
    is the quality Q; records of models measured only for the family dropped."""
    if FAMILY not in wanted:
        return records
    ladder = {point: q for q, point in enumerate(QUALITY, 1)}
    relabelled = [{**r, "codec": FAMILY, "stages": ladder[(r["codec"], r["stages"])]} for r in records
                  if (r["codec"], r.get("stages")) in ladder]
    kept = [r for r in records if r["codec"] in wanted or r["codec"] in CLASSICAL]
    return kept + relabelled


def _stage_cuts(codec: Codec[Any]) -> range:
    """The operating points of one model: every prefix of stages of a layered (multi-stage) model, else one."""
    total = len(codec.specs)
    return range(1, total + 1) if total > 1 else range(total, total + 1)


def _summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["codec"], str(r["setting"]), int(r.get("stages", 0))), []).append(r)
    rows = []
    for (codec, setting, stages), rs in groups.items():
        row: dict[str, Any] = {"codec": codec, "setting": setting, "images": len(rs)}
        if stages:
            row["stages"] = stages
        for key in ("psnr", "ssim", *(f"bpp_{k}" for k in RATES)):
            if key in rs[0]:
                row[key] = float(np.mean([r[key] for r in rs]))
        rows.append(row)
    return rows


def curves(summary: list[dict[str, Any]], models: list[str]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(codec, prior) -> its operating points sorted by rate: a tokenizer's stage cuts, a classical codec's
    qualities (prior "")."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in summary:
        key = (r["codec"], r["setting"] if r["codec"] in models else "")
        out.setdefault(key, []).append(r)
    return {k: sorted(v, key=lambda r: r["bpp_file"]) for k, v in out.items()}


def bd_table(summary: list[dict[str, Any]], models: list[str]) -> list[dict[str, Any]]:
    """Bjøntegaard deltas (whole-file bpp, PSNR) of every tokenizer curve against every classical codec, over
    the PSNR range both reach (:mod:`vqkit.metrics.bjontegaard`); None where a curve has one point or none
    of its range overlaps."""
    table, all_curves = [], curves(summary, models)
    for (model, prior), pts in all_curves.items():
        if model not in models:
            continue
        for name in CLASSICAL:
            ref = all_curves.get((name, ""))
            if not ref:
                continue
            # a lossless point (identical pixels: infinite PSNR, e.g. JPEG on a flat image) is off any curve
            ref_ok = [r for r in ref if np.isfinite(r["psnr"])]
            pts_ok = [r for r in pts if np.isfinite(r["psnr"])]
            args = ([r["bpp_file"] for r in ref_ok], [r["psnr"] for r in ref_ok],
                    [r["bpp_file"] for r in pts_ok], [r["psnr"] for r in pts_ok])
            shared = overlap(*args) if ref_ok and pts_ok else None
            usable = bool(ref_ok and pts_ok)
            table.append({"model": model, "prior": prior, "against": name, "points": len(pts),
                          "bd_rate": bd_rate(*args) if usable else None, "bd_psnr": bd_psnr(*args) if usable else None,
                          "psnr_range": None if shared is None else list(shared)})
    return table


def _plot(summary: list[dict[str, Any]], models: list[str], path: Path, data: str, n: int) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 6))
    for ax, metric, label in ((axes[0], "psnr", "PSNR (dB)"), (axes[1], "ssim", "SSIM")):
        for name in CLASSICAL:
            rows = sorted((r for r in summary if r["codec"] == name), key=lambda r: r["bpp_file"])
            if rows:
                ax.plot([r["bpp_file"] for r in rows], [r[metric] for r in rows], "o-", ms=3, label=name)
        for i, model in enumerate(models):
            color = f"C{3 + i}"
            points = "qualities" if model == FAMILY else "stage cuts"
            for (name, prior), rows in curves(summary, models).items():
                if name != model:
                    continue
                marker, alpha = PRIOR_STYLE.get(prior, ("x", 0.5))
                ax.plot([r["bpp_file"] for r in rows], [r[metric] for r in rows], "-", marker=marker, color=color,
                        ms=9 if marker == "*" else 5, alpha=alpha,
                        label=f"{Path(model).name}, {prior} prior" + (f" ({len(rows)} {points})"
                                                                      if len(rows) > 1 else ""))
            top = max((r for r in summary if r["codec"] == model), key=lambda r: r["bpp_nominal"])
            ax.plot(top["bpp_nominal"], top[metric], "o", mfc="none", color=color, ms=7)
        ax.set_xlabel("bits per pixel (whole file; ○ = a tokenizer's nominal rate, Σ log2 K per token)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    legend_rows = -(-len(labels) // 4)
    fig.suptitle(f"Rate–distortion on {data} ({n} images, mean over images)")
    fig.tight_layout(rect=(0, 0.045 * legend_rows + 0.02, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    save_figure(fig, path, dpi=120)


def format_report(result: dict[str, Any]) -> str:
    cfg, summary = result["config"], result["summary"]
    lines = [f"# Rate–distortion on {Path(cfg['data']).name}", "",
             f"{result['images']} images, whole (no crops); rates in bits per pixel of the original image; "
             "PSNR and SSIM per image, then averaged. Tokenizer rates: nominal = tokens × Σ log2 K (the papers' "
             "figure); cross-entropy = ideal code length under the prior; payload = range-coded bytes; file = the "
             "whole .vqt file, header and CRC included. A tokenizer's PSNR and SSIM are the same for every prior "
             "(entropy coding is lossless).", ""]
    if result["skipped_codecs"]:
        lines += [f"Not available in this Pillow: {', '.join(result['skipped_codecs'])}.", ""]
    for model, priors in result.get("missing_priors", {}).items():
        lines += [f"{model} has no fitted tables for the {', '.join(priors)} prior(s): measured without them "
                  "(`vqkit fit-prior --learned` fits the learned one).", ""]
    lines += ["## Tokenizers", "", "A model of several stages (RFSQ, RVQ) gives one operating point per prefix of its "
              "stages: the file cut to its first k stages (`vqkit truncate`), decoded."
              + (" `family` is the shipped codec family's ladder (`vqkit encode --quality Q`; its 'stages' column "
                 "is Q): " + ", ".join(f"{q} = {m} cut to {k}"
                                      for q, (m, k) in enumerate(QUALITY, 1)) + "." if FAMILY in result["models"]
                 else ""), "",
              "| model | prior | stages | nominal | cross-entropy | payload | file | file vs nominal | "
              "PSNR (dB) | SSIM |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for model in result["models"]:
        for r in sorted((r for r in summary if r["codec"] == model), key=lambda r: (r["setting"], r["bpp_file"])):
            saving = 1 - r["bpp_file"] / r["bpp_nominal"]
            lines.append(f"| {model} | {r['setting']} | {r.get('stages', '')} | {r['bpp_nominal']:.3f} | "
                         f"{r['bpp_cross_entropy']:.3f} | {r['bpp_payload']:.3f} | {r['bpp_file']:.3f} | "
                         f"{-saving:+.1%} | {r['psnr']:.2f} | {r['ssim']:.4f} |")
    lines += ["", "## Bjøntegaard deltas against the classical codecs", "",
              "Whole-file bpp and mean PSNR; piecewise-cubic (PCHIP) interpolation over the PSNR range both curves "
              "reach (`vqkit.metrics.bjontegaard`). BD-rate < 0: the tokenizer needs fewer bits than the codec for "
              "the same PSNR. n/a: one operating point, or no shared PSNR range.", "",
              "| model | prior | points | against | BD-rate | BD-PSNR (dB) | PSNR range (dB) |",
              "|---|---|---:|---|---:|---:|---|"]
    for b in result.get("bd", []):
        rate = "n/a" if b["bd_rate"] is None else f"{b['bd_rate']:+.1%}"
        gain = "n/a" if b["bd_psnr"] is None else f"{b['bd_psnr']:+.2f}"
        span = "—" if b["psnr_range"] is None else f"{b['psnr_range'][0]:.2f}–{b['psnr_range'][1]:.2f}"
        lines.append(f"| {b['model']} | {b['prior']} | {b['points']} | {b['against']} | {rate} | {gain} | {span} |")
    lines += ["", "## Classical codecs", "", "| codec | quality | bpp (file) | PSNR (dB) | SSIM |",
              "|---|---:|---:|---:|---:|"]
    for name in CLASSICAL:
        for r in sorted((r for r in summary if r["codec"] == name), key=lambda r: r["bpp_file"]):
            lines.append(f"| {name} | {r['setting']} | {r['bpp_file']:.3f} | {r['psnr']:.2f} | {r['ssim']:.4f} |")
    lines += ["", f"Wall time: {result['wall_seconds']:.0f} s. Plot: `rd.png`; every image's numbers: `rd.json`.", ""]
    return "\n".join(lines)
