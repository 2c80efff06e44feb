"""The on-disk form of a tokenizer: ``config.json`` + ``model.safetensors`` in one directory.

``config.json`` holds a format marker, the vqkit version, the resolved :class:`TokenizerConfig`,
the SHA-256 of the weights file and ``config_sha256``, the SHA-256 of all its other fields as
canonical JSON (:func:`config_digest`). safetensors has no checksum of its own: a flipped byte in
the tensor data loads silently, so the digest is what turns such damage into an error; and a config
edited by hand (``"symmetric": true`` added to an FSQ's arguments loads and costs 1.6 dB) is refused
by its own digest. A ``config.json`` written by vqkit 0.1, without ``config_sha256``, still loads,
with a warning that its config cannot be verified. Both files are written atomically (temporary
file in the same directory, then ``os.replace``), weights first: a crash in between leaves new
weights next to an old digest, which loading then refuses.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor

from .. import __version__
from ..storage import IntegrityError, atomic_write, read_json
from .config import TokenizerConfig

FORMAT = "vqkit.tokenizer"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CONFIG_DIGEST = "config_sha256"
_SHOW = 6  # key names listed per kind of mismatch
_HEX64 = re.compile(r"[0-9a-f]{64}")


def config_digest(meta: dict[str, Any]) -> str:
    """SHA-256 of ``meta`` (a ``config.json`` object) without its own ``config_sha256``, as canonical JSON
    (sorted keys, no spaces, ASCII): re-indenting the file keeps it, changing any value does not."""
    body = {k: v for k, v in meta.items() if k != CONFIG_DIGEST}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def config_json(meta: dict[str, Any]) -> bytes:
    """The bytes of ``config.json`` for ``meta``, with its ``config_sha256`` (re)computed."""
    sealed = {k: v for k, v in meta.items() if k != CONFIG_DIGEST}
    sealed[CONFIG_DIGEST] = config_digest(sealed)
    return (json.dumps(sealed, indent=2, allow_nan=False) + "\n").encode()


def check_directory(directory: object) -> str | os.PathLike[str]:
    """``directory`` if it can name a model folder (a non-empty path or ``"default"``), else a ValueError
    naming the argument (``from_pretrained(None)`` was a TypeError from deep inside pathlib)."""
    if isinstance(directory, str):
        if directory.strip() and "\0" not in directory:
            return directory
    elif isinstance(directory, os.PathLike) and isinstance(os.fspath(directory), str):
        return directory
    raise ValueError(f"directory = {directory!r} ({type(directory).__name__}): expected the path of a model saved "
                     "by save_pretrained, a run directory, or 'default'")


SHIPPED = ("default", "codec", "codec-hi")
"""Models shipped inside the package (``vqkit/assets/NAME``): the default tokenizer and the two RFSQ models of
the codec family, whose stage cuts are ``vqkit encode --quality``'s operating points (:data:`QUALITY`)."""

FAMILY = "family"
"""The name of the shipped codec family as one curve (``vqkit rd --model family``)."""
QUALITY: tuple[tuple[str, int], ...] = (("codec", 1), ("codec", 2), ("codec", 3), ("codec", 4), ("default", 1),
                                        ("codec-hi", 2))
"""``vqkit encode --quality Q`` (no ``--model``): the Q-th operating point of the shipped family, (model,
stages kept), from the smallest files to the best pictures, each the best of the shipped models' stage cuts
near its rate on Kodak24-500 (the codec model card): the f = 8 ``codec`` model's first four stage cuts
(0.07–0.42 bpp), the single-stage ``default`` (0.74 bpp) and the f = 4 ``codec-hi`` model's two stages
(1.37 bpp). Left out as dominated: ``codec``'s stages 5–6 (0.3 bpp more for 0.3 dB) and ``codec-hi``'s
first stage alone (0.58 bpp at 25.7 dB)."""


def quality(q: int) -> tuple[str, int]:
    """(model, stages) of ``--quality q``; ValueError naming the range."""
    if not 1 <= q <= len(QUALITY):
        raise ValueError(f"--quality must be 1 (smallest files) to {len(QUALITY)} (best pictures), got {q}")
    return QUALITY[q - 1]


def shipped(name: str) -> Path | None:
    """The folder of the shipped model ``name``, or None if vqkit ships none of that name (or it is absent)."""
    if name not in SHIPPED:
        return None
    path = Path(str(resources.files("vqkit") / "assets" / name))
    return path if (path / CONFIG_NAME).is_file() else None


def resolve(directory: str | os.PathLike[str]) -> Path:
    """A shipped name (``"default"``, ``"codec"``) -> that model's folder inside the package, unless a folder of
    that name exists here (a run called ``codec`` stays yours); a run directory -> its ``final/``; anything
    else is taken as a ``save_pretrained`` directory."""
    directory = check_directory(directory)
    path = Path(directory)
    if str(directory) in SHIPPED and not path.exists():
        found = shipped(str(directory))
        if found is None:
            raise ValueError(f"this vqkit ships no {directory!r} model (its package data is missing), and there is "
                             f"no folder ./{directory} here")
        return found
    return path / "final" if (path / "final" / CONFIG_NAME).is_file() else path


def check_writable(directory: str | os.PathLike[str]) -> None:
    """ValueError for the shipped default model: new prior tables would change its model id, and files
    encoded with it could no longer be decoded."""
    target = resolve(directory).resolve()
    for name in SHIPPED:
        folder = shipped(name)
        if folder is not None and target == folder.resolve():
            raise ValueError(f"the {name} tokenizer shipped with vqkit is read-only: copy its folder ({folder}) "
                             "and fit the copy")


def weights_blob(state: dict[str, Tensor]) -> bytes:
    """``state`` as the bytes of ``model.safetensors`` (deterministic: the same tensors, the same bytes)."""
    # clone: safetensors refuses shared or non-contiguous storage (tied or sliced tensors).
    tensors = {k: v.detach().to("cpu").clone(memory_format=torch.contiguous_format) for k, v in state.items()}
    return safetensors.torch.save(tensors, metadata={"format": "pt"})


def save(directory: str | os.PathLike[str], config: TokenizerConfig, state: dict[str, Tensor]) -> Path:
    """Write ``state`` and ``config`` to ``directory`` (created if needed); returns its path."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    blob = weights_blob(state)
    atomic_write(root / WEIGHTS_NAME, blob)
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "vqkit_version": __version__,
        "weights": WEIGHTS_NAME,
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        "config": config.to_dict(),
    }
    atomic_write(root / CONFIG_NAME, config_json(meta))
    return root


def read_config(directory: str | os.PathLike[str]) -> tuple[TokenizerConfig, str]:
    """(config, recorded SHA-256 of the weights) from ``directory/config.json``."""
    root = Path(directory)
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory; expected a tokenizer saved by save_pretrained")
    path = root / CONFIG_NAME
    if not path.is_file():
        raise ValueError(f"{path}: missing; a tokenizer directory holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    meta: Any = read_json(path, "a tokenizer directory is written by Tokenizer.save_pretrained")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{path}: not a vqkit tokenizer config (format {got!r}, expected {FORMAT!r})")
    version = meta.get("version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ValueError(
            f"{path}: format version {version!r} is not supported (this vqkit {__version__} reads "
            f"1..{FORMAT_VERSION}; it was written by vqkit {meta.get('vqkit_version')!r})"
        )
    _check_config_digest(path, meta)
    try:
        config = TokenizerConfig.from_dict(meta.get("config", {}))
    except (TypeError, ValueError, RecursionError) as err:
        raise ValueError(f"{path}: invalid tokenizer config: {err}") from err
    digest = meta.get("weights_sha256")
    if not isinstance(digest, str) or len(digest) != 64:
        raise IntegrityError(f"{path}: no valid weights_sha256 ({digest!r}), so {WEIGHTS_NAME} cannot be verified; "
                             "a tokenizer directory is written by Tokenizer.save_pretrained, which records it")
    return config, digest


def _check_config_digest(path: Path, meta: dict[str, Any]) -> None:
    """IntegrityError unless ``meta`` matches its ``config_sha256``; a warning if it has none (vqkit 0.1)."""
    if CONFIG_DIGEST not in meta:
        warnings.warn(f"{path}: written by vqkit {meta.get('vqkit_version')!r}, without {CONFIG_DIGEST}: its config "
                      "cannot be verified (save the model again with save_pretrained to record it)",
                      UserWarning, stacklevel=4)
        return
    recorded = meta[CONFIG_DIGEST]
    try:
        actual = config_digest(meta)
    except (ValueError, TypeError, RecursionError) as err:
        raise IntegrityError(f"{path}: its config cannot be hashed ({type(err).__name__}): corrupt") from err
    if not isinstance(recorded, str) or _HEX64.fullmatch(recorded) is None:
        raise IntegrityError(f"{path}: {CONFIG_DIGEST} is not a SHA-256 ({str(recorded)[:80]!r}); the file is corrupt")
    if recorded != actual:
        raise IntegrityError(f"{path}: contents differ from the {CONFIG_DIGEST} recorded in it: the file was edited "
                             "or is corrupt (a model's config is written by save_pretrained, never by hand)")


def read_weights(
    directory: str | os.PathLike[str], expected: dict[str, Tensor], digest: str, what: str
) -> dict[str, Tensor]:
    """Tensors of ``directory/model.safetensors``, checked against ``expected`` (a model's state
    dict) key by key and shape by shape, and against the recorded ``digest``. ``what`` names the
    architecture in messages."""
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise ValueError(f"{path}: missing; a tokenizer directory holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    blob = path.read_bytes()
    intact = hashlib.sha256(blob).hexdigest() == digest
    try:
        tensors = safetensors.torch.load(blob)
    except Exception as err:  # SafetensorError, or anything a damaged header provokes
        raise IntegrityError(f"{path}: corrupt or truncated safetensors file ({err})") from err
    problems = _mismatches(tensors, expected)
    if problems:
        hint = "" if intact else f"; the file's SHA-256 also differs from the one in {CONFIG_NAME}"
        raise ValueError(f"{path}: checkpoint does not match this architecture ({what}): {problems}{hint}")
    if not intact:
        raise IntegrityError(
            f"{path}: contents differ from the SHA-256 recorded in {CONFIG_NAME}: the file is corrupt "
            "or was replaced by another checkpoint's weights"
        )
    return tensors


def _mismatches(tensors: dict[str, Tensor], expected: dict[str, Tensor]) -> str:
    def show(names: list[str]) -> str:
        more = f" and {len(names) - _SHOW} more" if len(names) > _SHOW else ""
        return ", ".join(names[:_SHOW]) + more

    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = [
        f"{k} {tuple(tensors[k].shape)} in the file vs {tuple(v.shape)} in the model"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    parts = []
    if missing:
        parts.append(f"missing keys [{show(missing)}]")
    if unexpected:
        parts.append(f"unexpected keys [{show(unexpected)}]")
    if shapes:
        parts.append(f"shape mismatches [{show(shapes)}]")
    return "; ".join(parts)
