"""WavTokenizer-style speech encoder and decoder (SimVQ's audio experiment, ``speech``).

Encoder: the SEANet encoder of EnCodec/WavTokenizer, without its LSTM. ``Conv k7 (1 -> C)``, then for
each stride ``s``: ``residual_layers`` residual units (ELU, dilated conv k3 to C/2, ELU, conv k1 back
to C, identity skip; dilations 1, 2, 4, ...), ELU and a strided ``Conv (C -> 2C, kernel 2s, stride s)``;
the width doubles at every stride up to ``max_channels``. Then ELU, ``Conv k7 (-> dim)`` and, with
``input_norm``, a per-channel ``BatchNorm1d`` without affine. That last layer is ours, not
WavTokenizer's: in our pilot runs the encoder output hardly varied over time at
initialisation, so FSQ and SimVQ sent every frame to one to three codes; standardising each channel
over (batch, time) is what fixed it (LayerNorm across channels did not). Each conv pads
``kernel - stride`` zeros, the odd one on the right (EnCodec's split), so T samples give exactly
T / hop frames. EnCodec pads by reflection; zeros work for any length, even a single frame.

Decoder: the Vocos generator. ``Conv k7 (dim -> D)``, LayerNorm, ``backbone_layers`` ConvNeXt blocks
(depthwise conv k7, LayerNorm, Linear -> GELU -> Linear, layer scale 1/layers, residual), a final
LayerNorm and an iSTFT head: ``Linear(D -> n_fft + 2)`` gives a log-magnitude and a phase per bin,
``n_fft = 4·hop``, Hann window, Vocos' "same" padding, so t frames give exactly t·hop samples.

WavTokenizer runs 24 kHz audio with strides (2, 4, 5, 8), hop 320, 75 tokens/s; at vqkit's default
16 kHz the same hop gives 50 tokens/s.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import annotated_types as at
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrizations

from ..validation import ConfigError, Width, check_fields


@dataclass(frozen=True)
class SpeechConfig:
    """Shape of the speech encoder and decoder; the quantizer's dim is passed separately."""

    sample_rate: Annotated[int, at.Ge(1), at.Le(2**20)] = 16000
    """Audio sample rate in Hz; tokens per second = sample_rate / prod(strides)."""
    channels: Width = 32
    """Width of the encoder's first conv, doubled at each downsampling."""
    max_channels: Width = 512
    """Cap on the encoder width."""
    strides: Annotated[tuple[Width, ...], at.MinLen(1)] = (2, 4, 5, 8)
    """Encoder downsampling strides; their product is the hop (samples per token)."""
    backbone_dim: Width = 256
    """Width of the Vocos ConvNeXt decoder."""
    backbone_layers: Width = 8
    """Number of ConvNeXt blocks in the decoder."""
    intermediate: Width = 768
    """Hidden width of each ConvNeXt block's MLP."""
    input_norm: bool = True
    """Per-channel BatchNorm (no affine) on the quantizer input; without it FSQ/SimVQ collapsed in the pilots."""
    residual_layers: Annotated[int, at.Ge(0), at.Le(64)] = 1
    """SEANet residual units per encoder stage (dilations 1, 2, 4, ...)."""
    weight_norm: bool = False
    """Weight-normalise the encoder convs, as WavTokenizer does (changes the state-dict keys)."""

    def __post_init__(self) -> None:
        check_fields(self)  # JSON lists -> tuples: hashable, equal to itself
        if self.max_channels < self.channels:
            raise ConfigError(f"SpeechConfig.max_channels={self.max_channels} is below channels={self.channels}")

    @property
    def hop(self) -> int:
        """Samples per token: the product of the strides."""
        return math.prod(self.strides)

    @property
    def n_fft(self) -> int:
        """FFT size of the decoder's iSTFT head (4·hop, as WavTokenizer: 1280 for hop 320)."""
        return 4 * self.hop

    @property
    def tokens_per_second(self) -> float:
        return self.sample_rate / self.hop

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (strides as a list)."""
        out = dataclasses.asdict(self)
        out["strides"] = list(self.strides)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpeechConfig:
        """Inverse of :meth:`to_dict`; unknown keys are refused rather than silently dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"SpeechConfig: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def cpu(cls) -> SpeechConfig:
        return SPEECH_CPU

    @classmethod
    def paper(cls) -> SpeechConfig:
        return SPEECH_PAPER


SPEECH_CPU = SpeechConfig(channels=24, backbone_dim=192, backbone_layers=6, intermediate=576)
"""3.4M parameters with a 64-d quantizer (3.6M with 128-d): trains on a CPU."""
SPEECH_PAPER = SpeechConfig(channels=32, max_channels=512, backbone_dim=768, backbone_layers=12, intermediate=2304)
"""WavTokenizer / SimVQ audio widths, 50.9M parameters with a 512-d quantizer (4.5M encoder): a GPU job.

WavTokenizer's ~70M also counts EnCodec's 2-layer LSTM and a ResNet + attention "pos_net" before the
ConvNeXt blocks (about 20M together, by their layer shapes); neither is part of this model."""
SPEECH_PRESETS: dict[str, SpeechConfig] = {"cpu": SPEECH_CPU, "paper": SPEECH_PAPER}


class _Conv(nn.Module):
    """(B, c_in, T) -> (B, c_out, T / stride) for T a multiple of stride.

    Pads ``(kernel - 1)·dilation + 1 - stride`` zeros, the odd one on the right, as EnCodec's
    non-causal SConv1d does; that is what makes the length divide exactly.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, dilation: int = 1,
                 weight_norm: bool = False) -> None:
        super().__init__()
        conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, dilation=dilation)
        self.conv = parametrizations.weight_norm(conv) if weight_norm else conv
        total = (kernel - 1) * dilation + 1 - stride
        self.pad = (total // 2, total - total // 2)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.conv(F.pad(x, self.pad))
        return out


class ResidualUnit(nn.Module):
    """(B, C, T) -> (B, C, T): x + conv_k1(ELU(conv_k3,dilated(ELU(x)))), hidden width C/2 (SEANet)."""

    def __init__(self, channels: int, dilation: int, weight_norm: bool = False) -> None:
        super().__init__()
        hidden = max(1, channels // 2)
        self.block = nn.Sequential(
            nn.ELU(), _Conv(channels, hidden, 3, dilation=dilation, weight_norm=weight_norm),
            nn.ELU(), _Conv(hidden, channels, 1, weight_norm=weight_norm),
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = x + self.block(x)
        return out


class SpeechEncoder(nn.Module):
    """(B, 1, T) -> (B, dim, T / hop): SEANet encoder, then per-channel BatchNorm if ``input_norm``.

    Channels-first output, so a tokenizer applies ``b c t -> b t c`` before its quantizer.
    """

    def __init__(self, dim: int, config: SpeechConfig | None = None) -> None:
        super().__init__()
        cfg = config or SpeechConfig()
        if dim < 1:
            raise ValueError(f"SpeechEncoder: dim must be >= 1, got {dim}")
        wn = cfg.weight_norm
        layers: list[nn.Module] = [_Conv(1, cfg.channels, 7, weight_norm=wn)]
        width = cfg.channels
        for stride in cfg.strides:
            layers += [ResidualUnit(width, 2**j, weight_norm=wn) for j in range(cfg.residual_layers)]
            nxt = min(2 * width, cfg.max_channels)
            layers += [nn.ELU(), _Conv(width, nxt, 2 * stride, stride=stride, weight_norm=wn)]
            width = nxt
        layers += [nn.ELU(), _Conv(width, dim, 7, weight_norm=wn)]
        self.blocks = nn.Sequential(*layers)
        # statistics over (batch, time) per channel; running stats in eval mode, so decoding a
        # single clip does not depend on the rest of its batch
        self.norm: nn.Module = nn.BatchNorm1d(dim, affine=False) if cfg.input_norm else nn.Identity()
        self.dim = dim
        self.hop = self.downsample_factor = cfg.hop

    def forward(self, audio: Tensor) -> Tensor:
        if audio.dim() != 3 or audio.shape[1] != 1:
            raise ValueError(f"SpeechEncoder: expected (B, 1, T) audio, got shape {tuple(audio.shape)}")
        length = audio.shape[-1]
        if length < 1 or length % self.hop:
            raise ValueError(f"SpeechEncoder: T={length} must be a positive multiple of the hop {self.hop}")
        out: Tensor = self.norm(self.blocks(audio))
        return out


class ConvNeXtBlock(nn.Module):
    """(B, D, t) -> (B, D, t): depthwise conv k7, LayerNorm, MLP, layer scale, residual (Vocos)."""

    def __init__(self, dim: int, intermediate: int, layer_scale: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate)
        self.pwconv2 = nn.Linear(intermediate, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(self.dwconv(x).transpose(1, 2))  # (B, t, D)
        h = self.gamma * self.pwconv2(F.gelu(self.pwconv1(h)))
        out: Tensor = x + h.transpose(1, 2)
        return out


class ISTFTHead(nn.Module):
    """(B, t, D) -> (B, 1, t·hop): per-frame log-magnitude and phase, inverse STFT with "same" padding.

    As Vocos: ``mag = exp(log_mag)`` capped at 100, ``spec = mag·(cos p + i sin p)``. The inverse is
    Vocos' own overlap-add rather than ``torch.istft``: with ``center=True`` the latter returns
    (t - 1)·hop samples and zero-fills any extra, while trimming (n_fft - hop)/2 samples from both
    ends of the full overlap-add gives exactly t·hop samples, every one covered by some window.
    """

    window: Tensor

    def __init__(self, dim: int, hop: int) -> None:
        super().__init__()
        self.hop, self.n_fft = hop, 4 * hop
        self.out = nn.Linear(dim, self.n_fft + 2)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        total = self.n_fft - hop
        self.trim = (total // 2, total - total // 2)

    def forward(self, x: Tensor) -> Tensor:
        # float32 from here: the FFT and exp are not safe in half precision
        log_mag, phase = self.out(x).float().transpose(1, 2).chunk(2, dim=1)  # (B, n_fft/2 + 1, t) each
        mag = torch.exp(log_mag.clamp(max=math.log(1e2)))
        spec = torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))
        return self.istft(spec)

    def istft(self, spec: Tensor) -> Tensor:
        """(B, n_fft/2 + 1, t) complex -> (B, 1, t·hop) real, window-envelope normalised."""
        frames = spec.shape[-1]
        window = self.window
        segments = torch.fft.irfft(spec, self.n_fft, dim=1) * window[None, :, None]  # (B, n_fft, t)
        size = (frames - 1) * self.hop + self.n_fft
        fold = {"output_size": (1, size), "kernel_size": (1, self.n_fft), "stride": (1, self.hop)}
        audio = F.fold(segments, **fold)[:, 0, 0]  # (B, size): overlap-add
        envelope = F.fold(window.square()[None, :, None].expand(1, -1, frames), **fold)[0, 0, 0]
        left, right = self.trim
        audio = audio[:, left:size - right] / envelope[left:size - right]
        return audio.unsqueeze(1)


class SpeechDecoder(nn.Module):
    """(B, dim, t) -> (B, 1, t·hop): Vocos ConvNeXt backbone and iSTFT head."""

    def __init__(self, dim: int, config: SpeechConfig | None = None) -> None:
        super().__init__()
        cfg = config or SpeechConfig()
        if dim < 1:
            raise ValueError(f"SpeechDecoder: dim must be >= 1, got {dim}")
        width = cfg.backbone_dim
        self.embed = nn.Conv1d(dim, width, 7, padding=3)
        self.norm = nn.LayerNorm(width, eps=1e-6)
        scale = 1.0 / cfg.backbone_layers
        self.blocks = nn.Sequential(*[ConvNeXtBlock(width, cfg.intermediate, scale)
                                      for _ in range(cfg.backbone_layers)])
        self.final_norm = nn.LayerNorm(width, eps=1e-6)
        self.head = ISTFTHead(width, cfg.hop)
        self.apply(_vocos_init)
        self.dim, self.hop, self.n_fft = dim, cfg.hop, cfg.n_fft

    def forward(self, latents: Tensor) -> Tensor:
        if latents.dim() != 3 or latents.shape[1] != self.dim:
            raise ValueError(f"SpeechDecoder: expected (B, {self.dim}, t) latents, got shape {tuple(latents.shape)}")
        x = self.embed(latents)  # (B, D, t)
        x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        x = self.final_norm(self.blocks(x).transpose(1, 2))  # (B, t, D)
        out: Tensor = self.head(x)
        return out


def _vocos_init(module: nn.Module) -> None:
    """Vocos' initialisation: truncated N(0, 0.02) weights and zero biases for convs and linears."""
    if isinstance(module, nn.Conv1d | nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def sample_rate_of(arch_args: Mapping[str, Any]) -> int:
    """The sample rate a speech tokenizer's ``arch_args`` give (SpeechConfig's default when absent)."""
    return int(arch_args.get("sample_rate", SpeechConfig.sample_rate))
