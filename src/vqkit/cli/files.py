"""``vqkit encode`` / ``vqkit decode`` / ``vqkit fit-prior``: files in, token files out, files back.

A failing file is reported (its name and the cause) and the others go on; the command then exits
non-zero. Output files are written atomically, so an interrupted batch never leaves half a file.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor
from tqdm import tqdm

from ..compress import (
    Codec,
    Encoded,
    ImageCodec,
    check_writable,
    fit_and_save_prior,
    resolve_model_dir,
    to_tensor,
)
from ..data.files import find_images
from ..metrics import psnr
from ..modalities.image.io import read_image, write_png
from ..storage import atomic_write
from ..validation import resolve_device

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


@dataclass(frozen=True)
class Media:
    """How a modality's files are read, written, described and compared."""

    extensions: tuple[str, ...]
    suffix: str
    read: Callable[[Path, Any], Any]
    write: Callable[[Path, Any, Any], None]
    describe: Callable[[Any, Any], str]
    rate: Callable[[Encoded, Any], str]
    fidelity: Callable[[Any, Any, Any], str]
    fit: Callable[[Any, str, int], Any]


def _image_fidelity(a: np.ndarray, b: np.ndarray, codec: Any) -> str:
    return f"PSNR {float(psnr(to_tensor(a), to_tensor(b))[0]):.2f} dB"


def _audio_fidelity(a: Tensor, b: Tensor, codec: Any) -> str:
    from ..metrics.speech import mel_distance, si_sdr

    return f"SI-SDR {float(si_sdr(b, a)[0]):.2f} dB, mel distance {float(mel_distance(b, a, codec.sample_rate)[0]):.3f}"


def _kbps(encoded: Encoded, codec: Any) -> str:
    seconds = encoded.pixels / codec.sample_rate
    return f"{encoded.file_bits / seconds / 1000:.3f} kbps (nominal {encoded.nominal_bits / seconds / 1000:.3f})"


def _fit_audio_prior(codec: Any, data: str, max_items: int) -> Path:
    from ..compress_audio import fit_and_save_audio_prior

    return fit_and_save_audio_prior(codec.name, data, max_items, codec.device, progress=True)


def _write_wav(path: Path, audio: Tensor, codec: Any) -> None:
    from ..modalities.audio.io import write_wav

    write_wav(path, audio, codec.sample_rate)


def _read_audio(path: Path, codec: Any) -> Tensor:
    from ..modalities.audio.io import load_audio

    return load_audio(path, codec.sample_rate)


MEDIA = {
    "image": Media(ENCODE_EXTENSIONS, ".png", lambda path, codec: read_image(path),
                   lambda path, image, codec: write_png(path, image),
                   lambda image, codec: f"{image.shape[1]}x{image.shape[0]}",
                   lambda e, codec: f"{e.bpp()['file']:.3f} bpp (nominal {e.bpp()['nominal']:.3f} bpp)",
                   _image_fidelity,
                   lambda codec, data, n: fit_and_save_prior(codec.name, data, n, codec.device, progress=True)),
    "audio": Media((".wav", ".flac"), ".wav", _read_audio, _write_wav,
                   lambda audio, codec: f"{len(audio) / codec.sample_rate:.2f} s at {codec.sample_rate} Hz",
                   _kbps, _audio_fidelity, _fit_audio_prior),
}


def open_codec(model: str, device: str) -> tuple[Codec[Any], Media]:
    """The codec of ``model`` for its modality (images, or speech for the ``speech`` arch)."""
    from ..compress_audio import AudioCodec
    from ..models import pretrained
    from ..models.registry import ARCH_MODALITY

    config, _ = pretrained.read_config(resolve_model_dir(model))
    modality = ARCH_MODALITY.get(config.arch, "image")
    codec_class: type[Codec[Any]] = AudioCodec if modality == "audio" else ImageCodec
    return codec_class.from_pretrained(model, device=resolve_device(device)), MEDIA[modality]


def _fail(job: Job, err: Exception) -> None:
    tqdm.write(f"vqkit: error: {job.source}: {err}", file=sys.stderr)


def run_encode(inputs: Sequence[str], out: str, model: str, prior: str, check: bool, device: str) -> int:
    jobs = plan(inputs, out, (*ENCODE_EXTENSIONS, *MEDIA["audio"].extensions), SUFFIX)
    codec, media = open_codec(model, device)
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
        total_units += encoded.pixels
    if total_units:
        overall = Encoded(b"", int(total_units), 0.0, 0.0, 0, int(total_bits))
        print(f"encoded {len(jobs) - failed} file(s) with {codec.name} ({prior} prior): "
              f"{media.rate(overall, codec).split(' (')[0]} overall, {time.perf_counter() - start:.1f} s")
    return 1 if failed else 0


def run_decode(inputs: Sequence[str], out: str, model: str, device: str) -> int:
    jobs = plan(inputs, out, (SUFFIX,), ".out")
    codec, media = open_codec(model, device)
    failed = 0
    for job in _progress(jobs, "decode"):
        target = job.target.with_suffix(media.suffix)
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
    """Fit the static and context tables of ``run``'s model on up to ``max_images`` training images
    (utterances for a speech model); returns the path of ``prior.safetensors``."""
    check_writable(run)  # before the work, not after it
    codec, media = open_codec(run, device)
    path: Path = media.fit(codec, data, max_images)
    return path
