#!/usr/bin/env python
"""Pack the data of ``scripts/gpu_check.py``'s training runs into one folder small enough to travel to a device.

The device machine receives the checkout alone (64 MiB with what is carried): ``../shared/data`` does
not travel, and Imagenette2 (160 MB) and the LibriSpeech folders (72 MB) do not fit whole. This copies
an evenly spread subset of each, files unchanged except that utterances are cut to ``--seconds``:

    .venv/bin/python scripts/gpu_check_data.py --out gpu_data     # ~32 MB, git-ignored: carry ["gpu_data"]

``gpu_check.py`` uses ``gpu_data/`` when it is there, and labels its results with ``manifest.json``'s names.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}


def spread(items: list[Path], count: int) -> list[Path]:
    """``count`` items evenly spread over the sorted list (all of them if fewer)."""
    items = sorted(items)
    if count >= len(items):
        return items
    return [items[i * len(items) // count] for i in range(count)]


def pack_images(src: Path, dst: Path, per_class: dict[str, int]) -> dict[str, int]:
    """ImageNet layout ``split/class/file``: ``per_class[split]`` files of every class, copied unchanged."""
    counts = {}
    for split, count in per_class.items():
        n = 0
        for cls in sorted(p for p in (src / split).iterdir() if p.is_dir()):
            files = [f for f in cls.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES]
            (dst / split / cls.name).mkdir(parents=True, exist_ok=True)
            for f in spread(files, count):
                shutil.copyfile(f, dst / split / cls.name / f.name)
                n += 1
        counts[split] = n
    return counts


def pack_speech(src: Path, dst: Path, count: int, seconds: float) -> int:
    """``count`` utterances (any depth of folders) cut to their first ``seconds``, as 16-bit FLAC."""
    import soundfile  # type: ignore[import-untyped]

    dst.mkdir(parents=True, exist_ok=True)
    files = [f for f in src.rglob("*") if f.suffix.lower() in (".flac", ".wav")]
    chosen = spread(files, count)
    for f in chosen:
        audio, rate = soundfile.read(f, dtype="int16", frames=int(seconds * soundfile.info(f).samplerate))
        soundfile.write(dst / f"{f.stem}.flac", audio, rate, subtype="PCM_16")
    return len(chosen)


def size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "gpu_data")
    p.add_argument("--images", type=Path, default=SHARED / "images" / "imagenette2")
    p.add_argument("--speech-train", type=Path, default=SHARED / "audio" / "librispeech-train-clean-100")
    p.add_argument("--speech-val", type=Path, default=SHARED / "audio" / "librispeech-test-other")
    p.add_argument("--train-per-class", type=int, default=200)
    p.add_argument("--val-per-class", type=int, default=30, help="x 10 classes: >= 256, the runs' validation images")
    p.add_argument("--utterances", type=int, default=60)
    p.add_argument("--val-utterances", type=int, default=20)
    p.add_argument("--seconds", type=float, default=6.0, help="utterances are cut to this length")
    args = p.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    manifest: dict[str, Any] = {}
    if args.images.is_dir():
        counts = pack_images(args.images, args.out / "images", {"train": args.train_per_class,
                                                                 "val": args.val_per_class})
        manifest["images"] = {"label": f"Imagenette2-subset ({counts['train']} train / {counts['val']} val images)",
                              "source": str(args.images.resolve()), **counts}
    else:
        print(f"no images at {args.images}: the image runs will be skipped", file=sys.stderr)
    if args.speech_train.is_dir() and args.speech_val.is_dir():
        n_train = pack_speech(args.speech_train, args.out / "speech" / "train", args.utterances, args.seconds)
        n_val = pack_speech(args.speech_val, args.out / "speech" / "val", args.val_utterances, args.seconds)
        manifest["speech"] = {"label": f"LibriSpeech-subset-16k ({n_train} train-clean-100 / {n_val} test-other "
                                       f"utterances, first {args.seconds:g} s)",
                              "source": [str(args.speech_train.resolve()), str(args.speech_val.resolve())],
                              "train": n_train, "val": n_val}
    else:
        print(f"no speech at {args.speech_train} / {args.speech_val}: the speech run will be skipped", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"{args.out}: {size_mb(args.out):.1f} MB; " + "; ".join(v["label"] for v in manifest.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
