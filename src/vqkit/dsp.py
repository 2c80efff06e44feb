"""Spectral helpers shared by speech losses and metrics: torch's own STFT, a mel filterbank, log-mel.

No torchaudio (its wheels pin an older torch than vqkit's): the mel filterbank is the Slaney-style
one (librosa's default: Slaney mel scale, area-normalised triangles), built in float64 once.
Waveforms are float ``(..., T)`` in [-1, 1].
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor


def hz_to_mel(hz: Tensor) -> Tensor:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return torch.where(hz >= min_log_hz, min_log_mel + torch.log(hz.clamp_min(1e-10) / min_log_hz) / logstep,
                       hz / f_sp)


def mel_to_hz(mel: Tensor) -> Tensor:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return torch.where(mel >= min_log_mel, min_log_hz * torch.exp(logstep * (mel - min_log_mel)), f_sp * mel)


@lru_cache(maxsize=32)
def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0,
                   f_max: float | None = None) -> Tensor:
    """(n_mels, n_fft // 2 + 1) float32 triangular filters, area-normalised (Slaney)."""
    if n_fft < 2 or n_mels < 1 or sample_rate < 1:
        raise ValueError(f"mel_filterbank: bad sizes n_fft={n_fft}, n_mels={n_mels}, sample_rate={sample_rate}")
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mels = torch.linspace(float(hz_to_mel(torch.tensor(f_min, dtype=torch.float64))),
                          float(hz_to_mel(torch.tensor(f_max, dtype=torch.float64))), n_mels + 2, dtype=torch.float64)
    edges = mel_to_hz(mels)
    lower = (freqs[None, :] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    upper = (edges[2:, None] - freqs[None, :]) / (edges[2:] - edges[1:-1])[:, None]
    weights = torch.clamp(torch.minimum(lower, upper), min=0)
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.float()


def stft_magnitude(x: Tensor, n_fft: int, hop: int, win: int | None = None) -> Tensor:
    """(..., T) -> (..., n_fft // 2 + 1, frames) magnitude, Hann window, centred, float32."""
    win = win or n_fft
    lead = x.shape[:-1]
    window = torch.hann_window(win, device=x.device, dtype=torch.float32)
    spec = torch.stft(x.reshape(-1, x.shape[-1]).float(), n_fft, hop, win, window, center=True,
                      return_complex=True)
    return spec.abs().reshape(*lead, *spec.shape[-2:])


def log_mel(x: Tensor, sample_rate: int, n_fft: int = 1024, hop: int = 256, n_mels: int = 80,
            eps: float = 1e-5) -> Tensor:
    """(..., T) -> (..., n_mels, frames) natural-log mel spectrogram, clamped at ``eps``."""
    fb = mel_filterbank(n_fft, n_mels, sample_rate).to(x.device)
    mag = stft_magnitude(x, n_fft, hop)
    return torch.log(torch.clamp(torch.matmul(fb, mag), min=eps))
