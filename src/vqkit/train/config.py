"""Training configuration: :class:`TrainConfig`, a frozen config of sections.

``data``, ``model``, ``quantizer``, ``optim`` and ``run`` are the same for every modality
(:mod:`.sections`); ``crop`` and ``objective`` are the modality's own classes (``Modality.crop_config``,
``Modality.objective_config``), chosen by the architecture. :meth:`TrainConfig.to_dict` writes the
nested form (``config.json`` of a run, checkpoints); the flat form of older versions, presets, config
files and command-line options all come in through one converter (:mod:`.convert`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..modalities import modality_of
from ..modalities.base import CropConfig, ObjectiveConfig
from ..models import TokenizerConfig
from ..models.config import FrozenArgs
from ..validation import ConfigError
from .sections import DataConfig, ModelConfig, OptimConfig, QuantizerConfig, RunConfig, args_to_dict

DEFAULT_ARCH = ModelConfig.arch
SECTIONS = ("data", "crop", "model", "quantizer", "objective", "optim", "run")
"""The sections of a :class:`TrainConfig`, in the order ``config.json`` lists them."""


def _crop() -> CropConfig:
    return modality_of(DEFAULT_ARCH).crop_config()


def _objective() -> ObjectiveConfig:
    return modality_of(DEFAULT_ARCH).objective_config()


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run, by section; each section validates its own fields, and the
    sections are checked to agree (the crop and objective of the arch's modality, a buildable tokenizer)."""

    data: DataConfig = field(default_factory=DataConfig)
    crop: CropConfig = field(default_factory=_crop)
    model: ModelConfig = field(default_factory=ModelConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    objective: ObjectiveConfig = field(default_factory=_objective)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        expected = {"data": DataConfig, "model": ModelConfig, "quantizer": QuantizerConfig, "optim": OptimConfig,
                    "run": RunConfig}
        for name, cls in expected.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"TrainConfig: invalid {name}: expected a {cls.__name__}, got "
                                  f"{type(getattr(self, name)).__name__}")
        modality = modality_of(self.model.arch)
        for name, cls in (("crop", modality.crop_config), ("objective", modality.objective_config)):
            if type(getattr(self, name)) is not cls:
                given = type(getattr(self, name)).__name__
                raise ConfigError(f"TrainConfig: invalid {name}: arch {self.model.arch} trains {modality.items}, "
                                  f"whose {name} section is {cls.__name__}, not {given}")
        try:
            self.tokenizer_config()  # the arch's own checks (conv widths per layer, vqgan's group norm)
        except ValueError as err:
            raise ConfigError(f"TrainConfig: invalid model: {err}") from err

    def tokenizer_config(self) -> TokenizerConfig:
        """The tokenizer this run trains (the same ``TokenizerConfig`` as the flat config of older versions)."""
        return TokenizerConfig(arch=self.model.arch, quantizer=self.quantizer.name,
                               quantizer_args=self.quantizer.args, **self.model.tokenizer_fields())

    def amp_dtype(self, device: torch.device) -> torch.dtype | None:
        """The autocast dtype of training and validation on ``device`` (None: float32)."""
        bf16 = self.run.amp == "bf16" or (self.run.amp == "auto" and device.type == "cuda")
        return torch.bfloat16 if bf16 else None

    def to_dict(self) -> dict[str, Any]:
        """The nested form, JSON values only: ``{"data": {...}, "crop": {...}, "model": {"arch", "args"}, ...}``."""
        out: dict[str, Any] = {}
        for name in SECTIONS:
            section = getattr(self, name)
            if name == "model":
                out[name] = {"arch": section.arch, "args": args_to_dict(section.args)}
            elif name == "quantizer":
                out[name] = {"name": section.name, "args": FrozenArgs(section.args).to_json()}
            else:
                out[name] = args_to_dict(section)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; also reads the flat form of older versions (:func:`.convert.convert`)."""
        from .convert import convert

        return convert(data, where="training config")

    def replace(self, **sections: Any) -> TrainConfig:
        """This config with whole sections replaced (``cfg.replace(run=dataclasses.replace(cfg.run, out=d))``)."""
        return dataclasses.replace(self, **sections)


__all__ = ["DEFAULT_ARCH", "SECTIONS", "TrainConfig"]
