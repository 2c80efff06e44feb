"""The contract every vqkit quantizer honours.

A quantizer maps channels-last ``z`` of shape ``(..., dim)`` to a point of its codebook.
:class:`Quantizer` owns everything that must be identical across methods — input checks,
the float32 guard (autocast off, so bf16/fp16 never change an index), reshaping, codebook
statistics — and each method implements three small hooks on float32 tensors:

* ``_quantize(z) -> (quantized, indices, loss)``: the training path (may update state);
* ``_encode(z) -> indices``: pure, no state change;
* ``_decode(indices) -> codes``: codes in the input space, from the indices and module state.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import Tensor, nn

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class QuantizerOutput(NamedTuple):
    """What every quantizer's ``forward`` returns.

    quantized: same shape and dtype as ``z``; straight-through gradient to ``z``.
    indices:   int64, ``z.shape[:-1]`` (one stage) or ``z.shape[:-1] + (num_stages,)``.
    loss:      scalar, the method's own auxiliary loss, already weighted (0 where none).
    metrics:   detached scalars; always ``perplexity`` and ``usage`` (fraction of codes
               used in this batch; the mean over stages for residual quantizers).
    """

    quantized: Tensor
    indices: Tensor
    loss: Tensor
    metrics: dict[str, Tensor]


@contextmanager
def float32_math(device: torch.device) -> Iterator[None]:
    """Disable autocast so that the quantization math really runs in float32."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield


def straight_through(z: Tensor, q: Tensor) -> Tensor:
    """``q`` in the forward pass, identity gradient to ``z`` in the backward pass."""
    return z + (q - z).detach()


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
        self._check_input(z)
        with float32_math(z.device):
            quantized, indices, loss = self._quantize(z.float())
            metrics = self.code_metrics(indices)
        return QuantizerOutput(quantized.to(z.dtype), indices, loss, metrics)

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        """(..., dim) -> int64 indices, ``z.shape[:-1]`` (+ ``(num_stages,)`` if residual)."""
        self._check_input(z)
        with float32_math(z.device):
            return self._encode(z.float())

    @torch.no_grad()
    def decode(self, indices: Tensor) -> Tensor:
        """Indices -> float32 codes ``(..., dim)`` in the input space."""
        self._check_indices(indices)
        with float32_math(indices.device):
            return self._decode(indices.long())

    # -- shared checks and statistics -------------------------------------------------------
    def _check_input(self, z: Tensor) -> None:
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
        if self.check_finite and not bool(torch.isfinite(z).all()):
            raise ValueError(f"{name}: z contains NaN or Inf (pass check_finite=False to skip)")

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
