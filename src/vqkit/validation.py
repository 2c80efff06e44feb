"""One validation layer for every config: frozen dataclasses checked by pydantic from their annotations.

A config dataclass states what each field may hold in its annotation (``PositiveInt``,
``Fraction``, ``Literal["linear", "constant"]``...) and calls :func:`check_fields` from its
``__post_init__``. Every field is then validated *strictly* — no ``"5"`` → 5, no ``True`` → 1, no
``2.5`` → 2, no NaN or Infinity — whichever way the config arrived (preset, file, flag, keyword,
``config.json`` of a saved model), and all bad fields are reported at once in a :class:`ConfigError`
naming the field, the value and what is expected, before any work starts.
:func:`from_mapping` also refuses unknown keys, and :func:`resolve_device` checks a device string
against what this machine has. :func:`check_args` applies the same strict checks to the keyword
arguments of a public constructor (the quantizers), once, at construction: never on the hot path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import numbers
import operator
import re
import threading
import typing
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, TypeVar

import annotated_types as at
import torch
from pydantic import ConfigDict, StringConstraints, TypeAdapter, ValidationError

T = TypeVar("T")

NonEmptyStr = Annotated[str, at.MinLen(1)]
PositiveInt = Annotated[int, at.Ge(1), at.Lt(2**63)]
NonNegativeInt = Annotated[int, at.Ge(0), at.Lt(2**63)]
Width = Annotated[int, at.Ge(1), at.Le(2**16)]
"""A layer width, an image side or a small structural count: beyond 65,536 it is a typo, not a model."""
Count = Annotated[int, at.Ge(0), at.Le(2**40)]
"""Steps, items, intervals: up to 2^40, so that no loop is asked to run for ever."""
PositiveFloat = Annotated[float, at.Gt(0)]
NonNegativeFloat = Annotated[float, at.Ge(0)]
Fraction = Annotated[float, at.Ge(0), at.Lt(1)]
"""A share in [0, 1): warm-up fractions, EMA decays."""
Dim = Annotated[int, at.Le(2**16)]
"""A quantizer's vector width (its lower bound is the quantizer's own check): beyond 65,536 it is a typo,
and a projection of that width would not fit in memory."""
Size = Annotated[int, at.Lt(2**63)]
"""A count that must fit int64 (its lower bound and any product limit are the quantizer's own checks)."""
DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:\d+)?)$"
Device = Annotated[str, StringConstraints(pattern=DEVICE_PATTERN)]
"""'auto', 'cpu', 'mps', 'cuda' or 'cuda:N' (availability is checked by :func:`resolve_device`)."""

_STRICT = ConfigDict(strict=True, allow_inf_nan=False)


class ConfigError(ValueError):
    """A configuration value of the wrong type, out of range, unknown, or not available here.

    ``problems`` holds ``(field, explanation)`` pairs when the error comes from :func:`check_fields`, so that a
    config made of sections can name each bad field by its path (``optim.lr``)."""

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


_ADAPTERS: dict[type[Any], dict[str, TypeAdapter[Any]]] = {}


def _adapters(cls: type[Any]) -> dict[str, TypeAdapter[Any]]:
    """One pydantic validator per field, built once per config class from its annotations."""
    if cls not in _ADAPTERS:
        hints = typing.get_type_hints(cls, include_extras=True)
        _ADAPTERS[cls] = {f.name: TypeAdapter(hints[f.name], config=_STRICT) for f in dataclasses.fields(cls)}
    return _ADAPTERS[cls]


def _explain(err: ValidationError) -> str:
    first = err.errors()[0]
    where = "".join(f"[{p!r}]" for p in first["loc"])  # position inside a tuple, when there is one
    if first["type"] == "missing":
        return f"too few items (item {where} is missing)"
    return f"item {where}: {first['msg']}" if where else str(first["msg"])


def check_fields(config: Any, exclude: tuple[str, ...] = ()) -> None:
    """Validate every field of dataclass instance ``config`` against its annotation (strict).

    JSON lists are accepted where a tuple is expected (and stored as tuples); an int is accepted
    where a float is expected (and stored as a float). Raises :class:`ConfigError` naming every bad
    field, its value and what it should be. Fields in ``exclude`` are left to the caller.
    """
    cls = type(config)
    problems = []
    for name, adapter in _adapters(cls).items():
        if name in exclude:
            continue
        value = getattr(config, name)
        if isinstance(value, list):
            value = tuple(value)
        try:
            checked = adapter.validate_python(value)
        except ValidationError as err:
            problems.append((name, f"{value!r} ({type(value).__name__}): {_explain(err)}"))
            continue
        if checked is not getattr(config, name):
            object.__setattr__(config, name, checked)
    if problems:
        raise ConfigError(f"{cls.__name__}: invalid " + "; ".join(f"{n} = {text}" for n, text in problems), problems)


_VALUE_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def check_value(annotation: Any, value: Any) -> str | None:
    """Why ``value`` does not fit ``annotation`` under the same strict rules as :func:`check_fields` (None: it
    fits); for values checked against a signature rather than a dataclass (a quantizer's arguments)."""
    try:
        adapter = _VALUE_ADAPTERS.get(annotation)
    except TypeError:  # an unhashable annotation
        adapter = None
    if adapter is None:
        adapter = TypeAdapter(annotation, config=_STRICT)
        with contextlib.suppress(TypeError):  # an unhashable annotation is not cached
            _VALUE_ADAPTERS[annotation] = adapter
    try:
        adapter.validate_python(value)
    except ValidationError as err:
        return _explain(err)
    return None


_ARG_ADAPTERS: dict[tuple[str, str], TypeAdapter[Any]] = {}


def _integral(value: Any) -> Any:
    """A numpy or torch integer scalar as ``int``, a numpy float as ``float`` (bools and everything else
    unchanged), so that strict checking refuses ``"8"``, ``8.0`` and ``True`` but not ``np.int64(8)``."""
    if isinstance(value, bool | int | float | str | bytes):
        return value
    if not hasattr(type(value), "__index__"):
        return float(value) if isinstance(value, numbers.Real) else value
    try:
        return operator.index(value)
    except TypeError:
        return value


def _plain(value: Any) -> Any:
    """Lists, and 1-d numpy arrays or tensors, as tuples of plain integers; scalars through :func:`_integral`."""
    if isinstance(value, list | tuple):
        return tuple(_integral(v) for v in value)
    if not isinstance(value, str | bytes) and getattr(value, "ndim", None) == 1 and hasattr(value, "tolist"):
        return tuple(_integral(v) for v in value.tolist())
    return _integral(value)


def check_args(owner: str, types: Mapping[str, Any], **values: Any) -> dict[str, Any]:
    """``values`` (a constructor's keyword arguments) checked strictly against ``types`` (annotations, as
    for a config dataclass): returns them normalised (lists as tuples, numpy/torch integers as ``int``),
    or raises :class:`ConfigError` naming every bad argument, its value and what it should be. Why:
    ``FSQ("88")`` must not build levels [8, 8], nor ``VQ(beta=nan)`` train on NaN."""
    problems, out = [], {}
    for name, value in values.items():
        key = (owner, name)
        if key not in _ARG_ADAPTERS:
            _ARG_ADAPTERS[key] = TypeAdapter(types[name], config=_STRICT)
        plain = _plain(value)
        try:
            out[name] = _ARG_ADAPTERS[key].validate_python(plain)
        except ValidationError as err:
            why = _explain(err).replace("a valid tuple", "a list or tuple")
            problems.append(f"{name} = {value!r} ({type(value).__name__}): {why}")
    if problems:
        raise ConfigError(f"{owner}: invalid " + "; ".join(problems))
    return out


def from_mapping(cls: type[T], values: Mapping[str, Any], where: str = "") -> T:
    """``cls(**values)`` for a config dataclass, refusing unknown keys with the known ones listed."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping of option names to values, "
                          f"got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in values if k not in known)
    if unknown:
        near = {u: difflib.get_close_matches(u, known, n=1) for u in unknown}
        hints = [f"{u!r} -> {m[0]!r}?" for u, m in near.items() if m]
        hint = f" (did you mean {', '.join(hints)})" if hints else ""
        raise ConfigError(f"{where or cls.__name__}: unknown option(s) {unknown}{hint}; known: {sorted(known)}")
    return cls(**values)


def resolve_device(name: str) -> torch.device:
    """The ``torch.device`` for a device option, refused with a clear message if this machine lacks it."""
    if not isinstance(name, str) or re.fullmatch(DEVICE_PATTERN, name) is None:
        raise ConfigError(f"device {name!r}: expected 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r}: this machine has no CUDA device (torch "
                              f"{torch.__version__}, built {'with' if torch.version.cuda else 'without'} CUDA)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {name!r}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r}: MPS is not available on this machine")
    return device


__all__ = ["ConfigError", "Count", "Device", "Dim", "Fraction", "NonEmptyStr", "NonNegativeFloat", "NonNegativeInt",
           "PositiveFloat", "PositiveInt", "Size", "Width", "check_args", "check_fields", "check_value", "from_mapping",
           "resolve_device"]


_FLUSH = threading.local()
"""Per thread (the CPU flag is per thread): how many :func:`flushed_subnormals` contexts are open, and whether
the thread flushed before the outermost one."""


def _flushing_now() -> bool:
    """Whether this thread flushes subnormals now (a subnormal times one gives zero)."""
    return bool((torch.tensor([1e-39]) * 1.0).item() == 0.0)


@contextlib.contextmanager
def flushed_subnormals(device: torch.device | str = "cpu") -> Iterator[None]:
    """On a CPU, subnormal floats (below 2^-126) flushed to zero inside, this thread's earlier setting restored
    when its outermost context closes. Every CPU multiply that touches a subnormal takes a microcode slow
    path: late in a CPU run Adam's moments go subnormal (a codec-cpu step: 0.41 s -> 1.75 s), and small
    weights times small activations do in inference (the codec's encoder: 0.39 s -> 0.28 s on a 768×512
    photo). The flag is per thread and worker threads copy it when created: the CLI opens one context before
    any torch work, so every thread flushes; inside a library call only the calling thread does."""
    if torch.device(device).type != "cpu":
        yield
        return
    depth = getattr(_FLUSH, "depth", 0)
    if depth == 0:
        _FLUSH.before = _flushing_now()
    _FLUSH.depth = depth + 1
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        _FLUSH.depth -= 1
        if _FLUSH.depth == 0:
            torch.set_flush_denormal(_FLUSH.before)
