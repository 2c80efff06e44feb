"""``vqkit encode`` / ``vqkit decode`` / ``vqkit fit-prior``: files in, token files out, files back.

A failing file is reported (its name and the cause) and the others go on; the command then exits
non-zero. Output files are written atomically, so an interrupted batch never leaves half a file.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..compress import ImageCodec, fit_and_save_prior, read_image, to_tensor, write_png
from ..data.images import find_images
from ..metrics import psnr
from ..models.pretrained import atomic_write

ENCODE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
SUFFIX = ".vqt"


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


def plan(inputs: Sequence[str], out: str, extensions: Sequence[str], suffix: str) -> list[Job]:
    """Files (or every matching file under folders) -> OUT/relative-path with ``suffix``."""
    jobs: list[Job] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            root = path
            files = find_images(path, extensions)
        elif path.is_file():
            root, files = path.parent, [path]
        else:
            raise ValueError(f"{path}: no such file or folder")
        jobs += [Job(f, Path(out) / f.relative_to(root).with_suffix(suffix)) for f in files]
    seen: dict[Path, Path] = {}
    for job in jobs:
        if job.target in seen:
            raise ValueError(f"{seen[job.target]} and {job.source} would both be written to {job.target}")
        seen[job.target] = job.source
    return jobs


def _progress(jobs: list[Job], what: str) -> Iterator[Job]:
    yield from tqdm(jobs, desc=what, unit="file", file=sys.stderr, disable=len(jobs) < 2, leave=False)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(psnr(to_tensor(a), to_tensor(b))[0])


def run_encode(inputs: Sequence[str], out: str, model: str, prior: str, check: bool, device: str) -> int:
    jobs, failed = plan(inputs, out, ENCODE_EXTENSIONS, SUFFIX), 0
    codec = ImageCodec.from_pretrained(model, device=device)
    total_bits = total_pixels = 0.0
    start = time.perf_counter()
    for job in _progress(jobs, "encode"):
        try:
            image = read_image(job.source)
            encoded = codec.encode(image, prior)
            job.target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(job.target, encoded.data)
        except ValueError as err:
            failed += 1
            tqdm.write(f"vqkit: error: {job.source}: {err}", file=sys.stderr)
            continue
        line = (f"{job.source} -> {job.target}: {len(encoded.data):,} bytes, {encoded.bpp()['file']:.3f} bpp "
                f"({image.shape[1]}x{image.shape[0]}, nominal {encoded.bpp()['nominal']:.3f} bpp)")
        if check:
            line += f", PSNR {_psnr(image, codec.decode(encoded.data)):.2f} dB"
        tqdm.write(line)
        total_bits += encoded.file_bits
        total_pixels += encoded.pixels
    seconds = time.perf_counter() - start
    if total_pixels:
        print(f"encoded {len(jobs) - failed} file(s) with {codec.name} ({prior} prior): "
              f"{total_bits / total_pixels:.3f} bpp overall, {seconds:.1f} s")
    return 1 if failed else 0


def run_decode(inputs: Sequence[str], out: str, model: str, device: str) -> int:
    jobs, failed = plan(inputs, out, (SUFFIX,), ".png"), 0
    codec = ImageCodec.from_pretrained(model, device=device)
    for job in _progress(jobs, "decode"):
        try:
            image = codec.decode(job.source.read_bytes())
            job.target.parent.mkdir(parents=True, exist_ok=True)
            write_png(job.target, image)
        except (ValueError, OSError) as err:
            failed += 1
            tqdm.write(f"vqkit: error: {job.source}: {err}", file=sys.stderr)
            continue
        tqdm.write(f"{job.source} -> {job.target} ({image.shape[1]}x{image.shape[0]})")
    return 1 if failed else 0


def run_fit_prior(run: str, data: str, max_images: int, device: str) -> Path:
    """Fit the static and context tables of ``run``'s model on up to ``max_images`` training images."""
    return fit_and_save_prior(run, data, max_images, device, progress=True)
