"""Names → constructors, so that a JSON config can rebuild any quantizer and backbone.

Quantizers are built from a name and JSON keyword arguments; architectures from a name and the
config, with encoder output channels = decoder input channels = the quantizer's ``dim``.
Defaults are the papers' settings (as their official code sets them), used when a config gives no quantizer arguments.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from torch import nn

from ..quantizers import (
    BSQ,
    EMAVQ,
    FSQ,
    IBQ,
    LFQ,
    VQ,
    FactorizedVQ,
    Quantizer,
    ResidualFSQ,
    ResidualSimVQ,
    ResidualVQ,
    SimVQ,
)
from ..validation import ConfigError
from .conv import FSQ_CONV_CHANNELS, RFSQ_CONV_CHANNELS, ConvDecoder, ConvEncoder
from .speech import SpeechConfig, SpeechDecoder, SpeechEncoder
from .vqgan import VQGANDecoder, VQGANEncoder

if TYPE_CHECKING:
    from .config import TokenizerConfig

QUANTIZERS: dict[str, Callable[..., Quantizer]] = {
    "fsq": FSQ,
    "lfq": LFQ,
    "bsq": BSQ,
    "ibq": IBQ,
    "vq": VQ,
    "emavq": EMAVQ,
    "factorized": FactorizedVQ,
    "simvq": SimVQ,
    "rfsq": ResidualFSQ,
    "rvq": ResidualVQ,
    "rsimvq": ResidualSimVQ,
}

DEFAULT_QUANTIZER_ARGS: dict[str, dict[str, Any]] = {
    # RFSQ 2×2048 LayerNorm: 2 stages of 11 bits (22 bits/token; the paper's "12-bit" adds sizes).
    "rfsq": {"levels": [8, 8, 8, 4], "num_stages": 2, "conditioning": "layernorm"},
    "fsq": {"levels": [8, 8, 8, 8]},  # the 12-bit FSQ baseline of RFSQ
    "lfq": {"dim": 12},  # the LFQ-12 baseline of RFSQ
    "bsq": {"dim": 18},  # BSQ-ViT's 18-bit tokenizer (groups of 9 bits)
    "simvq": {"dim": 128, "codebook_size": 65536},  # SimVQ's 65k image model
}

DEFAULT_CONV_CHANNELS: dict[str, tuple[int, ...]] = {
    "rfsq_conv": RFSQ_CONV_CHANNELS,
    "fsq_conv": FSQ_CONV_CHANNELS,
}


def build_quantizer(name: str, args: Mapping[str, Any]) -> Quantizer:
    """``QUANTIZERS[name](**args)``; unknown names and arguments raise ValueError naming them."""
    if name not in QUANTIZERS:
        raise ValueError(f"unknown quantizer {name!r}; known: {sorted(QUANTIZERS)}")
    ctor = QUANTIZERS[name]
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}
    try:
        inspect.signature(ctor).bind(**kwargs)
    except TypeError as err:
        raise ValueError(f"quantizer {name!r}: bad arguments {kwargs}: {err}") from err
    try:
        return ctor(**kwargs)
    except (TypeError, ConfigError) as err:  # a wrong type, an unknown stage option passed through **stage_options
        raise ValueError(f"quantizer {name!r}: bad arguments {kwargs}: {err}") from err


class Backbone(NamedTuple):
    """Encoder and decoder around a quantizer; the signal they take is (B, channels, *ndim positions)."""

    encoder: nn.Module
    decoder: nn.Module
    downsample_factor: int
    channels: int = 3
    ndim: int = 2


def _conv(config: TokenizerConfig, dim: int) -> Backbone:
    channels = config.conv_channels or DEFAULT_CONV_CHANNELS[config.arch]
    encoder = ConvEncoder(dim, channels)
    return Backbone(encoder, ConvDecoder(dim, channels), encoder.downsample_factor)


def _vqgan(config: TokenizerConfig, dim: int) -> Backbone:
    shape = (config.ch, config.ch_mult, config.num_res_blocks, config.norm_groups)
    encoder = VQGANEncoder(dim, *shape)
    return Backbone(encoder, VQGANDecoder(dim, *shape), encoder.downsample_factor)


def speech_config(args: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved :class:`SpeechConfig` of ``arch_args`` as JSON values (ValueError if invalid)."""
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}
    return SpeechConfig.from_dict(plain).to_dict()


def _speech(config: TokenizerConfig, dim: int) -> Backbone:
    cfg = SpeechConfig.from_dict({k: list(v) if isinstance(v, tuple) else v for k, v in config.arch_args.items()})
    encoder = SpeechEncoder(dim, cfg)
    return Backbone(encoder, SpeechDecoder(dim, cfg), cfg.hop, channels=1, ndim=1)


ARCH_MODALITY = {"speech": "audio"}
"""The signal an arch tokenizes where it is not an image (training, codecs and evaluation follow it)."""

ARCHITECTURES: dict[str, Callable[[TokenizerConfig, int], Backbone]] = {
    "rfsq_conv": _conv,
    "fsq_conv": _conv,
    "vqgan": _vqgan,
    "speech": _speech,
}

ARCH_ARGS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {"speech": speech_config}
"""Archs configured by ``arch_args``, each with the function that validates and resolves them."""


def build_backbone(config: TokenizerConfig, dim: int) -> Backbone:
    """Encoder/decoder of ``config.arch`` around a quantizer of ``dim`` channels."""
    if config.arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {config.arch!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[config.arch](config, dim)
