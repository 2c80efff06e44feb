"""The contract every vqkit quantizer honours.

A quantizer maps channels-last ``z`` of shape ``(..., dim)`` to a point of its codebook.
:class:`Quantizer` owns everything that must be identical across methods — input checks,
the float32 guard (autocast off, so bf16/fp16 never change an index), reshaping, codebook
statistics — and each method implements three small hooks on float32 tensors:

* ``_quantize(z) -> (quantized, indices, loss)``: the training path (may update state);
* ``_encode(z) -> indices``: pure, no state change;
* ``_decode(indices) -> codes``: codes in the input space, from the indices and module state.

Numerics: no finite input gives a silent wrong answer. ``z`` is checked for NaN/Inf *after* its
cast to float32, so a finite float64 value beyond float32's range is refused by name rather
than quantized as ±inf; every intermediate that finite values can push out of float32's range
(an input projection, a residual stage's conditioned input) is checked the same way (a host sync
each, one for all the stages of a residual quantizer; ``check_finite=False`` skips them all and
lets NaN through). A check is one reduction, not an elementwise ``isfinite`` tensor: a sum for
one tensor (:func:`all_finite`: a NaN or ±inf element makes it non-finite; only where it is not
finite — finite values can overflow it — are the elements tested one by one), a NaN-propagating
``aminmax`` per residual stage. The
nearest-code search and the l2 normalisation rescale by powers of two instead of overflowing
(:mod:`.search`, :func:`l2_normalize`), and the statistics a quantizer keeps (EMA codebooks,
running LayerNorm statistics) are accumulated in float64 and never updated from a non-finite
batch statistic: such an update is skipped and counted in ``skipped_updates``. What is left
is loud, not silent: a squared error beyond float32's range (|z - q| above ~1.8e19) makes
``loss`` inf, with finite gradients; the indices stay exact.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layout import SymbolLayout

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MAX_INDEX_SPACE = 2**63 - 1
"""Largest codebook a quantizer may have: indices are int64, and so is a codebook size as a tensor."""
MAX_CODEBOOK_ELEMENTS = 2**40
"""Largest ``codebook_size × dim`` a stored codebook may have (4 TiB of float32: beyond any one device)."""



class NonFiniteError(ValueError):
    """A quantizer's input (or a value computed from it) is NaN or Inf, or beyond float32's range."""

class QuantizerOutput(NamedTuple):
    """What every quantizer's ``forward`` returns.

    quantized: same shape and dtype as ``z``; straight-through gradient to ``z``.
    indices:   int64, ``z.shape[:-1]`` (one stage) or ``z.shape[:-1] + (num_stages,)``.
    loss:      scalar, the method's own auxiliary loss, already weighted (0 where none).
    metrics:   detached scalars; always ``perplexity`` and ``usage`` (fraction of codes
               used in this batch; the mean over stages for residual quantizers). A
               :class:`CodeMetrics` mapping: computed from ``indices`` when first read, so a
               step that never reads them does not pay for them.
    """

    quantized: Tensor
    indices: Tensor
    loss: Tensor
    metrics: Mapping[str, Tensor]


class CodeMetrics(Mapping[str, Tensor]):
    """The metrics of a forward pass, computed from its indices on first access and then kept.

    Reading any key (or iterating, ``len``, ``in``, ``repr``) computes them all at once, with
    exactly the values :meth:`Quantizer.code_metrics` returns for those indices; later reads are
    free. Usage and perplexity need a histogram of the indices (a sort, or a pass over the
    codebook), which costs as much as FSQ's whole quantization: a training step that logs them
    pays it when it reads them, a step or an evaluation loop that does not never pays it.

    The indices are those the forward returned (not a copy): modifying them in place before the
    metrics are read raises instead of silently describing other indices (not detectable for
    inference tensors modified inside ``torch.inference_mode``, which keep no version counter).
    """

    __slots__ = ("_compute", "_indices", "_values", "_version")

    def __init__(self, compute: Callable[[Tensor], dict[str, Tensor]], indices: Tensor) -> None:
        self._compute = compute
        self._indices = indices
        # inference tensors keep no version counter (and outside inference mode they cannot be modified)
        self._version = None if indices.is_inference() else indices._version
        self._values: dict[str, Tensor] | None = None

    @property
    def computed(self) -> bool:
        """Whether the values have been computed (read) yet."""
        return self._values is not None

    def _get(self) -> dict[str, Tensor]:
        if self._values is None:
            if self._version is not None and self._indices._version != self._version:
                raise RuntimeError(
                    "QuantizerOutput.metrics: the indices were modified in place before the metrics were read; "
                    "read out.metrics first, or call quantizer.code_metrics(indices) on the indices you want"
                )
            self._values = self._compute(self._indices)
        return self._values

    def __getitem__(self, key: str) -> Tensor:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __repr__(self) -> str:
        return f"CodeMetrics({self._get()!r})"


def _autocast_enabled(device: torch.device) -> bool:
    try:
        return bool(torch.is_autocast_enabled(device.type))
    except TypeError:  # torch < 2.4 has no per-device query: disable it unconditionally
        return True


def float32_math(device: torch.device) -> AbstractContextManager[None]:
    """Disable autocast so that the quantization math really runs in float32 (nothing to do where
    autocast is not enabled for ``device``: entering and leaving the context costs ~5 µs a call)."""
    if _autocast_enabled(device):
        return _autocast_off(device)
    return nullcontext()


@contextmanager
def _autocast_off(device: torch.device) -> Iterator[None]:
    with torch.autocast(device_type=device.type, enabled=False):
        yield


def all_finite(x: Tensor) -> bool:
    """Whether every element of the floating-point tensor ``x`` is finite; one host sync.

    One sum decides the common case: a NaN or ±inf element makes the sum NaN or ±inf, so a finite
    sum proves every element finite. A non-finite sum may also come from finite values that
    overflow it; only then are the elements tested one by one. ~3 µs instead of ~50 µs for
    ``isfinite(x).all()`` on 4096×6 float32 on CPU, which builds a bool tensor of ``x``'s size.
    """
    return math.isfinite(float(x.detach().sum())) or bool(torch.isfinite(x).all())


def straight_through(z: Tensor, q: Tensor) -> Tensor:
    """``q`` in the forward pass, identity gradient to ``z`` in the backward pass; no gradient to ``q``.

    Written ``sg(q) + (z - sg(z))`` rather than ``z + sg(q - z)``: the forward value is exactly ``q``
    for every finite ``z`` (the latter rounds ``q - z`` at the scale of ``z`` and returns 0 instead of a
    code of 0.5 once |z| > 2^24·|q|).
    """
    return q.detach() + (z - z.detach())


def l2_normalize(x: Tensor, dim: int = -1) -> Tensor:
    """``F.normalize`` that does not overflow: a row whose float32 norm is inf (|x| above ~1.8e19) is
    first divided by its largest |entry|, which leaves its direction (and its gradient) unchanged.
    Other rows are computed exactly as ``F.normalize`` does (divided by 1)."""
    norm = torch.linalg.vector_norm(x.detach(), dim=dim, keepdim=True)
    scale = torch.where(torch.isfinite(norm), 1.0, x.detach().abs().amax(dim=dim, keepdim=True))
    return F.normalize(x / scale, dim=dim)


def check_size(owner: str, name: str, value: int, low: int) -> int:
    """``int(value)`` if it is an integer ``>= low``, else a ValueError naming the argument, value and limit."""
    if isinstance(value, bool) or int(value) != value:
        raise ValueError(f"{owner}: {name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{owner}: {name} must be >= {low}, got {int(value)}")
    return int(value)


def check_codebook(owner: str, codebook_size: int, dim: int) -> None:
    """Refuse a stored (K, dim) codebook that cannot be indexed by int64 or allocated at all."""
    if codebook_size * dim > MAX_CODEBOOK_ELEMENTS:
        raise ValueError(
            f"{owner}: codebook_size × dim = {codebook_size} × {dim} = {codebook_size * dim} elements, "
            f"over the limit of {MAX_CODEBOOK_ELEMENTS} (2^40, 4 TiB of float32)"
        )


def code_statistics(indices: Tensor, codebook_size: int) -> tuple[Tensor, Tensor]:
    """(perplexity, usage) of a flat index tensor.

    A dense histogram costs O(K) and, on CUDA, avoids the host sync of ``unique``; sorting the
    N indices costs O(N log N). Use the histogram on CUDA (up to 2^24 codes) or when K is small
    next to N, and ``unique`` otherwise (FSQ/LFQ codebooks of 64k codes for 4k tokens).
    """
    indices = indices.reshape(-1)
    dense = codebook_size <= 4 * indices.numel() or (indices.is_cuda and codebook_size <= 1 << 24)
    if dense:
        counts = torch.zeros(codebook_size, device=indices.device)
        counts.index_add_(0, indices, torch.ones_like(indices, dtype=counts.dtype))
        used = (counts > 0).sum().float()
    else:
        counts = torch.unique(indices, return_counts=True)[1].float()
        used = torch.tensor(float(counts.numel()), device=indices.device)
    probs = counts / counts.sum()
    entropy = -(probs * torch.log(probs.clamp_min(1e-30))).sum()
    return entropy.exp(), used / codebook_size


class Quantizer(nn.Module, ABC):
    """Base class: see the module docstring for the hooks a method implements.

    Attributes every quantizer sets: ``dim`` (input channels), ``codebook_size`` (per stage),
    ``num_stages``; ``codebook_sizes`` lists each stage's size.
    """

    dim: int
    codebook_size: int
    num_stages: int = 1
    check_finite: bool = True

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return (self.codebook_size,) * self.num_stages

    @property
    def side_bits_per_sample(self) -> int:
        """Bits of side information per sample that decoding needs beyond the indices (0 for all but
        instance-LayerNorm RFSQ). Per sample, not per token: a sample's token count is the caller's."""
        return 0

    @property
    def bits_per_token(self) -> float:
        """Σ log2(codebook size) over stages; side information is counted per sample, not here."""
        return sum(math.log2(k) for k in self.codebook_sizes)

    # -- the symbol contract (what an entropy coder may rely on) ------------------------------
    def symbol_layout(self) -> tuple[SymbolLayout, ...]:
        """One :class:`SymbolLayout` per stage. Default: one index with no order per stage; quantizers
        whose index is made of digits (FSQ, LFQ) say so by overriding this."""
        return tuple(SymbolLayout.nominal(k) for k in self.codebook_sizes)

    @torch.no_grad()
    def code_vectors(self, stage: int = 0) -> Tensor | None:
        """The (K, dim) float32 code vectors of ``stage`` in the input space (a coder may group similar
        codes for its contexts), or None where codes are digits with an order of their own. Stage 0 only
        for a one-stage quantizer; residual quantizers answer per stage."""
        if stage != 0 or self.num_stages != 1:
            raise ValueError(f"{type(self).__name__}: stage {stage} out of range (one stage)")
        if self.symbol_layout()[0].ordinal:
            return None
        device = next((b.device for b in self.buffers()), torch.device("cpu"))
        with float32_math(device):
            return torch.cat([self._decode(torch.arange(i, min(i + 65536, self.codebook_size), device=device))
                              for i in range(0, self.codebook_size, 65536)])

    # -- hooks -------------------------------------------------------------------------
    @abstractmethod
    def _quantize(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(..., dim) fp32 -> (quantized with straight-through grad, indices, loss)."""

    @abstractmethod
    def _encode(self, z: Tensor) -> Tensor:
        """(..., dim) fp32 -> indices, without changing any state."""

    @abstractmethod
    def _decode(self, indices: Tensor) -> Tensor:
        """indices -> (..., dim) fp32 codes in the input space."""

    # -- public API --------------------------------------------------------------------
    def forward(self, z: Tensor) -> QuantizerOutput:
        zf = self._input(z)
        with float32_math(z.device):
            quantized, indices, loss = self._quantize(zf)
        return QuantizerOutput(quantized.to(z.dtype), indices, loss, CodeMetrics(self.code_metrics, indices))

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        """(..., dim) -> int64 indices, ``z.shape[:-1]`` (+ ``(num_stages,)`` if residual)."""
        zf = self._input(z)
        with float32_math(z.device):
            return self._encode(zf)

    @torch.no_grad()
    def decode(self, indices: Tensor) -> Tensor:
        """Indices -> float32 codes ``(..., dim)`` in the input space."""
        self._check_indices(indices)
        with float32_math(indices.device):
            return self._decode(indices.long())

    # -- shared checks and statistics -------------------------------------------------------
    def _input(self, z: Tensor) -> Tensor:
        """The checked float32 tensor the math runs on: finiteness is checked *after* the cast, so
        a finite float64 value beyond float32's range is refused instead of becoming ±inf (a cast
        from bf16/fp16 is exact and cannot overflow)."""
        self._check_input(z)
        zf = z.float()
        if self.check_finite and not all_finite(zf):
            name = type(self).__name__
            if zf.dtype != z.dtype and bool(torch.isfinite(z).all()):
                big = float(z.detach().abs().max())
                raise NonFiniteError(
                    f"{name}: z holds values beyond float32 range (max |z| = {big:.4g} > "
                    f"{torch.finfo(torch.float32).max:.4g}); the quantizers compute in float32"
                )
            bad = int((~torch.isfinite(zf)).sum())
            raise NonFiniteError(f"{name}: z contains NaN or Inf ({bad} of {zf.numel()} values)")
        return zf

    def _require_finite(self, x: Tensor, what: str) -> None:
        """Refuse (if ``check_finite``) an intermediate that finite float32 values pushed to NaN/Inf."""
        if self.check_finite and not all_finite(x):
            raise self._overflow_error(what)

    def _overflow_error(self, what: str) -> NonFiniteError:
        return NonFiniteError(
            f"{type(self).__name__}: {what} is NaN or Inf although z is finite: finite values beyond "
            f"float32's range arose inside the quantizer (rescale z)"
        )

    def _check_input(self, z: Tensor) -> None:
        """Type, dtype and shape of ``z``; its finiteness is checked after the cast, in :meth:`_input`."""
        name = type(self).__name__
        if not isinstance(z, Tensor):
            raise ValueError(f"{name}: z must be a torch.Tensor, got {type(z).__name__}")
        if z.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"{name}: z must be floating point (float32/bf16/fp16), got {z.dtype}")
        if z.ndim == 0 or z.shape[-1] != self.dim:
            raise ValueError(
                f"{name}: expected z of shape (..., {self.dim}) (channels last), "
                f"got {tuple(z.shape)}"
            )
        if z.numel() == 0:
            raise ValueError(f"{name}: z has no tokens (shape {tuple(z.shape)})")

    def _check_indices(self, indices: Tensor) -> None:
        name = type(self).__name__
        if not isinstance(indices, Tensor):
            raise ValueError(f"{name}: indices must be a torch.Tensor, got {type(indices).__name__}")
        if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
            raise ValueError(f"{name}: indices must be an integer tensor, got {indices.dtype}")
        if indices.numel() == 0:
            raise ValueError(f"{name}: indices are empty (shape {tuple(indices.shape)})")
        sizes = self.codebook_sizes
        if self.num_stages > 1:
            if indices.ndim == 0 or not 1 <= indices.shape[-1] <= self.num_stages:
                raise ValueError(
                    f"{name}: expected indices of shape (..., S) with 1 <= S <= {self.num_stages} "
                    f"stages, got {tuple(indices.shape)}"
                )
            per_stage = indices.reshape(-1, indices.shape[-1])
            columns = [per_stage[:, s] for s in range(indices.shape[-1])]
        else:
            columns = [indices.reshape(-1)]
        for s, col in enumerate(columns):
            lo, hi = int(col.min()), int(col.max())
            if lo < 0 or hi >= sizes[s]:
                where = f" at stage {s}" if self.num_stages > 1 else ""
                raise ValueError(
                    f"{name}: index out of range{where}: values span [{lo}, {hi}], "
                    f"codebook has {sizes[s]} codes"
                )

    @torch.no_grad()
    def code_metrics(self, indices: Tensor) -> dict[str, Tensor]:
        """perplexity and usage of ``indices`` (per stage and their mean if residual).

        Pass every index of an evaluation set at once to get usage over the whole set.
        """
        with float32_math(indices.device):
            return self._code_metrics(indices)

    def _code_metrics(self, indices: Tensor) -> dict[str, Tensor]:
        if self.num_stages == 1:
            perplexity, usage = code_statistics(indices, self.codebook_size)
            return {"perplexity": perplexity, "usage": usage}
        metrics: dict[str, Tensor] = {}
        flat = indices.reshape(-1, self.num_stages)
        for s, size in enumerate(self.codebook_sizes):
            metrics[f"perplexity_{s}"], metrics[f"usage_{s}"] = code_statistics(flat[:, s], size)
        metrics["perplexity"] = torch.stack([metrics[f"perplexity_{s}"] for s in range(self.num_stages)]).mean()
        metrics["usage"] = torch.stack([metrics[f"usage_{s}"] for s in range(self.num_stages)]).mean()
        return metrics
