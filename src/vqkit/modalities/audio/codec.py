"""The speech side of the codec: mono waveforms ⇄ float tensors at the model's rate, and the shapes a
speech file may claim.

A waveform is tokenized at the model's sample rate, zero-padded to a multiple of the hop, in chunks of
1,000 tokens (20 s at 50 tokens/s) with 100 tokens of context on each side, so memory stays bounded for
hour-long files and chunk seams stay inaudible. A file stores the length at the model's rate and, when
the input came at another rate, that rate and its length too — ``(1, T, rate, T_rate)`` — so decoding
gives the waveform back at the rate it came in (a 22.05 kHz file decodes to 22.05 kHz, not 16 kHz).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ...codec.container import TokenFileError
from .io import MAX_SAMPLE_RATE as MAX_RATE
from .io import MAX_SAMPLES
from .io import MIN_SAMPLE_RATE as MIN_RATE

TILE_TOKENS = 1000
MARGIN_TOKENS = 100


class Waveform(NamedTuple):
    """Mono samples ``(T,)`` float32 in [-1, 1] and their sample rate (Hz)."""

    samples: Tensor
    rate: int


def resample(samples: Tensor, rate: int, target: int, length: int | None = None) -> Tensor:
    """``samples`` from ``rate`` to ``target`` Hz (soxr, HQ), cropped or zero-padded to ``length`` if given."""
    if rate == target:
        out = samples
    else:
        import soxr  # type: ignore[import-untyped]  # the audio extra

        out = torch.from_numpy(np.ascontiguousarray(
            soxr.resample(samples.numpy().astype(np.float32), rate, target, quality="HQ"), dtype=np.float32))
    if length is not None and len(out) != length:
        out = torch.nn.functional.pad(out, (0, max(0, length - len(out))))[:length]
    return out.clamp(-1, 1)


class AudioAdapter:
    """Mono waveforms ⇄ (1, 1, T) at the model's ``rate``. A plain tensor is taken to be at the model's rate;
    a :class:`Waveform` at another rate is resampled, and its rate restored on decode."""

    modality = "audio"
    pad_mode = "constant"

    def __init__(self, rate: int) -> None:
        self.rate = rate

    def to_tensor(self, signal: Tensor | Waveform) -> tuple[Tensor, tuple[int, ...]]:
        samples, rate = (signal.samples, signal.rate) if isinstance(signal, Waveform) else (signal, self.rate)
        if (not isinstance(samples, Tensor) or samples.ndim != 1 or not samples.dtype.is_floating_point
                or not len(samples)):
            shape = tuple(samples.shape) if isinstance(samples, Tensor) else type(samples).__name__
            raise ValueError(f"audio codec: expected a non-empty float waveform (T,), got {shape}")
        if not bool(torch.isfinite(samples).all()):
            raise ValueError("audio codec: the waveform contains NaN or Inf")
        if not MIN_RATE <= rate <= MAX_RATE:
            raise ValueError(f"audio codec: a sample rate of {rate} Hz is outside {MIN_RATE}..{MAX_RATE}")
        x = resample(samples.float().cpu(), rate, self.rate)
        shape = (1, len(x)) if rate == self.rate else (1, len(x), rate, len(samples))
        return x.reshape(1, 1, -1), shape

    def allocate(self, shape: tuple[int, ...]) -> Tensor:
        return torch.empty(shape[1])

    def place(self, out: Tensor, piece: Tensor, where: tuple[slice, ...]) -> None:
        (span,) = where
        n = min(span.stop, len(out)) - span.start
        if n > 0:
            out[span.start : span.start + n] = piece.reshape(-1)[:n].clamp(-1, 1)

    def finish(self, out: Tensor, shape: tuple[int, ...]) -> Waveform:
        if len(shape) == 4:
            return Waveform(resample(out, self.rate, shape[2], shape[3]), shape[2])
        return Waveform(out, self.rate)

    def spatial(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) not in (2, 4) or shape[0] != 1:
            raise TokenFileError(f"not a mono waveform's shape: {shape}")
        if len(shape) == 4 and not MIN_RATE <= shape[2] <= MAX_RATE:
            raise TokenFileError(f"a sample rate of {shape[2]} Hz is outside {MIN_RATE}..{MAX_RATE}: corrupt file")
        if len(shape) == 4 and (shape[2] == self.rate or abs(shape[3] * self.rate - shape[1] * shape[2])
                                > 2 * max(shape[2], self.rate)):  # the two lengths must describe one signal
            raise TokenFileError(f"{shape[3]:,} samples at {shape[2]} Hz cannot be {shape[1]:,} samples at "
                                 f"{self.rate} Hz: corrupt or forged file")
        if max(shape[1], shape[-1]) > MAX_SAMPLES:
            raise TokenFileError(f"a waveform of {max(shape[1], shape[-1]):,} samples is longer than the "
                                 f"{MAX_SAMPLES:,} samples a .vqt file may hold (vqkit encodes and decodes up to that)")
        return (shape[1],)
