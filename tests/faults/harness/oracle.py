"""The fuzz oracle: which training option values are invalid, and why, independently of vqkit's own checks.

Options are ``vqkit train``'s names (a flat config file's keys), old names included; an accepted config is
read back through the option's section path (``optim.lr``).

The fuzz compares vqkit against this: a value the oracle calls invalid must be refused, and an accepted
config must hold no value it calls invalid.
"""

from __future__ import annotations

import json
import math
import re
import typing
from typing import Any

from .checks import short

POSITIVE_INT = {"image_size", "segment", "ch", "num_res_blocks", "steps", "batch_size", "log_every", "eval_every",
                "ckpt_every"}
NON_NEGATIVE_INT = {"resize", "max_train_images", "max_val_images", "workers", "gan_start", "seed", "prior_images",
                    "max_train_items", "max_val_items", "prior_items"}
POSITIVE_FLOAT = {"lr", "disc_lr"}
NON_NEGATIVE_FLOAT = {"weight_decay", "grad_clip", "l1_weight", "mse_weight", "lpips_weight", "gan_weight",
                      "mel_weight", "stft_weight", "fm_weight"}
FRACTION = {"warmup", "ema_decay"}
CHOICES = {"schedule": ("linear", "constant"), "amp": ("auto", "bf16", "none")}
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
JSON_OBJECT = {"quantizer_args", "arch_args"}
SECTIONS = {"data", "crop", "model", "quantizer", "objective", "optim", "run"}
"""A mapping under one of these names is a section of the nested form, not the option of that name."""
INT64 = 2**63


def field_kinds(old_names: bool = True) -> dict[str, str]:
    """Training options (and their old names) -> 'int' | 'float' | 'str' | 'bool' | 'ints' | 'floats' (from the
    annotations of the config's sections)."""
    from vqkit.train.convert import options

    kinds = {}
    for option in options().values():
        hint = option.annotation
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin is tuple:
            kind = "floats" if args and args[0] is float else "ints"
        elif hint in (bool, int, float):
            kind = hint.__name__
        else:  # str, a Literal of strings, anything else
            kind = "str"
        for name in (option.name, *(option.aliases if old_names else ())):
            kinds[name] = kind
    return kinds


def option_values(cfg: Any) -> dict[str, Any]:
    """The options a built config holds (those of its modality and arch), read at their section paths."""
    from vqkit.train.convert import options

    nested, found = cfg.to_dict(), {}
    for option in options().values():
        node: Any = nested
        for part in option.path.split("."):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            found[option.name] = tuple(node) if isinstance(node, list) else node
    return found


def _number(v: Any, integer: bool) -> str | None:
    if isinstance(v, bool):
        return f"{v!r} is a bool"
    if integer and not isinstance(v, int):
        return f"{short(v, 40)} ({type(v).__name__}) is not an integer"
    if not integer and not isinstance(v, int | float):
        return f"{short(v, 40)} ({type(v).__name__}) is not a number"
    if isinstance(v, int) and integer and not -INT64 <= v < INT64:
        return f"{short(v, 40)} does not fit in 64 bits"
    if isinstance(v, int) and not integer and abs(v) > 1e308:
        return f"{short(v, 40)} is too large for a float"
    if isinstance(v, float) and not math.isfinite(v):
        return f"{v} is not finite"
    return None


def _scalar_reason(name: str, value: Any, kind: str) -> str | None:
    why = _number(value, kind == "int")
    if why:
        return why
    if (name in POSITIVE_INT and value < 1) or (name in POSITIVE_FLOAT and value <= 0):
        return f"{value} is not positive"
    if (name in NON_NEGATIVE_INT or name in NON_NEGATIVE_FLOAT) and value < 0:
        return f"{value} is negative"
    if name in FRACTION and not 0 <= value < 1:
        return f"{value} is outside [0, 1)"
    return None


def _sequence_reason(name: str, value: Any, kind: str) -> str | None:
    if not isinstance(value, list | tuple):
        return f"{value!r} ({type(value).__name__}) is not a list"
    for item in value:
        why = _number(item, kind == "ints")
        if why:
            return f"item {why}"
    if name == "betas" and (len(value) != 2 or not all(0 <= b < 1 for b in value)):
        return f"{value!r} is not two numbers in [0, 1)"
    if name == "ch_mult" and not value:
        return "empty"
    if kind == "ints" and any(v < 1 for v in value):
        return f"{value!r} has a non-positive width"
    return None


def _string_reason(name: str, value: Any) -> str | None:
    if name in JSON_OBJECT and isinstance(value, dict):  # load_config takes a mapping for these (documented)
        return None
    if not isinstance(value, str):
        return f"{short(value, 40)} ({type(value).__name__}) is not a string"
    if name in CHOICES and value not in CHOICES[name]:
        return f"{value!r} is not one of {CHOICES[name]}"
    if name == "device" and not DEVICE.match(value):
        return f"{value!r} is not a device"
    if name in ("arch", "quantizer"):
        from vqkit.models.registry import ARCHITECTURES, QUANTIZERS

        if value not in (ARCHITECTURES if name == "arch" else QUANTIZERS):
            return f"unknown {name} {value!r}"
    if name in JSON_OBJECT:
        try:
            parsed = json.loads(value)
        except ValueError:
            return f"{value!r} is not JSON"
        if not isinstance(parsed, dict):
            return f"{value!r} is not a JSON object"
    return None


def invalid_reason(name: str, value: Any, kind: str) -> str | None:
    """Why ``value`` is not a valid TrainConfig ``name`` (None: it is valid, as far as this oracle knows).

    The oracle: the annotated type, strictly (no bool for int, no float for int, no str for numbers,
    ints accepted for floats), finite floats, ints within int64, and these ranges: counts and sizes
    positive or non-negative, rates positive, loss weights non-negative, warm-up and EMA decay in
    [0, 1), betas two numbers in [0, 1), enumerations and device strings as documented, JSON-object
    strings for quantizer_args/arch_args."""
    if name in SECTIONS and isinstance(value, dict):
        return None  # a nested section: the options it sets are checked once the config is built
    if kind in ("int", "float"):
        return _scalar_reason(name, value, kind)
    if kind in ("ints", "floats"):
        return _sequence_reason(name, value, kind)
    if kind == "bool":
        return None if isinstance(value, bool) else f"{value!r} is not a bool"
    return _string_reason(name, value)


def json_reason(name: str, value: Any, kind: str) -> str | None:
    """:func:`invalid_reason` of a value as a JSON config file gives it (a list where TrainConfig holds a tuple)."""
    return invalid_reason(name, tuple(value) if isinstance(value, list) and kind in ("ints", "floats") else value,
                          kind)


def config_violations(cfg: Any) -> list[str]:
    """Options of an accepted TrainConfig that the oracle calls invalid."""
    out = []
    kinds = field_kinds(old_names=False)
    for name, value in option_values(cfg).items():
        why = invalid_reason(name, value, kinds[name])
        if why:
            out.append(f"{name}={short(value, 40)}: {why}")
    return out


CATEGORIES = ("does not fit in 64 bits", "is too large for a float", "is not finite", "is a bool",
              "is not an integer", "is not a number", "is not positive", "is negative", "is outside [0, 1)",
              "is not a string", "is not one of", "is not a device", "unknown arch", "unknown quantizer",
              "is not JSON", "is not a JSON object", "is not a list", "is not two numbers", "non-positive width",
              "empty", "unknown key", "not an option", "does not parse", "no such data", "no such file",
              "unknown preset")


def category(reason: str) -> str:
    """The kind of invalidity in an oracle's reason, without the field and value (to group failures)."""
    found = [c for c in CATEGORIES if c in reason]
    return found[0] if found else reason[:60]
