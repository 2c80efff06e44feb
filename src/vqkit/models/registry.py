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
    GroupedQuantizer,
    MultiScaleRQ,
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


def grouped(inner: str, groups: int, shared: bool = False, **inner_args: Any) -> Quantizer:
    """Grouped / multi-head form of the registry quantizer ``inner`` (:class:`~vqkit.quantizers.GroupedQuantizer`):
    ``groups`` channel groups, each quantized by ``inner`` built from the remaining arguments (one group's: its
    ``dim`` is the group's), one quantizer per group or one ``shared``. The inner arguments sit next to
    ``inner``/``groups``/``shared`` in the same flat JSON object, as ``rvq``'s stage options do (configs hold
    flat objects), e.g. ``{"inner": "fsq", "groups": 4, "levels": [8, 5, 5]}``."""
    if not isinstance(inner, str) or inner not in QUANTIZERS:
        raise ValueError(f"quantizer 'grouped': unknown inner quantizer {inner!r}; known: {sorted(QUANTIZERS)}")
    build_quantizer(inner, inner_args)  # refuses bad inner arguments by name before anything is repeated
    return GroupedQuantizer(lambda: build_quantizer(inner, inner_args), groups, shared=shared)


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
    "msrq": MultiScaleRQ,
    "grouped": grouped,
}

DEFAULT_QUANTIZER_ARGS: dict[str, dict[str, Any]] = {
    # RFSQ 2×2048 LayerNorm: 2 stages of 11 bits (22 bits/token; the paper's "12-bit" adds sizes).
    "rfsq": {"levels": [8, 8, 8, 4], "num_stages": 2, "conditioning": "layernorm"},
    "fsq": {"levels": [8, 8, 8, 8]},  # the 12-bit FSQ baseline of RFSQ
    "lfq": {"dim": 12, "bit_order": "msb"},  # the LFQ-12 baseline of RFSQ
    "bsq": {"dim": 18, "bit_order": "msb"},  # BSQ-ViT's 18-bit tokenizer (groups of 9 bits)
    "simvq": {"dim": 128, "codebook_size": 65536},  # SimVQ's 65k image model
    # VAR's tokenizer: 32 channels, 4096 codes, 10 scales of a 16×16 map (680 tokens)
    "msrq": {"dim": 32, "codebook_size": 4096, "patch_nums": [1, 2, 3, 4, 5, 6, 8, 10, 13, 16]},
}

LEGACY_QUANTIZER_ARGS: dict[str, dict[str, Any]] = {
    "lfq": {"bit_order": "lsb"},
    "bsq": {"bit_order": "lsb"},
}
"""What a config's quantizer arguments mean where they omit an argument whose default changed: every LFQ/BSQ
config written before ``bit_order`` existed numbers its tokens LSB-first, and its ``.vqt`` files name the
model by a hash of that very config (so it cannot be rewritten to say so). Explicit arguments win; the
registry defaults (:data:`DEFAULT_QUANTIZER_ARGS`, used for empty arguments) say ``"msb"``."""

DEFAULT_CONV_CHANNELS: dict[str, tuple[int, ...]] = {
    "rfsq_conv": RFSQ_CONV_CHANNELS,
    "fsq_conv": FSQ_CONV_CHANNELS,
}


def build_quantizer(name: str, args: Mapping[str, Any]) -> Quantizer:
    """``QUANTIZERS[name](**args)``, arguments missing from ``args`` read as :data:`LEGACY_QUANTIZER_ARGS` says;
    unknown names and arguments raise ValueError naming them."""
    if name not in QUANTIZERS:
        raise ValueError(f"unknown quantizer {name!r}; known: {sorted(QUANTIZERS)}")
    ctor = QUANTIZERS[name]
    kwargs = {**LEGACY_QUANTIZER_ARGS.get(name, {}), **{k: list(v) if isinstance(v, tuple) else v
                                                        for k, v in args.items()}}
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
