"""The one way into a :class:`TrainConfig`: option names (flat) or sections (nested), old names included.

Every section field has an *option name*, the same for its ``--flag``, a flat config file, a preset and
a keyword of :func:`load_config` (:func:`options`). A nested mapping (``config.json`` as
:meth:`TrainConfig.to_dict` writes it) is first read into option names, so that presets, config files
and command-line options merge in one namespace, preset < file < options. The flat form of older
versions is the same namespace: its old names (``max_train_images``, ``prior_images``...) are aliases,
``quantizer_args`` and ``arch_args`` may be JSON text.

An option of another modality or architecture (``--mel-weight`` on an image arch, ``--ch`` on
rfsq_conv) is refused by name; only a stored config (a run's ``config.json``, a checkpoint's), where
the old flat form wrote every option, drops them — and a config file may hold them at their defaults.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..modalities import ARCH_MODALITY, MODALITIES, modality_of
from ..models.registry import ARCH_ARGS
from ..validation import ConfigError, check_value
from .config import DEFAULT_ARCH, SECTIONS, TrainConfig
from .presets import PRESETS
from .sections import (
    ARCH_CONFIGS,
    DataConfig,
    ModelConfig,
    OptimConfig,
    QuantizerConfig,
    RunConfig,
    arch_config,
    option_name,
)


@dataclass(frozen=True)
class Option:
    """One option: its name, where it lives (``optim.lr``), its type and default, the dataclass that documents
    it, its old names, and — for an option of some modalities or archs only — which (``owners``)."""

    name: str
    path: str
    annotation: Any
    default: Any
    cls: type[Any]
    field: str
    aliases: tuple[str, ...] = ()
    owners: tuple[str, ...] = ()
    kind: str = "common"
    """'common', 'modality' (crop, objective) or 'arch' (model.args)."""


_JSON_OBJECTS = {"quantizer_args": "quantizer.args", "arch_args": "model.args"}


def options() -> dict[str, Option]:
    """Every option, in section order, from the section classes and the registered modalities and archs."""
    found: dict[str, Option] = {}

    def add(section: str, cls: type[Any], kind: str = "common", owner: str | None = None,
            prefix: str | None = None) -> None:
        hints = typing.get_type_hints(cls, include_extras=False)
        for f in dataclasses.fields(cls):
            name = option_name(f)
            default = f.default if f.default is not dataclasses.MISSING else None
            known = found.get(name)
            owners = (*known.owners, owner) if known is not None and owner else ((owner,) if owner else ())
            found[name] = Option(name, f"{prefix or section}.{f.name}", hints[f.name], default, cls, f.name,
                                 tuple(f.metadata.get("old", ())), owners, kind)

    add("data", DataConfig)
    for modality in MODALITIES.values():
        add("crop", modality.crop_config, "modality", modality.name)
    found["arch"] = Option("arch", "model.arch", str, ModelConfig.arch, ModelConfig, "arch")
    for arch, cls in ARCH_CONFIGS.items():
        add("model", cls, "arch", arch, "model.args")
    found["arch_args"] = Option("arch_args", "model.args", str, "{}", _ArgsDocs, "arch_args", (),
                                tuple(ARCH_ARGS), "arch")
    found["quantizer"] = Option("quantizer", "quantizer.name", str, QuantizerConfig.name, QuantizerConfig, "name")
    found["quantizer_args"] = Option("quantizer_args", "quantizer.args", str, "{}", QuantizerConfig, "args")
    for modality in MODALITIES.values():
        add("objective", modality.objective_config, "modality", modality.name)
    add("optim", OptimConfig)
    add("run", RunConfig)
    return found


@dataclass(frozen=True)
class _ArgsDocs:
    """Documents the ``arch_args`` option (the speech arch's section as one JSON object)."""

    arch_args: str = "{}"
    """JSON object of the arch's options (the speech arch's SpeechConfig fields), replacing them all; {} = its
    defaults (fields given one by one, e.g. --channels, override single fields)."""


def to_flat(values: Any, where: str) -> dict[str, Any]:
    """``values`` (flat, nested or a mix; old names allowed) as option names; JSON text of ``quantizer_args`` and
    ``arch_args`` parsed. Unknown names are refused with the nearest known one."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping of option names to values, got {type(values).__name__}")
    opts = options()
    aliases = {old: o.name for o in opts.values() for old in o.aliases}
    by_path = {o.path: o for o in opts.values()}
    flat: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in values.items():
        if not isinstance(key, str):
            raise ConfigError(f"{where}: option names must be strings, got {key!r}")
        if key in SECTIONS and isinstance(value, Mapping):
            _flatten_section(key, value, flat, unknown, by_path)
        elif key in opts:
            flat[key] = value
        elif key in aliases:
            new = aliases[key]
            if new in values and values[new] != value:
                raise ConfigError(f"{where}: {key} is the old name of {new}; give one of them, not both")
            flat[new] = value
        elif key in SECTIONS:
            raise ConfigError(f"{where}: {key} is a section: expected a mapping of its options, got "
                              f"{type(value).__name__}")
        else:
            unknown.append(key)
    if unknown:
        known = sorted([*opts, *aliases, *(o.path for o in opts.values())])
        hints = [f"{u!r} -> {m[0]!r}?" for u in unknown if (m := difflib.get_close_matches(u, known, n=1))]
        hint = f" (did you mean {', '.join(hints)})" if hints else ""
        raise ConfigError(f"{where}: unknown option(s) {sorted(unknown)}{hint}; known: {sorted(opts)}")
    for name in _JSON_OBJECTS:
        if name in flat:
            flat[name] = _json_object(name, flat[name])
    return flat


def _flatten_section(section: str, values: Mapping[str, Any], flat: dict[str, Any], unknown: list[str],
                     by_path: dict[str, Option]) -> None:
    for key, value in values.items():
        path = f"{section}.{key}"
        if path == "model.args" and isinstance(value, Mapping):
            rest = {}
            for arg, v in value.items():
                option = by_path.get(f"model.args.{arg}")
                if option is not None:
                    flat[option.name] = v
                else:
                    rest[arg] = v
            if rest or not value:
                flat["arch_args"] = rest
        elif path in _JSON_OBJECTS.values():
            flat[next(k for k, p in _JSON_OBJECTS.items() if p == path)] = value
        elif path in by_path:
            flat[by_path[path].name] = value
        else:
            unknown.append(path)


def _json_object(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    if not isinstance(value, str):
        raise ConfigError(f"TrainConfig: invalid {name} = {value!r} ({type(value).__name__}): expected a JSON "
                          "object of keyword arguments (or its text)")
    try:
        parsed = json.loads(value)
    except (json.JSONDecodeError, RecursionError) as err:
        raise ConfigError(f"TrainConfig: {name} is not JSON: {value!r} ({err})") from err
    if not isinstance(parsed, dict):
        raise ConfigError(f"TrainConfig: {name} must be a JSON object, got {value!r}")
    return parsed


def convert(values: Any, *, explicit: Collection[str] = (), stored: bool = False,
            where: str = "training config") -> TrainConfig:
    """The :class:`TrainConfig` of ``values`` (flat, nested or a mix). Options of another modality or arch are
    refused by name when ``explicit`` names them or they differ from their default; ``stored`` (a run's
    own config) drops them."""
    return build(to_flat(values, where), explicit=explicit, stored=stored)


def build(flat: Mapping[str, Any], *, explicit: Collection[str] = (), stored: bool = False) -> TrainConfig:
    """A :class:`TrainConfig` from option names; every bad value is reported at once, by section and field."""
    arch = flat.get("arch", DEFAULT_ARCH)
    if not isinstance(arch, str) or arch not in ARCH_MODALITY:
        why = check_value(typing.get_type_hints(ModelConfig, include_extras=True)["arch"], arch) or "unknown arch"
        raise ConfigError(f"TrainConfig: invalid model.arch = {arch!r} ({type(arch).__name__}): {why}; "
                          f"known: {sorted(ARCH_MODALITY)}")
    modality, opts = modality_of(arch), options()
    values: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    problems: list[str] = []
    foreign: list[str] = []
    for name, value in flat.items():
        opt = opts[name]
        owner = modality.name if opt.kind == "modality" else arch
        if opt.owners and owner not in opt.owners:
            if not (stored or (name == "arch_args" and not value) or (name not in explicit and _default(opt, value))):
                foreign.append(_foreign(opt, arch, modality.items))
        elif name != "arch":
            section, _, field = opt.path.partition(".")
            values[section][field] = value
    args_values = {**(values["model"].get("args") or {}),  # --arch-args, then its fields one by one
                   **{k.removeprefix("args."): v for k, v in values["model"].items() if k.startswith("args.")}}
    sections: dict[str, Any] = {
        "data": _make(DataConfig, "data", values["data"], problems),
        "crop": _make(modality.crop_config, "crop", values["crop"], problems),
        "quantizer": _make(QuantizerConfig, "quantizer", values["quantizer"], problems),
        "objective": _make(modality.objective_config, "objective", values["objective"], problems),
        "optim": _make(OptimConfig, "optim", values["optim"], problems),
        "run": _make(RunConfig, "run", values["run"], problems),
    }
    args = _make(arch_config(arch), "model.args", args_values or {}, problems)
    if problems or foreign:
        parts = ([f"invalid {'; '.join(problems)}"] if problems else []) + foreign
        raise ConfigError("TrainConfig: " + "; ".join(parts))
    return TrainConfig(model=ModelConfig(arch, args), **sections)


def _make(cls: type[Any], path: str, values: Mapping[str, Any], problems: list[str]) -> Any:
    try:
        return cls(**values)
    except ConfigError as err:
        problems.extend([f"{path}.{n} = {text}" for n, text in err.problems] or [f"{path}: {err}"])
    except (TypeError, ValueError) as err:  # a section class outside vqkit.validation's conventions
        problems.append(f"{path}: {err}")
    return None


def _default(opt: Option, value: Any) -> bool:
    """Whether ``value`` is ``opt``'s default, as a valid value of its type (an old flat file held every option)."""
    if opt.name == "arch_args":
        return not value
    plain = tuple(value) if isinstance(value, list) else value
    return check_value(opt.annotation, plain) is None and plain == opt.default


def _foreign(opt: Option, arch: str, items: str) -> str:
    flag = "--" + opt.name.replace("_", "-")
    if opt.kind == "modality":
        owners = " or ".join(opt.owners)
        article = "an" if owners[0] in "aeiou" else "a"
        return f"{flag} ({opt.path}) is {article} {owners} option; arch {arch} trains {items}"
    takes = [o.name for o in options().values() if o.kind == "arch" and arch in o.owners]
    return (f"{flag} ({opt.path}) is an option of arch {' and '.join(opt.owners)}; {arch} takes "
            f"{', '.join('--' + t.replace('_', '-') for t in takes) or 'no arch options'}")


def load_config(preset: str | None = None, file: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """TrainConfig from a preset, then a JSON/YAML file (flat or nested), then keyword overrides (option names,
    old names or whole sections). An override of another modality's or arch's option is refused by name."""
    flat: dict[str, Any] = {}
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        _layer(flat, to_flat(PRESETS[preset], f"preset {preset}"))
    if file:
        _layer(flat, to_flat(read_file(Path(file)), str(file)))
    given = to_flat(overrides, "training config")
    _layer(flat, given)
    return build(flat, explicit=set(given))


def _layer(flat: dict[str, Any], layer: dict[str, Any]) -> None:
    """``layer`` over ``flat``: an ``arch_args`` object replaces the arch's whole section, as it always did (the
    fields set one by one in an earlier layer go with it); fields set one by one override single fields."""
    if "arch_args" in layer:
        owned = {o.name for o in options().values() if o.kind == "arch" and set(o.owners) <= set(ARCH_ARGS)}
        for name in owned & set(flat) - set(layer):
            del flat[name]
    flat.update(layer)


def read_run_config(path: str | Path) -> TrainConfig:
    """The config a run stored (``config.json``, nested or the flat form of older versions), with the options
    that form wrote for every modality and arch dropped where they do not apply."""
    return convert(read_file(Path(path)), stored=True, where=str(path))


def read_file(path: Path) -> dict[str, Any]:
    """A JSON or YAML config file as a mapping (its ``train`` section when it has one)."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the config file ({err})") from err
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as err:
            raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or use JSON") from err
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from err
    else:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as err:
            raise ConfigError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values, got {type(data).__name__}")
    section = data.get("train", data) if isinstance(data.get("train"), dict) else data
    bad_keys = [k for k in section if not isinstance(k, str)]
    if bad_keys:
        raise ConfigError(f"{path}: option names must be strings, got {bad_keys[:3]}")
    return section


__all__ = ["Option", "build", "convert", "load_config", "options", "read_file", "read_run_config", "to_flat"]
