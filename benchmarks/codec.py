"""Speed and memory of ``vqkit encode`` / ``decode``: images per second, the share of the time spent in
entropy coding (against the tokenizer's own encode/decode), and peak memory on a large photo; then every
operating point of the model (each stage cut of a multi-stage one) on one 768×512 photo beside Pillow's
JPEG, WebP and AVIF in the same run, as ratios to AVIF at quality 30 (encode) and to the reference
tokenizer (decode, ``--reference``, the shipped default).

    .venv/bin/python benchmarks/codec.py --model default --data ../shared/data/images/kodak24
    .venv/bin/python benchmarks/codec.py --model runs/rfsq-cpu --large 4000x3000

Each phase is timed separately in the same run: tokens (tokenizer encoder + quantizer, tiled),
entropy coding (prior + range coder + container), entropy decoding, rendering (tokenizer decoder).
Peak memory is the process's resident high-water mark (``ru_maxrss``) measured in a fresh child
process for the large image, so earlier work does not hide it.

Threads are matched: ``--threads N`` (default 1) is torch's intra-op threads, OpenBLAS's (the learned
prior's products; set before numpy loads it) and Pillow's AVIF encoder's ``max_threads`` (JPEG and WebP
encode on one thread). Run it on an otherwise idle machine: another busy core slows both sides unevenly.
"""

# ruff: noqa: E402  (OpenBLAS reads its thread count when numpy is first imported)
from __future__ import annotations

import os
import sys

_GIVEN = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--threads=")]
_GIVEN += [b for a, b in zip(sys.argv, sys.argv[1:], strict=False) if a == "--threads"]
_THREADS = _GIVEN[-1] if _GIVEN else "1"
os.environ.setdefault("OPENBLAS_NUM_THREADS", _THREADS)

import argparse
import io
import json
import resource
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, features

from vqkit.codec import TokenFile, coders
from vqkit.codec.tiled import Codec
from vqkit.data.files import find_images
from vqkit.modalities import open_codec
from vqkit.modalities.image.io import read_image
from vqkit.models.pretrained import FAMILY, QUALITY
from vqkit.validation import flushed_subnormals


def phases(codec: Codec[np.ndarray], image: np.ndarray, prior: str, stages: int | None = None) -> dict[str, float]:
    """Seconds of each phase of one encode and decode (``stages``: the file cut to its first k stages)."""
    t0 = time.perf_counter()
    grid, side, shape = codec.tokens(image)
    t1 = time.perf_counter()
    encoded = codec.pack(grid, b"" if side is None else side.tobytes(), shape, prior, stages)
    t2 = time.perf_counter()
    file = TokenFile.from_bytes(encoded.data)
    expected, side_info = codec.check(file)
    tokens = coders.decode(codec.prior(prior).prefix(expected[0]), file.payload, expected, file.layered)
    t3 = time.perf_counter()
    codec.render(tokens, side_info, shape)
    t4 = time.perf_counter()
    assert np.array_equal(tokens, grid[: expected[0]])
    return {"tokens": t1 - t0, "entropy_encode": t2 - t1, "entropy_decode": t3 - t2, "render": t4 - t3,
            "bpp": encoded.bits_per_sample()["file"]}


def photo_768x512(data: str) -> np.ndarray:
    """A real photo at 768×512, the Kodak originals' size: the first image of ``data`` resized (Lanczos) —
    Kodak24 here is 500×500 crops — or scikit-image's astronaut when ``data`` has no image."""
    files = find_images(data) if Path(data).is_dir() else []
    if files:
        source = Image.fromarray(read_image(files[0]))
    else:
        from skimage import data as samples

        source = Image.fromarray(samples.astronaut())  # type: ignore[no-untyped-call]  # untyped in skimage
    return np.asarray(source.convert("RGB").resize((768, 512), Image.Resampling.LANCZOS))


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _pillow(image: np.ndarray, fmt: str, quality: int, repeats: int) -> dict[str, float]:
    threads = {"max_threads": torch.get_num_threads()} if fmt == "AVIF" else {}

    def encode() -> bytes:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format=fmt, quality=quality, **threads)
        return buf.getvalue()

    data = encode()

    def decode() -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))

    return {"encode": _median_seconds(encode, repeats), "decode": _median_seconds(decode, repeats),
            "bpp": 8 * len(data) / (image.shape[0] * image.shape[1])}


def operating_points(model: str, reference: str, data: str, prior: str, repeats: int) -> list[dict[str, Any]]:
    """Every operating point of ``model`` and Pillow's codecs on one 768×512 photo, in one run."""
    image = photo_768x512(data)
    rows: list[dict[str, Any]] = []
    for fmt, name, qualities in (("JPEG", "JPEG", (50, 75)), ("WEBP", "WebP", (50,)), ("AVIF", "AVIF", (30, 60))):
        if fmt != "JPEG" and not features.check(fmt.lower()):
            continue
        rows += [{"codec": name, "setting": f"q{q}", **_pillow(image, fmt, q, repeats)} for q in qualities]
    points: list[tuple[str, int | None, str]] = [(reference, None, "reference")]
    if model == FAMILY:  # the shipped --quality ladder: (model, stages kept) per quality
        points += [(name, k, f"--quality {q}: {name} {k} stage(s)") for q, (name, k) in enumerate(QUALITY, 1)]
    elif model != reference:
        total = len(open_codec(model)[0].specs)
        points += [(model, k, f"{k}/{total} stages") for k in (range(1, total + 1) if total > 1 else (None,))]
    codecs: dict[str, Codec[np.ndarray]] = {}
    for name, k, setting in points:
        if name not in codecs:
            codecs[name] = open_codec(name)[0]
        codec = codecs[name]
        k = None if k == len(codec.specs) else k  # the whole model
        runs = [phases(codec, image, prior, k) for _ in range(repeats)]
        med = {key: float(np.median([r[key] for r in runs])) for key in runs[0]}
        rows.append({"codec": name, "setting": setting, "bpp": med["bpp"],
                     "encode": med["tokens"] + med["entropy_encode"],
                     "decode": med["entropy_decode"] + med["render"],
                     "entropy_share_encode": med["entropy_encode"] / (med["tokens"] + med["entropy_encode"]),
                     "entropy_share_decode": med["entropy_decode"] / (med["entropy_decode"] + med["render"])})
    return rows


def print_operating_points(rows: list[dict[str, Any]], reference: str) -> None:
    avif = next((r for r in rows if r["codec"] == "AVIF" and r["setting"] == "q30"), None)
    ref = next(r for r in rows if r["codec"] == reference and r["setting"] == "reference")
    print(f"\n768×512 photo, every operating point beside Pillow (median of the repeats, same run, "
          f"{torch.get_num_threads()} thread(s) each)")
    print("| codec | setting | bpp | encode ms | decode ms | encode / AVIF q30 | decode / reference tokenizer | "
          "entropy coding share (enc / dec) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        enc_ratio = f"{r['encode'] / avif['encode']:.3f}×" if avif else "n/a"
        dec_ratio = f"{r['decode'] / ref['decode']:.2f}×" if "entropy_share_decode" in r else ""
        share = (f"{r['entropy_share_encode']:.0%} / {r['entropy_share_decode']:.0%}"
                 if "entropy_share_decode" in r else "")
        print(f"| {r['codec']} | {r['setting']} | {r['bpp']:.3f} | {1e3 * r['encode']:.1f} | {1e3 * r['decode']:.1f} | "
              f"{enc_ratio} | {dec_ratio} | {share} |")


def large(model: str, size: str, prior: str) -> dict[str, float]:
    """Encode and decode one synthetic photo-like image of ``size`` (WxH); report time and peak RSS."""
    w, h = (int(v) for v in size.split("x"))
    codec, _ = open_codec(model)
    image = np.empty((h, w, 3), np.uint8)
    rng, x = np.random.default_rng(0), np.arange(w, dtype=np.float32)
    for y0 in range(0, h, 256):  # in row blocks: the generator's temporaries must not set the peak
        y = np.arange(y0, min(h, y0 + 256), dtype=np.float32)[:, None]
        base = np.stack([np.sin(x / 97) * 80 + 0 * y, np.cos(y / 53) * 70 + 0 * x, np.sin((x + y) / 151) * 90], -1)
        image[y0 : y0 + 256] = np.clip(base + 128 + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = phases(codec, image, prior)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {**times, "peak_rss_mb": peak, "rss_before_mb": before, "megapixels": w * h / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="a model, or 'family' (the shipped --quality ladder)")
    parser.add_argument("--data", default="../shared/data/images/kodak24", help="folder of images to time")
    parser.add_argument("--max-images", type=int, default=8)
    parser.add_argument("--prior", default="context")
    parser.add_argument("--large", default="4000x3000", help="WxH of the large image ('' to skip)")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads (>= 1) of torch, OpenBLAS and the AVIF encoder")
    parser.add_argument("--reference", default="default", help="tokenizer whose decode time the ratios divide by")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each operating point (median)")
    parser.add_argument("--points-only", action="store_true", help="only the 768×512 operating-point table")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads < 1:
        parser.error("--threads must be at least 1 (the same count for torch, OpenBLAS and AVIF)")
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(large(args.model, args.large, args.prior)))
        return
    if args.points_only or args.model == FAMILY:  # the ladder's points only
        print_operating_points(operating_points(args.model, args.reference, args.data, args.prior, args.repeats),
                               args.reference)
        return
    codec, _ = open_codec(args.model)
    files = find_images(args.data)[: args.max_images]
    rows = [phases(codec, read_image(f), args.prior) for f in files]
    total = {k: float(np.sum([r[k] for r in rows])) for k in rows[0] if k != "bpp"}
    enc, dec = total["tokens"] + total["entropy_encode"], total["entropy_decode"] + total["render"]
    print(f"model {args.model}, prior {args.prior}, {len(files)} images of {Path(args.data).name}, "
          f"torch threads {torch.get_num_threads()}")
    print("| phase | seconds per image | share of its side |")
    print("|---|---:|---:|")
    for key, side in (("tokens", enc), ("entropy_encode", enc), ("entropy_decode", dec), ("render", dec)):
        print(f"| {key} | {total[key] / len(files):.3f} | {total[key] / side:.0%} |")
    print(f"encode: {len(files) / enc:.2f} images/s; decode: {len(files) / dec:.2f} images/s; "
          f"mean file rate {np.mean([r['bpp'] for r in rows]):.3f} bpp")
    if args.large:
        cmd = [sys.executable, __file__, "--child", "--model", args.model, "--large", args.large,
               "--prior", args.prior, "--threads", str(args.threads)]
        result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        print(f"large image {args.large} ({result['megapixels']:.0f} MP): encode "
              f"{result['tokens'] + result['entropy_encode']:.1f} s (entropy coding {result['entropy_encode']:.1f} s), "
              f"decode {result['entropy_decode'] + result['render']:.1f} s (entropy decoding "
              f"{result['entropy_decode']:.1f} s), peak RSS {result['peak_rss_mb']:.0f} MB "
              f"(process before the image: {result['rss_before_mb']:.0f} MB), {result['bpp']:.3f} bpp")
    print_operating_points(operating_points(args.model, args.reference, args.data, args.prior, args.repeats),
                           args.reference)


if __name__ == "__main__":
    with flushed_subnormals():  # as `vqkit` runs every command: before torch's worker threads exist
        main()
