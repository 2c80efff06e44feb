"""Nothing a user has is lost or misread: foreign files in an output folder, WAV headers that lie, images
with several frames, an EXIF orientation or an ICC profile (:func:`input_cases`, :func:`run_input_case`).

Each case says what must happen: ``refused`` (a ValueError naming the file, within :data:`BOUND` seconds,
from every reader; through the CLI a documented refusal), ``faithful`` (read as a viewer or a player
would: every sample the file holds, the viewer's pixels) or ``kept`` (every foreign file in the folder
survives a write, byte for byte; ``lost`` counts those that did not).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import media
from .checks import refusal_problems, where
from .process import Runner

BOUND = 5.0  # seconds a reader may take to refuse a lying header (the 1 Hz WAV used to take > 600 s)


@dataclass
class InputResult:
    group: str
    label: str
    expect: str  # "refused" | "faithful" | "kept"
    problems: list[str] = field(default_factory=list)
    lost: int = 0  # foreign files that a write removed or changed
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class InputCase:
    group: str
    label: str
    expect: str
    run: Callable[[Path, Runner | None], tuple[list[str], int]]  # (problems, files lost)


# -- refusals and faithful reads through the Python readers --------------------------------------------
def _refused_by(path: Path, readers: dict[str, Callable[[Path], object]]) -> list[str]:
    problems = []
    for name, read in readers.items():
        began = time.monotonic()
        try:
            read(path)
        except ValueError as err:
            if str(path) not in str(err) or "\n" in str(err):
                problems.append(f"{name}: the error is not one line naming {path.name}: {str(err)[:160]!r}")
        except Exception as err:
            problems.append(f"{name}: {type(err).__name__} (not a ValueError): {str(err)[:160]}  [{where(err)}]")
        else:
            problems.append(f"{name}: accepted")
        if time.monotonic() - began > BOUND:
            problems.append(f"{name}: took {time.monotonic() - began:.1f} s (bound {BOUND:.0f} s)")
    return problems


def _audio_readers() -> dict[str, Callable[[Path], object]]:
    from vqkit.modalities.audio.io import check_audio, load_audio, read_audio

    return {"read_audio": read_audio, "load_audio": lambda p: load_audio(p, 16000), "check_audio": check_audio}


def _image_readers() -> dict[str, Callable[[Path], object]]:
    from vqkit.modalities.image.io import check_image, read_image

    return {"read_image": read_image, "check_image": check_image}


def _wav_case(label: str, header: dict[str, object], expect: str) -> InputCase:
    """A WAV built with ``header``'s fields: refused, or (``faithful``) read whole: every frame it holds."""

    def run(work: Path, runner: Runner | None) -> tuple[list[str], int]:
        path = media.write(work / "lying.wav", media.wav_bytes(**header))  # type: ignore[arg-type]
        if expect == "refused":
            return _refused_by(path, _audio_readers()), 0
        from vqkit.modalities.audio.io import read_audio

        channels, bits = int(header.get("channels", 1)), int(header.get("bits", 16))  # type: ignore[call-overload]
        data = header.get("data")
        held = len(data) if isinstance(data, bytes) else int(header.get("frames", 32000)) * channels * bits // 8  # type: ignore[call-overload]
        try:
            wave, _ = read_audio(path)
        except Exception as err:
            return [f"a valid file refused: {type(err).__name__}: {str(err)[:160]}"], 0
        frames = held // (channels * bits // 8)
        return ([] if wave.shape[0] == frames else [f"read {wave.shape[0]} of its {frames} frames"]), 0

    return InputCase("WAV header", label, expect, run)


def _random_wav_case(seed: int) -> InputCase:
    """One header field set to a random or edge value: refused, or every frame the file holds is read."""
    rng = random.Random(seed)
    name = rng.choice(["rate", "channels", "align", "bits", "declared"])
    edges = {"rate": [0, 1, 999, 1000, 8000, 768_000, 768_001, 2**31, 2**32 - 1],
             "channels": [0, 1, 2, 63, 64, 65, 1000, 65535], "align": [0, 1, 2, 3, 4, 65535],
             "bits": [0, 1, 8, 15, 16, 24, 32, 65535], "declared": [0, 1, 10, 63_999, 64_000, 64_001, 2**32 - 1]}
    value = rng.choice(edges[name]) if rng.random() < 0.6 else rng.randrange(0, 2**16 if name != "rate" else 2**32)

    def run(work: Path, runner: Runner | None) -> tuple[list[str], int]:
        data = bytes(rng.randrange(256) for _ in range(64_000))  # the same 64,000 bytes whatever the header says
        header = {"data": data, name: value}
        if name == "channels":
            header["align"] = 2  # only the channel count lies
        path = media.write(work / "random.wav", media.wav_bytes(**header))  # type: ignore[arg-type]
        from vqkit.modalities.audio.io import read_audio

        began = time.monotonic()
        try:
            wave, _ = read_audio(path)
        except ValueError as err:
            ok = str(path) in str(err) and time.monotonic() - began <= BOUND
            return ([] if ok else [f"refusal not one line naming the file in time: {str(err)[:160]!r}"]), 0
        except Exception as err:
            return [f"{type(err).__name__} (not a ValueError): {str(err)[:160]}  [{where(err)}]"], 0
        declared = int(header.get("declared", 64_000))  # type: ignore[call-overload]
        align = int(header.get("align", 0)) or int(header.get("bits", 16) + 7) // 8  # type: ignore[call-overload,operator]
        frames = min(declared if declared not in (0, 2**32 - 1) else 64_000, 64_000) // max(1, align)
        if wave.shape[0] != frames:  # accepted: it must have read every frame the file holds
            return [f"accepted and read {wave.shape[0]} of the file's {frames} frames"], 0
        return [], 0

    return InputCase("WAV header", f"random {name} = {value}", "refused or faithful", run)


WAV_LIES = [
    ("64 kB claiming 1 Hz", {"rate": 1}), ("rate 0 Hz", {"rate": 0}), ("rate 999 Hz", {"rate": 999}),
    ("rate 768,001 Hz", {"rate": 768_001}), ("rate 2^32-1 Hz", {"rate": 2**32 - 1}),
    ("1000 channels", {"channels": 1000, "frames": 32}), ("0 channels", {"channels": 0, "align": 2}),
    ("65 channels", {"channels": 65, "frames": 100}), ("data declares 10 bytes (understated)", {"declared": 10}),
    ("data declares 1000 bytes more (cut)", {"declared": 65_000}), ("block_align lies", {"channels": 2, "align": 2}),
    ("0 bits per sample", {"bits": 0}), ("no fmt chunk", {"fmt": False}), ("fmt chunk of 8 bytes", {"fmt_size": 8}),
    ("a partial last frame", {"channels": 2, "data": bytes(402)}), ("empty data chunk", {"data": b""}),
]
WAV_VALID = [
    ("a LIST chunk after the data", {"frames": 1000, "after": b"LIST" + (4).to_bytes(4, "little") + b"INFO"}),
    ("stereo 44.1 kHz", {"rate": 44100, "channels": 2, "frames": 1000}),
]


# -- images ----------------------------------------------------------------------------------------------
def _frames_case(fmt: str, frames: int) -> InputCase:
    def run(work: Path, runner: Runner | None) -> tuple[list[str], int]:
        path = media.write(work / f"anim.{fmt.lower()}", media.frames_bytes(fmt, frames))
        problems = _refused_by(path, _image_readers())
        if runner is not None:
            out = runner.run(["encode", str(path), "-o", str(work / "out"), "--model", "default"], timeout=120)
            problems += [f"vqkit encode: {p}" for p in refusal_problems(out, path, codes=(1,))]
        return problems, 0

    return InputCase("image", f"{fmt} of {frames} frames", "refused", run)


def _exif_case(fmt: str, orientation: int) -> InputCase:
    def run(work: Path, runner: Runner | None) -> tuple[list[str], int]:
        from vqkit.modalities.image.io import read_image

        stored = media.pixels(12, 8)
        path = media.write(work / f"exif.{fmt.lower()}", media.oriented_bytes(stored, fmt, orientation))
        got, expected = read_image(path), media.shown(stored, orientation)
        if got.shape != expected.shape:
            return [f"read as {got.shape[1]}x{got.shape[0]}, a viewer shows {expected.shape[1]}x{expected.shape[0]}"], 0
        exact = fmt in ("PNG", "TIFF")
        return ([] if not exact or np.array_equal(got, expected) else ["pixels differ from the viewer's"]), 0

    return InputCase("image", f"{fmt} with EXIF orientation {orientation}", "faithful", run)


def _icc_case(label: str, icc: bytes, expect: str) -> InputCase:
    def run(work: Path, runner: Runner | None) -> tuple[list[str], int]:
        import io

        from PIL import ImageCms

        from vqkit.modalities.image.io import read_image

        stored = media.pixels(16, 16)
        path = media.write(work / "icc.png", media.image_bytes(stored, "PNG", icc_profile=icc))
        if expect == "refused":
            return _refused_by(path, {"read_image": read_image}), 0
        got = read_image(path)
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in ImageCms.getProfileDescription(profile).lower():
            return ([] if np.array_equal(got, stored) else ["an sRGB image's pixels changed"]), 0
        from PIL import Image

        reference = ImageCms.profileToProfile(Image.fromarray(stored), profile, ImageCms.createProfile("sRGB"))
        same = reference is not None and np.array_equal(got, np.asarray(reference))
        return ([] if same else ["colours not converted to sRGB as LittleCMS converts them"]), 0

    return InputCase("image", label, expect, run)


# -- foreign files in an output folder ---------------------------------------------------------------------
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _killed_writer_debris(folder: Path, target: str) -> Path:
    """The temporary file a vqkit writer SIGKILLed mid-write leaves (a real one: the writer is killed)."""
    code = ("import os, signal, sys; import vqkit.storage as s\n"
            "s.os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
            f"s.atomic_write(__import__('pathlib').Path({str(folder / target)!r}), b'partial')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], env=env, timeout=60, check=False)
    from vqkit.storage import is_temporary

    left = [p for p in folder.iterdir() if is_temporary(p.name)]
    assert len(left) == 1, f"the killed writer left {left}"
    return left[0]


def _foreign_files(folder: Path) -> dict[Path, bytes]:
    """A user's own files, hidden and not, some shaped like older or other vqkit temporaries, all old."""
    from vqkit.storage import TMP_PREFIX

    dead = _dead_pid()
    names = [".notes.20240101.tmp", ".thesis.draft_v2.tmp", "notes.tmp", "x.vqt.bak", f".x.vqt.{dead}.tmp",
             f".x.vqt.{dead}.0123abcd.tmp", f"{TMP_PREFIX}x.vqt-{dead}", f"{TMP_PREFIX}notes.txt",
             f"{TMP_PREFIX}x.vqt-0badc0de-{dead}-{'a' * 16}",  # another machine's, in a shared folder
             f"{TMP_PREFIX}x.vqt-{os.getpid()}"]
    files = {}
    for i, name in enumerate(names):
        path = media.write(folder / name, f"user data {i}\n".encode())
        os.utime(path, (0, 0))  # as old as a file gets: age proves nothing
        files[path] = path.read_bytes()
    return files


def _lost(files: dict[Path, bytes]) -> int:
    return sum(not p.exists() or p.read_bytes() != data for p, data in files.items())


def _folder_case(through_cli: bool) -> InputCase:
    def run(work: Path, runner: Runner | None) -> tuple[list[str], int]:
        folder = work / "out"
        folder.mkdir(parents=True, exist_ok=True)
        debris = _killed_writer_debris(folder, "x.vqt")
        files = _foreign_files(folder)
        if through_cli:
            if runner is None:
                return [], 0
            png = media.write(work / "x.png", media.image_bytes(media.pixels(16, 16), "PNG"))
            out = runner.run(["encode", str(png), "-o", str(folder), "--model", "default"], timeout=120)
            problems = [] if out.rc == 0 else [f"vqkit encode failed (exit {out.rc}): {out.excerpt(2)}"]
        else:
            from vqkit import storage

            storage._SWEPT.discard((os.getpid(), os.path.abspath(folder)))  # as a fresh process would
            storage.atomic_write(folder / "x.vqt", b"tokens")
            problems = []
        lost = _lost(files)
        if lost:
            problems.append(f"{lost} of the user's {len(files)} files removed or changed")
        if debris.exists():
            problems.append(f"the killed writer's debris {debris.name} was not removed")
        return problems, lost

    how = "vqkit encode -o" if through_cli else "atomic_write"
    return InputCase("output folder", f"{how} into a folder of foreign files", "kept", run)


def input_cases(full: bool = True, random_wavs: int = 0, seed: int = 0) -> list[InputCase]:
    """Every case (``full``) or a quick sample of each group, plus ``random_wavs`` random header lies."""
    cases = [_folder_case(False), _folder_case(True)]
    cases += [_wav_case(label, header, "refused") for label, header in (WAV_LIES if full else WAV_LIES[:6])]
    cases += [_wav_case(label, header, "faithful") for label, header in WAV_VALID]
    cases += [_random_wav_case(seed * 1000 + i) for i in range(random_wavs)]
    formats = ["GIF", "WEBP", "PNG", "TIFF"]
    cases += [_frames_case(fmt, n) for fmt in formats for n in ((2, 7) if full else (2,))]
    cases += [_exif_case(fmt, o) for fmt in (("PNG", "TIFF", "JPEG", "WEBP") if full else ("PNG",))
              for o in range(2, 9)]
    cases += [_icc_case("wide-gamut ICC profile", media.icc_rgb_profile(), "faithful"),
              _icc_case("sRGB ICC profile", media.srgb_profile(), "faithful"),
              _icc_case("corrupt ICC profile", b"garbage" * 20, "refused")]
    return cases


def run_input_case(case: InputCase, work: Path, runner: Runner | None, index: int) -> InputResult:
    """Run ``case`` in a fresh folder under ``work`` (``runner``: the CLI, or None for the API only)."""
    folder = work / f"{index:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    try:
        problems, lost = case.run(folder, runner)
    except Exception as err:  # a harness or vqkit failure outside the readers: reported, never raised
        problems, lost = [f"{type(err).__name__}: {str(err)[:200]}  [{where(err)}]"], 0
    return InputResult(case.group, case.label, case.expect, problems, lost, time.monotonic() - began)
