"""One intact file of every kind vqkit reads, made once a session: what the corrupt-input cases damage.

Made by vqkit itself (a finished tiny run, an encoded image, a compare run), so each file is exactly
what a user's would be.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .process import Runner
from .runs import cli_config, train_argv

CORPUS_RUN: dict[str, Any] = dict(eval_every=6, ckpt_every=3)
COMPARE_SLUG = "fsq-8-8-8-8"
COMPARE_ARGS = ["quick", "--steps", "2", "--only", COMPARE_SLUG, "--max-val-images", "4"]
SPEECH_ARGS = {"channels": 8, "max_channels": 32, "backbone_dim": 32, "backbone_layers": 1, "intermediate": 64,
               "strides": [2, 4, 5, 8]}


@dataclass
class Corpus:
    """One intact file of every kind vqkit reads, and what reads it."""

    root: Path
    run: Path  # a finished tiny training run
    png: Path
    jpeg: Path
    vqt: Path  # the PNG encoded with the shipped default model
    train_json: Path
    train_yaml: Path | None
    speech: Path | None  # a tiny (untrained) speech tokenizer
    wav: Path | None
    compare: Path  # a finished one-configuration `vqkit compare quick`
    run_steps: int = 6


def have(what: str) -> bool:
    """Whether a module (``"yaml"``) or a module's attribute (``"pkg.mod:name"``) is available."""
    import importlib
    import importlib.util

    module, _, attr = what.partition(":")
    if importlib.util.find_spec(module) is None:
        return False
    return not attr or hasattr(importlib.import_module(module), attr)


@functools.cache
def default_codec() -> Any:
    """The shipped default image model, loaded once: many cases encode or decode with it."""
    from vqkit.modalities import open_codec

    return open_codec("default")[0]


def _photo_crop() -> np.ndarray:
    from vqkit.modalities.image.photos import load_photo

    image = np.round(load_photo("chelsea") * 255).astype(np.uint8)
    return np.ascontiguousarray(image[100:148, 150:214])  # 48 x 64


def _speech(root: Path) -> tuple[Path, Path]:
    """A tiny untrained speech tokenizer and a second of 16-bit speech-like WAV."""
    import soundfile
    import torch

    from vqkit.models import Tokenizer, TokenizerConfig

    torch.manual_seed(0)
    model = Tokenizer(TokenizerConfig(arch="speech", quantizer="simvq",
                                      quantizer_args={"dim": 16, "codebook_size": 256}, arch_args=SPEECH_ARGS))
    speech = model.save_pretrained(root / "speech")
    t = np.arange(16000) / 16000
    wave = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    wav = root / "speech.wav"
    soundfile.write(wav, wave.astype(np.float32), 16000, subtype="PCM_16")
    return speech, wav


def build_corpus(runner: Runner, root: Path) -> Corpus:
    from PIL import Image

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    run = root / "run"
    runner.must_succeed(train_argv(run, 6, **CORPUS_RUN), "corpus: tiny training run")
    pixels = _photo_crop()
    png, jpeg = root / "image.png", root / "image.jpg"
    Image.fromarray(pixels).save(png)
    Image.fromarray(pixels).save(jpeg, quality=90)
    runner.must_succeed(["encode", str(png), "-o", str(root / "tokens"), "--model", "default"], "corpus: encode")
    config = cli_config()
    train_json = root / "train.json"
    train_json.write_text(json.dumps(config, indent=2) + "\n")
    train_yaml = None
    if have("yaml"):
        import yaml

        train_yaml = root / "train.yaml"
        train_yaml.write_text(yaml.safe_dump(config))
    speech, wav = _speech(root) if have("soundfile") and have("soxr") else (None, None)
    compare = root / "compare"
    runner.must_succeed(["compare", *COMPARE_ARGS, "--out", str(compare)], "corpus: compare", timeout=600)
    return Corpus(root, run, png, jpeg, root / "tokens" / "image.vqt", train_json, train_yaml, speech, wav, compare)
