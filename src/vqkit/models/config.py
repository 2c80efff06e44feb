"""The one frozen description of a :class:`~vqkit.models.Tokenizer`, and its JSON form.

A config names an architecture and a quantizer from :mod:`vqkit.models.registry` and holds the
quantizer's keyword arguments as JSON values, so ``config.json`` rebuilds exactly the model that
wrote it. Lists become tuples on the way in, so a config equals its own JSON round trip and stays
hashable and picklable (the trainer copies configs into run directories and worker processes).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import annotated_types as at

from ..validation import ConfigError, Width, check_fields
from .registry import ARCH_ARGS, ARCHITECTURES, DEFAULT_CONV_CHANNELS, DEFAULT_QUANTIZER_ARGS, QUANTIZERS


def _freeze(value: Any, where: str) -> Any:
    """A JSON value made immutable (lists -> tuples); anything that JSON cannot hold is refused."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {value} is not a finite number (JSON cannot hold it)")
        return value
    if isinstance(value, list | tuple):
        return tuple(_freeze(v, where) for v in value)
    raise ConfigError(f"{where}: {value!r} ({type(value).__name__}) is not a JSON value (int/float/str/bool/None/list)")


def _thaw(value: Any) -> Any:
    return [_thaw(v) for v in value] if isinstance(value, tuple) else value


class FrozenArgs(Mapping[str, Any]):
    """An immutable, hashable, picklable mapping of keyword arguments, sorted by name."""

    __slots__ = ("_items",)

    def __init__(self, args: Mapping[str, Any] | None = None, name: str = "quantizer_args") -> None:
        items = dict(args or {})
        for key in items:
            if not isinstance(key, str):
                raise ConfigError(f"{name}: keys must be strings, got {key!r}")
        self._items = tuple(sorted((k, _freeze(v, f"{name}[{k!r}]")) for k, v in items.items()))

    def __getitem__(self, key: str) -> Any:
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self.items()) == dict(other.items())

    def __repr__(self) -> str:
        return repr(dict(self._items))

    def __reduce__(self) -> tuple[type[FrozenArgs], tuple[dict[str, Any]]]:
        return FrozenArgs, (dict(self._items),)

    def to_json(self) -> dict[str, Any]:
        """Plain dict with lists, for ``json.dumps``."""
        return {k: _thaw(v) for k, v in self._items}


@dataclass(frozen=True)
class TokenizerConfig:
    """Architecture + quantizer of a tokenizer.

    arch:           ``rfsq_conv`` | ``fsq_conv`` | ``vqgan`` (see :mod:`vqkit.models.registry`).
    quantizer:      a registry name (``rfsq``, ``fsq``, ``lfq``, ``bsq``, ``ibq``, ``vq``, ``emavq``, ``factorized``,
                    ``simvq``, ``rvq``, ``rsimvq``).
    quantizer_args: keyword arguments of that quantizer, JSON values only; empty means the
                    registry's paper defaults for the name (``rfsq``, ``fsq``, ``lfq``, ``bsq``, ``simvq``).
    conv_channels:  widths of the conv archs' 4×4 stride-2 layers (two for rfsq_conv, three for
                    fsq_conv: the arch fixes f); ``None`` means (128, 256) and (128, 256, 256).
    ch, ch_mult, num_res_blocks, norm_groups: the vqgan ResNet (width, per-level multipliers,
                    residual blocks per level, GroupNorm groups); f = 2^(len(ch_mult) - 1).
    arch_args:      the ``speech`` arch's :class:`~vqkit.models.speech.SpeechConfig` fields (JSON
                    values; empty = its defaults); must be empty for the image archs.
    """

    arch: str = "rfsq_conv"
    quantizer: str = "rfsq"
    quantizer_args: Mapping[str, Any] = field(default_factory=FrozenArgs)
    conv_channels: Annotated[tuple[Width, ...], at.MinLen(1)] | None = None
    ch: Width = 128
    ch_mult: Annotated[tuple[Width, ...], at.MinLen(1)] = (1, 2, 2, 4)
    num_res_blocks: Width = 2
    norm_groups: Width = 32
    arch_args: Mapping[str, Any] = field(default_factory=FrozenArgs)

    def __post_init__(self) -> None:
        check_fields(self, exclude=("quantizer_args", "arch_args"))
        if self.arch not in ARCHITECTURES:
            raise ConfigError(f"unknown arch {self.arch!r}; known: {sorted(ARCHITECTURES)}")
        if self.quantizer not in QUANTIZERS:
            raise ConfigError(f"unknown quantizer {self.quantizer!r}; known: {sorted(QUANTIZERS)}")
        for name in ("quantizer_args", "arch_args"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise ConfigError(f"{name} must be a mapping of keyword arguments, got {value!r} "
                                  f"({type(value).__name__})")
            object.__setattr__(self, name, FrozenArgs(value, name))
        if self.arch in ARCH_ARGS:
            ARCH_ARGS[self.arch](self.arch_args)  # validates: ValueError naming the field
        elif self.arch_args:
            given = dict(self.arch_args)
            raise ConfigError(f"arch_args are for {sorted(ARCH_ARGS)}; {self.arch} takes none, got {given}")
        if self.conv_channels is not None:
            default = DEFAULT_CONV_CHANNELS.get(self.arch)
            if default is None:
                raise ConfigError(f"conv_channels is for {sorted(DEFAULT_CONV_CHANNELS)}; {self.arch} uses ch/ch_mult")
            if len(self.conv_channels) != len(default):
                raise ConfigError(
                    f"{self.arch} has {len(default)} stride-2 layers, so conv_channels needs {len(default)} "
                    f"widths, got {self.conv_channels}"
                )
        if self.arch == "vqgan":
            bad = [self.ch * m for m in self.ch_mult if (self.ch * m) % self.norm_groups]
            if bad:
                raise ConfigError(f"vqgan: norm_groups={self.norm_groups} must divide every width ch*ch_mult, "
                                  f"not {bad}")

    def resolved(self) -> TokenizerConfig:
        """This config with the registry defaults written out, as a checkpoint must store it."""
        args = self.quantizer_args or DEFAULT_QUANTIZER_ARGS.get(self.quantizer, {})
        channels = self.conv_channels
        if channels is None and self.arch in DEFAULT_CONV_CHANNELS:
            channels = DEFAULT_CONV_CHANNELS[self.arch]
        arch_args = ARCH_ARGS[self.arch](self.arch_args) if self.arch in ARCH_ARGS else {}
        return dataclasses.replace(self, quantizer_args=args, conv_channels=channels, arch_args=arch_args)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        out = {f.name: _thaw(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out["quantizer_args"] = FrozenArgs(self.quantizer_args).to_json()
        out["arch_args"] = FrozenArgs(self.arch_args, "arch_args").to_json()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenizerConfig:
        """Inverse of :meth:`to_dict`; unknown fields are an error, missing ones take defaults."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"tokenizer config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"tokenizer config has unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(data))
