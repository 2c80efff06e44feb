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

from ..data.files import find_images, spread
from ..metrics import psnr, ssim
from ..modalities import IMAGE, open_codec
from ..modalities.image.codec import to_tensor
from ..modalities.image.io import read_image
from ..plotting import pyplot, save_figure
from ..storage import atomic_write
from ..validation import ConfigError, Device, NonEmptyStr, NonNegativeInt, check_fields, resolve_device

CLASSICAL = {"JPEG": "jpeg", "WebP": "webp", "AVIF": "avif"}
RATES = ("nominal", "cross_entropy", "payload", "file")


@dataclass(frozen=True)
class RDConfig:
    """What ``vqkit rd`` measures."""

    data: str = ""
    """folder of images (searched recursively), e.g. ../shared/data/images/kodak24"""
    out: NonEmptyStr = "results/rd"
    """folder for report.md, rd.json and rd.png"""
    priors: tuple[Literal["uniform", "static", "context"], ...] = ("static", "context")
    """the tokenizers' entropy models, each a row: uniform, static, context"""
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
    files = find_images(cfg.data, IMAGE.extensions)
    files = spread(files, cfg.max_images or None)
    codecs = [open_codec(m, resolve_device(cfg.device)) for m in models]
    for model, (_, modality) in zip(models, codecs, strict=True):
        if modality is not IMAGE:
            raise ValueError(f"vqkit rd compares image tokenizers with JPEG, WebP and AVIF; {model} is a "
                             f"{modality.name} model")
    classical = classical_codecs()
    records: list[dict[str, Any]] = []
    start = time.perf_counter()
    for path in tqdm(files, desc="rd", unit="image", file=sys.stderr, disable=None):
        image = read_image(path)
        pixels = image.shape[0] * image.shape[1]
        for model, (codec, _) in zip(models, codecs, strict=True):
            grid, side, shape = codec.tokens(image)
            decoded = codec.render(grid, side, shape)
            p, s = _quality(image, decoded)
            for prior in cfg.priors:
                encoded = codec.pack(grid, b"" if side is None else side.tobytes(), shape, prior)
                if prior == cfg.priors[0] and not np.array_equal(codec.decode(encoded.data), decoded):
                    raise RuntimeError(f"{path}: the .vqt file does not decode to the measured image")
                records.append({"codec": model, "setting": prior, "image": path.name, "psnr": p, "ssim": s,
                                **{f"bpp_{k}": v for k, v in encoded.bits_per_sample().items()}})
        for name, fmt in classical.items():
            for q in cfg.qualities:
                bits, decoded = _classical(image, fmt, q)
                p, s = _quality(image, decoded)
                records.append({"codec": name, "setting": q, "image": path.name, "psnr": p, "ssim": s,
                                "bpp_file": bits / pixels})
    summary = _summarise(records)
    result = {"config": dataclasses.asdict(cfg), "models": models, "images": len(files),
              "wall_seconds": time.perf_counter() - start, "skipped_codecs": sorted(set(CLASSICAL) - set(classical)),
              "summary": summary, "records": records}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "rd.json", (json.dumps(result, indent=1) + "\n").encode())
    _plot(summary, models, out / "rd.png", Path(cfg.data).name, len(files))
    atomic_write(out / "report.md", format_report(result).encode())
    return result


def _summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["codec"], str(r["setting"])), []).append(r)
    rows = []
    for (codec, setting), rs in groups.items():
        row: dict[str, Any] = {"codec": codec, "setting": setting, "images": len(rs)}
        for key in ("psnr", "ssim", *(f"bpp_{k}" for k in RATES)):
            if key in rs[0]:
                row[key] = float(np.mean([r[key] for r in rs]))
        rows.append(row)
    return rows


def _plot(summary: list[dict[str, Any]], models: list[str], path: Path, data: str, n: int) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 6))
    for ax, metric, label in ((axes[0], "psnr", "PSNR (dB)"), (axes[1], "ssim", "SSIM")):
        for name in CLASSICAL:
            rows = sorted((r for r in summary if r["codec"] == name), key=lambda r: r["bpp_file"])
            if rows:
                ax.plot([r["bpp_file"] for r in rows], [r[metric] for r in rows], "o-", ms=3, label=name)
        for i, model in enumerate(models):
            rows = [r for r in summary if r["codec"] == model]
            color, y = f"C{3 + i}", rows[0][metric]
            ax.plot([rows[0]["bpp_nominal"], min(r["bpp_file"] for r in rows)], [y, y], ":", color=color)
            ax.plot(rows[0]["bpp_nominal"], y, "o", mfc="none", color=color, ms=7)
            for row, marker in zip(rows, "*Ds^", strict=False):
                ax.plot(row["bpp_file"], y, marker, color=color, ms=11 if marker == "*" else 6,
                        label=f"{Path(model).name}, {row['setting']} prior")
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
    lines += ["## Tokenizers", "", "| model | prior | nominal | cross-entropy | payload | file | file vs nominal | "
              "PSNR (dB) | SSIM |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for model in result["models"]:
        for r in (r for r in summary if r["codec"] == model):
            saving = 1 - r["bpp_file"] / r["bpp_nominal"]
            lines.append(f"| {model} | {r['setting']} | {r['bpp_nominal']:.3f} | {r['bpp_cross_entropy']:.3f} | "
                         f"{r['bpp_payload']:.3f} | {r['bpp_file']:.3f} | {-saving:+.1%} | {r['psnr']:.2f} | "
                         f"{r['ssim']:.4f} |")
    lines += ["", "## Classical codecs", "", "| codec | quality | bpp (file) | PSNR (dB) | SSIM |",
              "|---|---:|---:|---:|---:|"]
    for name in CLASSICAL:
        for r in sorted((r for r in summary if r["codec"] == name), key=lambda r: r["bpp_file"]):
            lines.append(f"| {name} | {r['setting']} | {r['bpp_file']:.3f} | {r['psnr']:.2f} | {r['ssim']:.4f} |")
    lines += ["", f"Wall time: {result['wall_seconds']:.0f} s. Plot: `rd.png`; every image's numbers: `rd.json`.", ""]
    return "\n".join(lines)
