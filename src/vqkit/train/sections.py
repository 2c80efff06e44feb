"""The sections of a training config that every modality shares: data, model, quantizer, optimisation, run.

The ``crop`` and ``objective`` sections belong to the modality (``Modality.crop_config`` and
``Modality.objective_config``). Each section is a frozen dataclass validated from its annotations
(:mod:`vqkit.validation`). A field's *option name* — its ``--flag`` and its key in a flat config file —
is its own name unless its metadata says otherwise (:func:`option`), with the names older vqkit versions
used for it (``max_train_images``) kept as aliases.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import annotated_types as at

from ..models.config import FrozenArgs
from ..models.registry import ARCH_ARGS, ARCHITECTURES, DEFAULT_QUANTIZER_ARGS, QUANTIZERS
from ..models.speech import SpeechConfig
from ..validation import (
    ConfigError,
    Count,
    Device,
    Fraction,
    NonEmptyStr,
    NonNegativeFloat,
    PositiveFloat,
    Width,
    check_fields,
    check_value,
)


def named(name: str | None = None, old: tuple[str, ...] = ()) -> dict[str, Any]:
    """Field metadata: the option name is ``name`` (default: the field's), also read under ``old`` names."""
    return {"option": name, "old": old}


def option_name(f: dataclasses.Field[Any]) -> str:
    return f.metadata.get("option") or f.name


@dataclass(frozen=True)
class DataConfig:
    """Where training and validation items come from, and how many."""

    train: NonEmptyStr = field(default="photos", metadata=named("data"))
    """Training data: an image folder (ImageNet layout or flat), 'photos', or a folder of wav/flac."""
    val: str = field(default="", metadata=named("val_data"))
    """Validation folder; empty = the val/ split of --data (a flat folder holds out a share of its files;
    a speech run must name one)."""
    max_train_items: Count = field(default=0, metadata=named(old=("max_train_images",)))
    """Training items used (images or utterances), evenly spread; 0 = all."""
    max_val_items: Count = field(default=256, metadata=named(old=("max_val_images",)))
    """Validation items (images or utterances), evenly spread; 0 = all."""
    workers: Annotated[int, at.Ge(0), at.Le(1024)] = 0
    """DataLoader worker processes; 0 = load in the training process."""
    bad_files: Literal["skip", "fail"] = "skip"
    """An unreadable training file: 'skip' it (replaced by another, counted, warned once) or 'fail' the run."""

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class ConvArgs:
    """rfsq_conv and fsq_conv: the widths of their stride-2 convs."""

    conv_channels: tuple[Width, ...] = ()
    """Widths of rfsq_conv's two (fsq_conv's three) stride-2 convs; empty = the arch's defaults."""

    def __post_init__(self) -> None:
        check_fields(self)

    def tokenizer_fields(self) -> dict[str, Any]:
        return {"conv_channels": self.conv_channels or None}


@dataclass(frozen=True)
class VQGANArgs:
    """vqgan: the ResNet's width, levels and depth."""

    ch: Width = 128
    """vqgan: base width of the ResNet."""
    ch_mult: tuple[Width, ...] = (1, 2, 2, 4)
    """vqgan: width multiplier per level; downsampling f = 2^(levels - 1)."""
    num_res_blocks: Width = 2
    """vqgan: residual blocks per level."""

    def __post_init__(self) -> None:
        check_fields(self)

    def tokenizer_fields(self) -> dict[str, Any]:
        return {"ch": self.ch, "ch_mult": self.ch_mult, "num_res_blocks": self.num_res_blocks}


@dataclass(frozen=True)
class NoArgs:
    """An architecture without options."""

    def tokenizer_fields(self) -> dict[str, Any]:
        return {}


ARCH_CONFIGS: dict[str, type[Any]] = {"rfsq_conv": ConvArgs, "fsq_conv": ConvArgs, "vqgan": VQGANArgs,
                                      "speech": SpeechConfig}
"""Architecture -> the class of its ``model.args``; an arch not named here takes none (:class:`NoArgs`).
Archs configured by ``arch_args`` (``models.registry.ARCH_ARGS``) pass their section to the tokenizer whole."""


def arch_config(arch: str) -> type[Any]:
    return ARCH_CONFIGS.get(arch, NoArgs)


def args_to_dict(args: Any) -> dict[str, Any]:
    """A ``model.args`` section as JSON values (tuples as lists)."""
    return {f.name: _plain(getattr(args, f.name)) for f in dataclasses.fields(args)}


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, tuple | list) else value


@dataclass(frozen=True)
class ModelConfig:
    """The architecture and its own section (``args``: an instance of ``ARCH_CONFIGS[arch]``; None = the
    arch's defaults)."""

    arch: NonEmptyStr = "rfsq_conv"
    """Tokenizer architecture: rfsq_conv, fsq_conv, vqgan or speech."""
    args: Any = None

    def __post_init__(self) -> None:
        check_fields(self, exclude=("args",))
        if self.arch not in ARCHITECTURES:
            raise ConfigError(f"unknown arch {self.arch!r}; known: {sorted(ARCHITECTURES)}",
                              [("arch", f"unknown arch {self.arch!r}; known: {sorted(ARCHITECTURES)}")])
        cls = arch_config(self.arch)
        if self.args is None:
            object.__setattr__(self, "args", cls())
        if type(self.args) is not cls:
            raise ConfigError(f"arch {self.arch} takes {cls.__name__}, got {type(self.args).__name__}",
                              [("args", f"arch {self.arch} takes {cls.__name__}, got {type(self.args).__name__}")])

    def tokenizer_fields(self) -> dict[str, Any]:
        """The :class:`~vqkit.models.TokenizerConfig` fields this section sets."""
        if self.arch in ARCH_ARGS:
            return {"arch_args": args_to_dict(self.args)}
        fields: dict[str, Any] = self.args.tokenizer_fields()
        return fields


@dataclass(frozen=True)
class QuantizerConfig:
    """A quantizer of the registry and its keyword arguments, checked against its constructor's signature."""

    name: NonEmptyStr = field(default="rfsq", metadata=named("quantizer"))
    """Quantizer: rfsq, fsq, lfq, bsq, ibq, vq, emavq, factorized, simvq, rvq, rsimvq, grouped or msrq."""
    args: Mapping[str, Any] = field(default=FrozenArgs(), metadata=named("quantizer_args"))
    """The quantizer's keyword arguments (a JSON object); {} = the registry's paper defaults."""

    def __post_init__(self) -> None:
        check_fields(self, exclude=("args",))
        if self.name not in QUANTIZERS:
            raise ConfigError(f"unknown quantizer {self.name!r}", [("name", f"{self.name!r}: unknown quantizer; "
                                                                          f"known: {sorted(QUANTIZERS)}")])
        if not isinstance(self.args, Mapping):
            raise ConfigError("quantizer args", [("args", f"{self.args!r} ({type(self.args).__name__}): expected a "
                                                          "mapping (JSON object) of keyword arguments")])
        object.__setattr__(self, "args", FrozenArgs(self.args, "quantizer.args"))
        problems = quantizer_arg_problems(self.name, self.args)
        if problems:
            raise ConfigError("QuantizerConfig: invalid " + "; ".join(f"{n} = {t}" for n, t in problems), problems)


_HINTS: dict[str, dict[str, Any]] = {}


def quantizer_arg_problems(name: str, args: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Each argument of ``args`` that does not fit the annotation of ``QUANTIZERS[name]``'s parameter of that
    name, and any missing or unknown argument, as ``("args.NAME", why)``."""
    ctor = QUANTIZERS[name]
    signature = inspect.signature(ctor)
    if name not in _HINTS:
        _HINTS[name] = typing.get_type_hints(ctor.__init__ if isinstance(ctor, type) else ctor)  # type: ignore[misc]
    plain = {k: _plain(v) for k, v in (args or DEFAULT_QUANTIZER_ARGS.get(name, {})).items()}
    try:
        signature.bind(**plain)
    except TypeError as err:
        return [("args", f"{name}: {err}; its arguments: {sorted(signature.parameters)}")]
    problems = []
    for key, value in plain.items():
        param = signature.parameters.get(key)
        if param is None or param.kind is param.VAR_KEYWORD or key not in _HINTS[name]:
            continue  # passed to the stages through **options: the stage's constructor checks it
        why = check_value(_HINTS[name][key], value)
        if why:
            problems.append((f"args.{key}", f"{value!r} ({type(value).__name__}): {why}"))
    return problems


@dataclass(frozen=True)
class OptimConfig:
    """Adam, its schedule, clipping, weight EMA and what a non-finite step does."""

    steps: Annotated[int, at.Ge(1), at.Le(2**40)] = 300
    """Optimizer steps of the run."""
    batch_size: Annotated[int, at.Ge(1), at.Le(2**20)] = 16
    """Items per step and process (DDP: per rank)."""
    lr: PositiveFloat = 8e-4
    """Peak learning rate (Adam)."""
    betas: tuple[Fraction, Fraction] = (0.9, 0.999)
    """Adam's (beta1, beta2)."""
    weight_decay: NonNegativeFloat = 5e-5
    """Adam weight decay."""
    warmup: Fraction = 0.01
    """Fraction of the steps with a linear warm-up."""
    schedule: Literal["linear", "constant"] = "linear"
    """'linear' decay to 0 after warm-up, or 'constant'."""
    grad_clip: NonNegativeFloat = 1.0
    """Clip the gradient norm to this value; 0 = no clipping."""
    ema_decay: Fraction = 0.0
    """Weight EMA used for evaluation and the final model (SimVQ: 0.999); 0 disables it."""
    nonfinite: Literal["skip", "stop"] = "skip"
    """A step whose loss or gradients are NaN/inf: 'skip' it (no optimizer update; counted in the log and summary;
    the run stops after 50 in a row) or 'stop' the run at once with a message."""

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class RunConfig:
    """Where the run goes, its seed, how often it logs, validates and saves, the prior, and the device."""

    out: NonEmptyStr = "runs/rfsq"
    """Run directory: config.json, checkpoint.pt, log.jsonl, final/."""
    seed: Annotated[int, at.Ge(0), at.Lt(2**63)] = 0
    """Seed of every random choice (weights, crops, order)."""
    log_every: Annotated[int, at.Ge(1), at.Le(2**40)] = 10
    """Steps between log lines."""
    eval_every: Annotated[int, at.Ge(1), at.Le(2**40)] = 100
    """Steps between validations."""
    ckpt_every: Annotated[int, at.Ge(1), at.Le(2**40)] = 50
    """Steps between checkpoints (written atomically; --resume continues from the last)."""
    prior_items: Count = field(default=512, metadata=named(old=("prior_images",)))
    """Training items (whole, evenly spread) whose tokens fit the static and context entropy-coding
    priors saved with the final model (prior.safetensors); 0 = none (uniform prior only)."""
    learned_prior: bool = False
    """Also fit the learned prior on those tokens (FSQ/LFQ/BSQ/RFSQ; implied by rate_weight > 0)."""
    init: str = ""
    """Start from the weights of a saved model (a shipped name such as 'codec', a save_pretrained folder or a
    run directory) instead of random ones: fine-tuning, e.g. with --rate-weight. Its model and quantizer
    must be this run's; the optimizer starts fresh. Ignored when --resume finds a checkpoint."""
    amp: Literal["auto", "bf16", "none"] = "auto"
    """'auto' = bf16 autocast on CUDA, none on CPU; 'bf16' or 'none' to force."""
    device: Device = "auto"
    """'auto' (CUDA if present), 'cpu', 'cuda', 'cuda:N' or 'mps'; checked against this machine at start."""

    def __post_init__(self) -> None:
        check_fields(self)


__all__ = ["ARCH_CONFIGS", "ConvArgs", "DataConfig", "ModelConfig", "NoArgs", "OptimConfig", "QuantizerConfig",
           "RunConfig", "VQGANArgs", "arch_config", "args_to_dict", "named", "option_name",
           "quantizer_arg_problems"]
