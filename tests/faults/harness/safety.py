"""Data safety: ordinary command sequences a user runs, in a folder full of the user's own files.

Each scenario runs real ``vqkit`` commands (through a :class:`~.process.Runner`) in a sandbox holding
originals and foreign files (hidden notes, drafts, a model's prior tables), with the paths the user named
as outputs declared. Afterwards every file that existed before and was not a declared output must hold
its old bytes ("data lost" counts the others), every command must end with its documented exit code and
no traceback, and files encoded earlier must still decode. Scenarios: decode into the input folder,
encode over an existing .vqt, --skip-existing, --overwrite through a link to an input, -o naming a file,
two inputs onto one target, foreign hidden files beside the outputs, a prior refit, forged non-finite
side information.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .process import Outcome, Runner


@dataclass
class SafetyResult:
    name: str
    commands: int = 0
    clean: int = 0
    lost: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.lost and not self.problems and self.clean == self.commands


def _snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def _photo(path: Path, h: int, w: int, seed: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 3 + y) % 256, (y * 2) % 256, (x + y * 5) % 256], -1) + rng.normal(0, 12, (h, w, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(path)
    return path


def _model(root: Path) -> Path:
    """A tiny untrained FSQ tokenizer with fitted prior tables, saved as a user's model folder."""
    import torch

    from vqkit.codec.priors import save_prior
    from vqkit.modalities import codec_for
    from vqkit.models import Tokenizer, TokenizerConfig

    torch.manual_seed(0)
    model = Tokenizer(TokenizerConfig(arch="rfsq_conv", quantizer="fsq", quantizer_args={"levels": [8, 5, 5, 5]},
                                      conv_channels=(8, 16))).eval()
    model.save_pretrained(root)
    codec = codec_for(model)
    save_prior(root, codec.fit_prior([np.asarray(_load(_photo(root.parent / "fit" / f"{i}.png", 24, 24, i)))
                                      for i in range(3)]))
    return root


def _load(path: Path) -> np.ndarray:
    from vqkit.modalities.image.io import read_image

    return read_image(path)


Step = tuple[list[str], tuple[int, ...]]
"""A command line and the exit codes it may end with."""


def _scenarios(box: Path, model: str) -> list[tuple[str, Callable[[], list[Step]], set[Path]]]:
    """(name, set-up returning the steps, the paths the user named as outputs that may change)."""
    p, out = box / "p", box / "out"
    m = ["--model", model]

    def into_inputs() -> list[Step]:
        _photo(p / "x.png", 20, 28, 1)
        return [(["encode", str(p), "-o", str(p), *m], (0,)), (["decode", str(p), "-o", str(p), *m], (2,)),
                (["decode", str(p), "-o", str(p), *m, "--skip-existing"], (0,))]

    def over_vqt() -> list[Step]:
        _photo(p / "x.png", 20, 28, 2)
        return [(["encode", str(p), "-o", str(out), *m], (0,)), (["encode", str(p), "-o", str(out), *m], (2,))]

    def link_to_input() -> list[Step]:
        src = _photo(p / "x.png", 20, 28, 3)
        out.mkdir(parents=True, exist_ok=True)
        (out / "x.vqt").symlink_to(src)
        return [(["encode", str(src), "-o", str(out), *m, "--overwrite"], (2,))]

    def out_is_a_file() -> list[Step]:
        src = _photo(p / "x.png", 20, 28, 4)
        (box / "report.txt").write_text("the user's report")
        return [(["encode", str(src), "-o", str(box / "report.txt"), *m], (2,))]

    def two_onto_one() -> list[Step]:
        _photo(p / "a.png", 20, 28, 5)
        _photo(p / "a.jpg", 20, 28, 6)
        return [(["encode", str(p), "-o", str(out), *m], (2,))]

    def foreign_files() -> list[Step]:
        src = _photo(p / "x.png", 20, 28, 7)
        out.mkdir(parents=True, exist_ok=True)
        for name in (".notes.20240101.tmp", ".thesis.draft_v2.tmp", ".x.vqt.1.tmp", "x.vqt.bak"):
            (out / name).write_text(f"user data in {name}")
            old = time.time() - 3600
            os.utime(out / name, (old, old))
        return [(["encode", str(src), "-o", str(out), *m], (0,))]

    def refit() -> list[Step]:
        _photo(p / "x.png", 20, 28, 8)
        data = box / "data"
        for i in range(3):
            _photo(data / f"{i}.png", 24, 24, 20 + i)
        return [(["encode", str(p), "-o", str(out), *m], (0,)),
                (["fit-prior", model, "--data", str(data), "--max-images", "3"], (0,)),
                (["decode", str(out), "-o", str(box / "dec"), *m], (0,))]

    def forged_side() -> list[Step]:
        from vqkit.codec import TokenFile

        (box / "forged").mkdir(parents=True, exist_ok=True)
        good = TokenFile("image", "uniform", bytes(16), (3, 8, 8), (1, 2, 2), (1000,), bytes(8),
                         np.full(4, np.nan, "<f4").tobytes(), 256)
        (box / "forged" / "nan.vqt").write_bytes(good.to_bytes())
        return [(["decode", str(box / "forged"), "-o", str(box / "dec"), *m], (1,))]

    model_dir = Path(model)
    return [
        ("decode into the input folder", into_inputs, {p / "x.vqt"}),
        ("encode over an existing .vqt", over_vqt, {out / "x.vqt"}),
        ("--overwrite through a link to an input", link_to_input, set()),
        ("-o naming a file", out_is_a_file, set()),
        ("two inputs onto one target", two_onto_one, set()),
        ("foreign hidden files beside the outputs", foreign_files, {out / "x.vqt"}),
        ("prior refit, then decode old files", refit, {out / "x.vqt", model_dir / "prior.safetensors"}),
        ("forged non-finite side information", forged_side, set()),
    ]


def _clean(outcome: Outcome, codes: tuple[int, ...]) -> str:
    if "Traceback" in outcome.stderr:
        return f"traceback: {outcome.excerpt()}"
    if outcome.rc not in codes:
        return f"exit {outcome.rc}, expected {codes}: {outcome.excerpt()}"
    return ""


def run_safety(runner: Runner, work: Path) -> list[SafetyResult]:
    """Every scenario in its own sandbox; see the module docstring."""
    results = []
    for i, (name, *_) in enumerate(_scenarios(work / "probe", "probe")):
        box = work / f"s{i}"
        model = str(_model(box / "model"))
        _, steps_setup, outputs = _scenarios(box, model)[i]
        result = SafetyResult(name)
        began = time.monotonic()
        steps = steps_setup()
        before = _snapshot(box)
        for argv, codes in steps:
            outcome = runner.run(argv)
            result.commands += 1
            problem = _clean(outcome, codes)
            if problem:
                result.problems.append(f"`{outcome.command}`: {problem}")
            else:
                result.clean += 1
        after = _snapshot(box)
        for path, data in before.items():
            if path not in outputs and after.get(path) != data and "prior-archive" not in path.parts:
                result.lost.append(str(path.relative_to(box)))
        if name.startswith("prior refit") and not (box / "dec" / "x.png").is_file():
            result.problems.append("a file encoded before the refit did not decode after it")
        result.seconds = time.monotonic() - began
        results.append(result)
    return results
