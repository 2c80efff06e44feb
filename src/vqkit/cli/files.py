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

from tqdm import tqdm

from ..codec.tiled import Encoded
from ..data.files import find_images
from ..modalities import MODALITIES, open_codec
from ..runs import fit_run_prior
from ..storage import atomic_write
from ..validation import resolve_device

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


def _fail(job: Job, err: Exception) -> None:
    tqdm.write(f"vqkit: error: {job.source}: {err}", file=sys.stderr)


def _extensions() -> tuple[str, ...]:
    return tuple(ext for modality in MODALITIES.values() for ext in modality.extensions)


def run_encode(inputs: Sequence[str], out: str, model: str, prior: str, check: bool, device: str) -> int:
    jobs = plan(inputs, out, _extensions(), SUFFIX)
    codec, media = open_codec(model, resolve_device(device))
    failed, total_bits, total_units = 0, 0.0, 0.0
    start = time.perf_counter()
    for job in _progress(jobs, "encode"):
        try:
            if job.source.suffix.lower() not in media.extensions:
                raise ValueError(f"{codec.name} encodes {', '.join(media.extensions)} files")
            signal = media.read(job.source, codec)
            encoded = codec.encode(signal, prior)
            job.target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(job.target, encoded.data)
        except (ValueError, OSError) as err:
            failed += 1
            _fail(job, err)
            continue
        line = (f"{job.source} -> {job.target}: {len(encoded.data):,} bytes, {media.rate(encoded, codec)}, "
                f"{media.describe(signal, codec)}")
        if check:
            line += ", " + media.fidelity(signal, codec.decode(encoded.data), codec)
        tqdm.write(line)
        total_bits += encoded.file_bits
        total_units += encoded.samples
    if total_units:
        overall = Encoded(b"", int(total_units), 0.0, 0.0, 0, int(total_bits))
        print(f"encoded {len(jobs) - failed} file(s) with {codec.name} ({prior} prior): "
              f"{media.rate(overall, codec).split(' (')[0]} overall, {time.perf_counter() - start:.1f} s")
    return 1 if failed else 0


def run_decode(inputs: Sequence[str], out: str, model: str, device: str) -> int:
    jobs = plan(inputs, out, (SUFFIX,), ".out")
    codec, media = open_codec(model, resolve_device(device))
    failed = 0
    for job in _progress(jobs, "decode"):
        target = job.target.with_suffix(media.decoded_suffix)
        try:
            signal = codec.decode(job.source.read_bytes())
            target.parent.mkdir(parents=True, exist_ok=True)
            media.write(target, signal, codec)
        except (ValueError, OSError) as err:
            failed += 1
            _fail(job, err)
            continue
        tqdm.write(f"{job.source} -> {target} ({media.describe(signal, codec)})")
    return 1 if failed else 0


def run_fit_prior(run: str, data: str, max_images: int, device: str) -> Path:
    """Fit the static and context tables of ``run``'s model on up to ``max_images`` training items of its
    modality; returns the path of ``prior.safetensors``."""
    return fit_run_prior(run, data, max_images, device)
