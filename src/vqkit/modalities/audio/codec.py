"""The speech side of the codec: mono waveforms ⇄ float tensors, and the lengths a speech file may claim.

A waveform at the model's sample rate is zero-padded to a multiple of the hop and tokenized in chunks of
1,000 tokens (20 s at 50 tokens/s) with 100 tokens of context on each side, so memory stays bounded for
hour-long files and chunk seams stay inaudible. The file stores the length in samples; decoding crops to it
and gives audio at the model's rate.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...codec.container import TokenFileError

TILE_TOKENS = 1000
MARGIN_TOKENS = 100
MAX_SAMPLES = 1 << 31
"""Longest waveform a file may claim (37 h at 16 kHz): checked before anything is allocated."""


class AudioAdapter:
    """Mono float waveform (T,) in [-1, 1] ⇄ (1, 1, T); the file stores (1, T)."""

    modality = "audio"
    pad_mode = "constant"

    def to_tensor(self, signal: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        if (not isinstance(signal, Tensor) or signal.ndim != 1 or not signal.dtype.is_floating_point
                or not len(signal)):
            shape = tuple(signal.shape) if isinstance(signal, Tensor) else type(signal).__name__
            raise ValueError(f"AudioCodec: expected a non-empty float waveform (T,), got {shape}")
        if not bool(torch.isfinite(signal).all()):
            raise ValueError("AudioCodec: the waveform contains NaN or Inf")
        return signal.float().reshape(1, 1, -1), (1, len(signal))

    def from_tensor(self, x: Tensor, shape: tuple[int, ...]) -> Tensor:
        return x.reshape(-1)[: shape[1]].clamp(-1, 1)

    def spatial(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) != 2 or shape[0] != 1:
            raise TokenFileError(f"not a mono waveform's shape: {shape}")
        if shape[1] > MAX_SAMPLES:
            raise TokenFileError(f"a waveform of {shape[1]:,} samples is longer than the {MAX_SAMPLES:,} samples a "
                                 ".vqt file may hold (vqkit encodes and decodes up to that length)")
        return (shape[1],)
