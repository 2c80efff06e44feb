"""Which modality a model's architecture takes, and the things every modality does the same way through
its :class:`~.base.Modality`: open a saved model's codec, fit and save its priors.

Built-in modalities register themselves here (image: ``rfsq_conv``, ``fsq_conv``, ``vqgan``; audio:
``speech``); a new one calls :func:`register` with its architectures.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..codec import container
from ..codec.priors import PRIOR_FILE, PriorTables, load_prior, save_prior
from ..codec.tiled import Codec
from ..models import Tokenizer, pretrained
from ..storage import atomic_write
from ..validation import resolve_device
from .base import Modality

if TYPE_CHECKING:
    from ..train.config import TrainConfig

MODALITIES: dict[str, Modality] = {}
ARCH_MODALITY: dict[str, str] = {}
"""Architecture name -> modality name."""


def register(modality: Modality, archs: Iterable[str]) -> Modality:
    """Make ``modality`` known (its ``.vqt`` header code too) and the modality of ``archs``."""
    container.register(container.MODALITIES, modality.name, modality.container_code)
    MODALITIES[modality.name] = modality
    for arch in archs:
        if ARCH_MODALITY.get(arch, modality.name) != modality.name:
            raise ValueError(f"arch {arch!r} already belongs to the {ARCH_MODALITY[arch]} modality")
        ARCH_MODALITY[arch] = modality.name
    return modality


def modality_of(arch: str) -> Modality:
    """The modality whose signals ``arch`` tokenizes."""
    if arch not in ARCH_MODALITY:
        raise ValueError(f"arch {arch!r} belongs to no modality; known archs: {sorted(ARCH_MODALITY)}")
    return MODALITIES[ARCH_MODALITY[arch]]


def open_codec(model: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[Codec[Any], Modality]:
    """The codec of a saved model (``"default"``, a ``save_pretrained`` folder or a run directory) for its
    modality, with the prior tables beside it."""
    directory = pretrained.resolve(model)
    tokenizer = Tokenizer.from_pretrained(directory, device=resolve_device(str(device)))
    modality = modality_of(tokenizer.config.arch)
    codec = codec_for(tokenizer, modality, name=str(model))  # takes the model id from the stored weights
    tokenizer.prepare_inference()  # this copy is the codec's alone
    codec.tables = load_prior(directory, codec.specs)
    codec.archived = lambda: archived_priors(directory)
    return codec, modality


ARCHIVE = "prior-archive"
"""Beside a model: every prior table set it had before a refit, named by its digest (content-addressed)."""


def archived_priors(directory: Path) -> Iterator[PriorTables]:
    """The archived prior tables of the model in ``directory`` (read when a file's model id asks for them)."""
    for path in sorted((directory / ARCHIVE).glob("*.safetensors")):
        try:
            yield PriorTables.from_bytes(path.read_bytes(), path)
        except (ValueError, OSError) as err:  # one damaged archive must not hide the others
            warnings.warn(f"skipping archived prior tables: {err}", stacklevel=2)


def archive_prior(directory: Path) -> Path | None:
    """Keep the model's current prior tables in ``prior-archive/`` (named by their digest) before they are
    replaced, so that every file they coded still decodes; returns the archived path (None: no tables)."""
    current = directory / PRIOR_FILE
    if not current.is_file():
        return None
    blob = current.read_bytes()
    target = directory / ARCHIVE / f"{PriorTables.from_bytes(blob, current).digest()[:16]}.safetensors"
    if not target.is_file():
        target.parent.mkdir(exist_ok=True)
        atomic_write(target, blob)
    return target


def codec_for(tokenizer: Tokenizer, modality: Modality | None = None, name: str = "tokenizer") -> Codec[Any]:
    """The codec of an in-memory ``tokenizer`` (no prior tables: uniform until :meth:`Codec.fit_prior`). A token
    pyramid is tiled in its last scale, without a margin, whatever the modality's tiling."""
    modality = modality or modality_of(tokenizer.config.arch)
    tile, margin = (tokenizer.pyramid[-1], 0) if tokenizer.pyramid else modality.tile(tokenizer)
    return Codec(tokenizer, modality.adapter(tokenizer), None, tile, margin, name)


def fit_and_save_prior(model: str | os.PathLike[str], data: str, max_items: int = 0,
                       device: str | torch.device = "cpu", cfg: TrainConfig | None = None,
                       progress: bool = False, learned: bool = False) -> Path:
    """Fit the static and context tables (and with ``learned`` the learned prior) of the saved model ``model``
    on up to ``max_items`` whole training signals of ``data`` (a run passes its ``cfg`` so that the prior sees
    the run's split) and write them beside it (``prior.safetensors``); returns that path. Never into the
    shipped default."""
    pretrained.check_writable(model)
    codec, modality = open_codec(model, device)
    assert isinstance(codec.model, Tokenizer)
    signals = modality.training_signals(cfg, data, max_items, codec.model)
    if progress:
        from tqdm import tqdm

        signals = tqdm(signals, desc="fit-prior", unit=modality.items.rstrip("s"), total=max_items or None,
                       file=sys.stderr)
    if learned and not all(spec.ordinal for spec in codec.specs):
        raise ValueError(f"{model}: the learned prior models FSQ/LFQ/BSQ digits; this model's tokens are nominal "
                         "(VQ-family): fit without --learned")
    tables = codec.fit_prior(signals, learned)
    directory = pretrained.resolve(model)
    kept = archive_prior(directory)
    if kept is not None and progress:
        print(f"vqkit fit-prior: the previous tables are kept in {kept}: files encoded with them still decode",
              file=sys.stderr)
    return save_prior(directory, tables)
