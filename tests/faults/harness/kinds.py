"""Every kind of file vqkit reads (:data:`KINDS`): where its intact copy comes from, what reads it, and
which accepted damage is provably harmless.

Not covered, by design: log.jsonl (a torn or damaged line is skipped on resume, documented); report.md
and plots (written, never read back).
"""

from __future__ import annotations

import io
import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .corpus import COMPARE_ARGS, COMPARE_SLUG, CORPUS_RUN, Corpus, default_codec, have
from .corrupt import Case, Damage, Kind
from .runs import tiny_data, train_argv


# -- accepted damage that no reader could have told --------------------------------------------------
def _same_json(original: bytes, damaged: bytes, damage: Damage) -> str | None:
    try:
        same = json.loads(damaged.decode("utf-8")) == json.loads(original.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    return "the same JSON value: only trailing whitespace was lost" if same else None


def _same_yaml(original: bytes, damaged: bytes, damage: Damage) -> str | None:
    import yaml

    try:
        same = yaml.safe_load(damaged.decode("utf-8")) == yaml.safe_load(original.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return None
    return "the same YAML value: only trailing whitespace was lost" if same else None


def _pixels(data: bytes) -> np.ndarray | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except Exception:
        return None


def _image_benign(jpeg: bool) -> Callable[[bytes, bytes, Damage], str | None]:
    def benign(original: bytes, damaged: bytes, damage: Damage) -> str | None:
        a, b = _pixels(original), _pixels(damaged)
        if b is None or a is None:
            return None
        if a.shape == b.shape and np.array_equal(a, b):
            return "the damage is outside the pixel data: the image decodes to identical pixels"
        if jpeg and damage.how == "flip" and a.shape == b.shape:
            return (f"JPEG has no checksum: the flipped byte decodes to other pixels "
                    f"({int((a != b).any(axis=2).sum())} changed), a valid image")
        return None

    return benign


def _wav_benign(original: bytes, damaged: bytes, damage: Damage) -> str | None:
    import soundfile

    try:
        a, _ = soundfile.read(io.BytesIO(original), dtype="int16")
        b, _ = soundfile.read(io.BytesIO(damaged), dtype="int16")
    except Exception:
        return None
    if a.shape == b.shape and np.array_equal(a, b):
        return "identical samples: the damage is outside the audio data"
    if damage.how == "flip" and a.shape == b.shape and int((a != b).sum()) <= 1:
        return "PCM has no checksum: the flipped byte changes one sample of a valid file"
    return None


def _wav_detectable(original: bytes, damaged: bytes, damage: Damage) -> str | None:
    at = damaged.find(b"data", 12)
    if at < 0 or at + 8 > len(damaged):
        return None
    declared, present = struct.unpack("<I", damaged[at + 4:at + 8])[0], len(damaged) - at - 8
    if present < declared:
        return f"detectable: the RIFF header declares {declared} data bytes, the file holds {present}"
    return None


# -- cases: a private copy of the corpus's file, the command that reads it, its Python reader ----------
def _copy(src: Path, dst: Path) -> Path:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    return dst


def _copy_file(src: Path, d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    target = d / src.name
    shutil.copy(src, target)
    return target


def _ckpt_case(c: Corpus, d: Path) -> Case:
    from vqkit.train import load_config
    from vqkit.train.checkpoint import load_checkpoint

    run = _copy(c.run, d / "run")
    config = load_config(None, c.run / "config.json").to_dict()
    return Case(run / "checkpoint.pt", train_argv(run, c.run_steps, resume=True, **CORPUS_RUN),
                lambda: load_checkpoint(run, config))


def _model_case(name: str) -> Callable[[Corpus, Path], Case]:
    def prepare(c: Corpus, d: Path) -> Case:
        from vqkit.modalities import open_codec

        model = _copy(c.run / "final", d / "model")
        return Case(model / name, ["encode", str(c.png), "-o", str(d / "out"), "--model", str(model)],
                    lambda: open_codec(model))

    return prepare


def _vqt_case(c: Corpus, d: Path) -> Case:
    target = _copy_file(c.vqt, d)
    return Case(target, ["decode", str(target), "-o", str(d / "out"), "--model", "default"],
                lambda: default_codec().decode(target.read_bytes()))


def _config_case(attr: str) -> Callable[[Corpus, Path], Case]:
    def prepare(c: Corpus, d: Path) -> Case:
        from vqkit.train import load_config

        target = _copy_file(getattr(c, attr), d)
        return Case(target, ["train", "--config", str(target), "--out", str(d / "run")],
                    lambda: load_config(file=target))

    return prepare


def _image_case(attr: str) -> Callable[[Corpus, Path], Case]:
    def prepare(c: Corpus, d: Path) -> Case:
        from vqkit.modalities.image.io import read_image

        target = _copy_file(getattr(c, attr), d)
        return Case(target, ["encode", str(target), "-o", str(d / "out"), "--model", "default"],
                    lambda: default_codec().encode(read_image(target), "context"))

    return prepare


def _wav_case(c: Corpus, d: Path) -> Case:
    from vqkit.modalities import open_codec

    assert c.wav is not None and c.speech is not None
    speech = c.speech
    target = _copy_file(c.wav, d)

    def api() -> Any:
        codec, modality = open_codec(speech)
        return codec.encode(modality.read(target, codec), "uniform")

    return Case(target, ["encode", str(target), "-o", str(d / "out"), "--model", str(speech), "--prior", "uniform"],
                api)


def _eval_config_case(c: Corpus, d: Path) -> Case:
    from vqkit.train import load_config

    run = _copy(c.run, d / "run")
    target = run / "config.json"
    return Case(target, ["eval", str(run), "--data", str(tiny_data()), "--max-images", "2", "--device", "cpu",
                         "--out", str(d / "eval")], lambda: load_config(None, target))


def _results_case(c: Corpus, d: Path) -> Case:
    from vqkit.experiments import compare

    out = _copy(c.compare, d / "compare")
    return Case(out / "results.json", [], lambda: compare.load_results(out / "results.json"))


def _compare_case(relative: str) -> Callable[[Corpus, Path], Case]:
    def prepare(c: Corpus, d: Path) -> Case:
        out = _copy(c.compare, d / "compare")
        return Case(out / relative, ["compare", *COMPARE_ARGS, "--out", str(out)], None)

    return prepare


def _compare_kind(what: str, relative: str) -> Kind:
    return Kind(f"compare {what}", "vqkit compare (resume)", (2,), _compare_case(f"runs/{COMPARE_SLUG}/{relative}"),
                _same_json)


KINDS: tuple[Kind, ...] = (
    Kind("checkpoint.pt", "vqkit train --resume", (2,), _ckpt_case),
    Kind("final/model.safetensors", "vqkit encode --model RUN/final", (2,), _model_case("model.safetensors")),
    Kind("final/config.json", "vqkit encode --model RUN/final", (2,), _model_case("config.json"), _same_json),
    Kind("final/prior.safetensors", "vqkit encode --model RUN/final", (2,), _model_case("prior.safetensors")),
    Kind(".vqt token file", "vqkit decode", (1,), _vqt_case),
    Kind("train config (JSON)", "vqkit train --config", (2,), _config_case("train_json"), _same_json),
    Kind("train config (YAML)", "vqkit train --config", (2,), _config_case("train_yaml"), _same_yaml, needs="yaml"),
    Kind("image (PNG)", "vqkit encode", (1,), _image_case("png"), _image_benign(jpeg=False)),
    Kind("image (JPEG)", "vqkit encode", (1,), _image_case("jpeg"), _image_benign(jpeg=True)),
    Kind("speech (WAV)", "vqkit encode --model SPEECH", (1,), _wav_case, _wav_benign, needs="soundfile",
         detectable=_wav_detectable),
    Kind("run config.json", "vqkit eval RUN", (2,), _eval_config_case, _same_json),
    _compare_kind("run config.json", "config.json"),
    _compare_kind("summary.json", "summary.json"),
    _compare_kind("eval-val/metrics.json", "eval-val/metrics.json"),
    Kind("compare results.json", "vqkit.experiments.compare.load_results (Python API only)", (), _results_case,
         _same_json, needs="vqkit.experiments.compare:load_results"),
)


def available_kinds() -> list[Kind]:
    """The kinds whose optional readers (PyYAML, soundfile, ...) are installed."""
    return [k for k in KINDS if not k.needs or have(k.needs)]
