"""``vqkit encode`` / ``vqkit decode`` / ``vqkit fit-prior`` / ``vqkit info``: files in, token files out,
files back.

Outputs never destroy inputs: every target is planned before any work, an output that exists already is
refused unless the user says ``--overwrite`` (replace it) or ``--skip-existing`` (keep it), and a target
that is one of the inputs (the same file, through any path or link) is refused even then. ``-o`` must be a
folder (or not exist yet). A failing input is reported (its name and the cause) and the others go on.
Every batch ends with one line: written, skipped, failed. Exit codes: 0 every input done, 1 some inputs
failed, 2 a usage error (nothing was written). Output files are written atomically.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from ..codec.container import TokenFile
from ..codec.tiled import Codec, Encoded
from ..data.files import find_files
from ..modalities import MODALITIES, Modality, open_codec
from ..models import pretrained
from ..runs import fit_run_prior
from ..storage import atomic_write
from ..validation import resolve_device

SUFFIX = ".vqt"
Existing = Literal["refuse", "overwrite", "skip"]


class UsageError(ValueError):
    """A command line that cannot be carried out as given (exit code 2, nothing written)."""


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path
    skip: bool = False


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def plan(inputs: Sequence[str], out: str, extensions: Sequence[str], suffix: str,
         existing: Existing = "refuse") -> list[Job]:
    """Files (or every matching file under folders) -> OUT/relative-path with ``suffix``, checked before
    any work: ``out`` a folder, no two inputs onto one target, no target that is an input, and existing
    targets refused, overwritten or skipped as ``existing`` says. UsageError naming the problem."""
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"-o {out}: is a file; -o names the output folder")
    jobs: list[Job] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            root = path
            files = find_files(path, extensions)
        elif path.is_file():
            root, files = path.parent, [path]
        else:
            raise UsageError(f"{path}: no such file or folder")
        jobs += [Job(f, out_dir / f.relative_to(root).with_suffix(suffix)) for f in files]
    if not jobs:
        raise UsageError(f"no input files ({', '.join(extensions)}) in {', '.join(inputs)}")
    seen: dict[Path, Path] = {}
    sources = [job.source for job in jobs]
    for job in jobs:
        if job.target in seen:
            raise UsageError(f"{seen[job.target]} and {job.source} would both be written to {job.target}")
        seen[job.target] = job.source
        if job.target.exists() and any(_same_file(job.target, s) for s in sources):
            raise UsageError(f"{job.target} is one of the inputs: choose another -o folder")
    present = [job.target for job in jobs if job.target.exists()]
    if present and existing == "refuse":
        shown = ", ".join(str(p) for p in present[:3]) + (f" and {len(present) - 3} more" if len(present) > 3 else "")
        raise UsageError(f"{len(present)} output file(s) exist already ({shown}): pass --overwrite to replace them "
                         "or --skip-existing to keep them")
    if existing == "skip":
        jobs = [Job(job.source, job.target, job.target.exists()) for job in jobs]
    return jobs


def _progress(jobs: list[Job], what: str) -> Iterator[Job]:
    """A progress bar on a terminal (none when output is piped or for one file)."""
    yield from tqdm(jobs, desc=what, unit="file", file=sys.stderr, disable=None if len(jobs) > 1 else True,
                    leave=False)


def _fail(job: Job, err: Exception) -> None:
    tqdm.write(f"vqkit: error: {job.source}: {err}", file=sys.stderr)


def _summary(what: str, jobs: list[Job], failed: int, extra: str = "") -> int:
    skipped = sum(job.skip for job in jobs)
    print(f"{what}: {len(jobs) - skipped - failed} written, {skipped} skipped (exist), {failed} failed{extra}")
    return 1 if failed else 0


def _extensions() -> tuple[str, ...]:
    return tuple(ext for modality in MODALITIES.values() for ext in modality.extensions)


def _wrong_kind(path: Path, codec: Codec[Any], media: Modality) -> str:
    """Why ``codec`` cannot encode ``path``, and what to do instead."""
    owner = next((m for m in MODALITIES.values() if path.suffix.lower() in m.extensions), None)
    if owner is None:
        return f"{codec.name} encodes {', '.join(media.extensions)} files"
    if codec.name == "default":
        return (f"a {owner.name} file; the default model shipped with vqkit takes {media.items}, and no "
                f"{owner.name} model ships with vqkit: train one (e.g. `{owner.train_hint}`) and pass --model RUN")
    return f"a {owner.name} file; {codec.name} is a {media.name} model ({', '.join(media.extensions)})"


def _check_stages(codec: Codec[Any], stages: int | None, flag: str = "--stages") -> None:
    held = len(codec.specs)
    if stages is not None and (held == 1 or not 1 <= stages <= held):
        raise UsageError(f"{flag} {stages}: {codec.name} has {held} stage(s)"
                         + ("; only a model of several stages (e.g. RFSQ) can drop stages" if held == 1 else
                            f": choose 1..{held}"))


def _shipped_codec_of(data: bytes, cache: dict[str, tuple[Codec[Any], Modality]], device: str) -> tuple[
        Codec[Any], Modality]:
    """The shipped model (``default``, ``codec``, ``codec-hi``) whose model id (or archived tables) a file names."""
    from ..codec.container import ModelMismatchError
    from ..models.pretrained import SHIPPED, shipped

    file = TokenFile.from_bytes(data)
    present = [name for name in SHIPPED if shipped(name) is not None]
    for name in present:
        if name not in cache:
            cache[name] = open_codec(name, resolve_device(device))
        try:
            cache[name][0].tables_for(file.model_id)
        except ModelMismatchError:
            continue
        return cache[name]
    raise ValueError(f"encoded with model {file.model_id.hex()}, which is none of the models shipped with vqkit "
                     f"({', '.join(present)}): pass --model with the model that encoded it")


def run_encode(inputs: Sequence[str], out: str, model: str | None, prior: str | None, check: bool, device: str,
               existing: Existing = "refuse", stages: int | None = None, quality: int | None = None) -> int:
    """Encode every input; ``quality`` Q: without ``model`` the Q-th operating point of the shipped codec family
    (:data:`vqkit.models.pretrained.QUALITY`), with one its first Q stages; neither: the shipped ``default``.
    ``prior`` None: the best the model has (learned, else context, else uniform)."""
    if quality is not None and stages is not None:
        raise UsageError("--quality and --stages choose the same thing (the stages kept): give one")
    ladder = quality is not None and model is None
    if ladder:
        assert quality is not None
        model, quality = pretrained.quality(quality)
    jobs = plan(inputs, out, _extensions(), SUFFIX, existing)
    model = model or "default"
    codec, media = open_codec(model, resolve_device(device))
    if ladder and quality == len(codec.specs):
        quality = None  # the ladder's point is the whole model (e.g. the single-stage default)
    prior = prior or next(p for p in ("learned", "context", "uniform") if p in codec.fitted_priors or p == "uniform")
    if prior not in codec.fitted_priors and prior != "uniform":
        raise UsageError(f"{codec.name} has no prior tables for --prior {prior}: use --prior uniform, or fit them "
                         "with `vqkit fit-prior RUN_DIR --data DIR`" + (" --learned" if prior == "learned" else ""))
    _check_stages(codec, stages if quality is None else quality, "--stages" if quality is None else "--quality")
    stages = stages if quality is None else quality
    failed, total_bits, total_units = 0, 0.0, 0.0
    start = time.perf_counter()
    for job in _progress(jobs, "encode"):
        if job.skip:
            continue
        try:
            if job.source.suffix.lower() not in media.extensions:
                raise ValueError(_wrong_kind(job.source, codec, media))
            signal = media.read(job.source, codec)
            encoded = codec.encode(signal, prior, stages)
            line = (f"{job.source} -> {job.target}: {len(encoded.data):,} bytes, {media.rate(encoded, codec)}, "
                    f"{media.describe(signal, codec)}")
            if check:
                line += ", " + media.fidelity(signal, codec.decode(encoded.data), codec)
            job.target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(job.target, encoded.data)
        except (ValueError, OSError, RuntimeError) as err:
            failed += 1
            _fail(job, err)
            continue
        tqdm.write(line)
        total_bits += encoded.file_bits
        total_units += encoded.samples
    extra = ""
    if total_units:
        overall = Encoded(b"", int(total_units), 0.0, 0.0, 0, int(total_bits))
        extra = (f" ({codec.name}, {prior} prior: {media.rate(overall, codec).split(' (')[0]} overall, "
                 f"{time.perf_counter() - start:.1f} s)")
    return _summary("encode", jobs, failed, extra)


def run_decode(inputs: Sequence[str], out: str, model: str | None, device: str, existing: Existing = "refuse",
               stages: int | None = None) -> int:
    """Decode with ``model``, or (None) with whichever shipped model each file names by its model id."""
    cache: dict[str, tuple[Codec[Any], Modality]] = {}
    if model is not None:
        cache[model] = open_codec(model, resolve_device(device))
        codec, media = cache[model]
        _check_stages(codec, stages)
        suffix = media.decoded_suffix
    else:
        suffix = ".png"  # every shipped model is an image model
        if stages is not None and stages < 1:
            raise UsageError(f"--stages {stages}: keep at least one stage")
    jobs = plan(inputs, out, (SUFFIX,), suffix, existing)
    failed = 0
    for job in _progress(jobs, "decode"):
        if job.skip:
            continue
        try:
            data = job.source.read_bytes()
            codec, media = cache[model] if model is not None else _shipped_codec_of(data, cache, device)
            signal = codec.decode(data, stages)
            job.target.parent.mkdir(parents=True, exist_ok=True)
            media.write(job.target, signal, codec)
        except (ValueError, OSError, RuntimeError) as err:
            failed += 1
            _fail(job, err)
            continue
        tqdm.write(f"{job.source} -> {job.target} ({media.describe(signal, codec)})")
    return _summary("decode", jobs, failed)


def run_truncate(inputs: Sequence[str], out: str, stages: int, existing: Existing = "refuse") -> int:
    """Cut layered ``.vqt`` files to their first ``stages`` stages, without the model (an embedded bitstream)."""
    if stages < 1:
        raise UsageError(f"--stages {stages}: keep at least one stage")
    jobs = plan(inputs, out, (SUFFIX,), SUFFIX, existing)
    failed = 0
    for job in _progress(jobs, "truncate"):
        if job.skip:
            continue
        try:
            data = job.source.read_bytes()
            file = TokenFile.from_bytes(data)
            cut = file.truncated(stages).to_bytes()
            job.target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(job.target, cut)
        except (ValueError, OSError) as err:
            failed += 1
            _fail(job, err)
            continue
        tqdm.write(f"{job.source} -> {job.target}: {file.grid[0]} -> {stages} stages, {len(data):,} -> "
                   f"{len(cut):,} bytes")
    return _summary("truncate", jobs, failed)


def run_fit_prior(run: str, data: str, max_images: int, device: str, learned: bool = False) -> Path:
    """Fit the static and context tables of ``run``'s model on up to ``max_images`` training items of its
    modality; returns the path of ``prior.safetensors`` (tables it replaces stay in ``prior-archive/``)."""
    return fit_run_prior(run, data, max_images, device, learned=learned)
