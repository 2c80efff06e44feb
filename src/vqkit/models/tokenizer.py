"""Tokenizer = encoder + quantizer + decoder, any vqkit quantizer in the middle.

Signals are float ``(B, channels, *positions)`` in **[-1, 1]** (documented, not clamped): images
``(B, 3, H, W)`` (:mod:`vqkit.modalities.image`), speech ``(B, 1, T)`` (:mod:`vqkit.modalities.audio`), with
every position axis a multiple of ``downsample_factor``. The encoder gives ``(B, C, h, w)`` (or ``(B, C, t)``);
the model, not the quantizer, moves it to channels-last ``(B, h, w, C)`` because quantizers take
``(..., dim)``. Tokens are ``(B, h, w)`` (``(B, t)``), or ``(B, h, w, S)`` for residual quantizers,
with h = H / f and w = W / f; a multi-scale quantizer (:class:`~vqkit.quantizers.MultiScaleRQ`) gives a
pyramid ``(B, L)`` instead (L = Σ s_k², scale by scale), and decodes any prefix of whole scales.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from ..quantizers import MultiScaleRQ, QuantizerOutput, ResidualQuantizer, SymbolLayout
from ..validation import ConfigError, resolve_device
from . import pretrained
from .config import TokenizerConfig
from .registry import build_backbone, build_quantizer


class Tokenizer(nn.Module):
    """Image tokenizer built from a :class:`TokenizerConfig`.

    ``forward(images) -> (reconstruction, QuantizerOutput)`` trains; ``encode`` / ``decode`` map
    images to indices and back without gradients. In eval mode ``decode(encode(x))`` equals
    ``forward(x)[0]`` up to float rounding (the straight-through sum ``z + (q - z)``).
    ``config`` is the resolved config: registry defaults written out, as checkpoints store it.
    """

    def __init__(self, config: TokenizerConfig | None = None) -> None:
        super().__init__()
        self.config = (config if config is not None else TokenizerConfig()).resolved()
        quantizer = build_quantizer(self.config.quantizer, self.config.quantizer_args)
        backbone = build_backbone(self.config, quantizer.dim)
        self.encoder = backbone.encoder
        self.quantizer = quantizer
        self.decoder = backbone.decoder
        self.downsample_factor = backbone.downsample_factor
        self.signal_channels, self.signal_ndim = backbone.channels, backbone.ndim

    @property
    def residual(self) -> bool:
        """Whether tokens carry a trailing stage axis ``(B, h, w, S)``."""
        return isinstance(self.quantizer, ResidualQuantizer) or self.quantizer.num_stages > 1

    @property
    def bits_per_token(self) -> float:
        return self.quantizer.bits_per_token

    def token_grid(self, *size: int) -> tuple[int, ...]:
        """(h, w) of the token grid of an image of ``height`` × ``width`` pixels ((t,) of T samples)."""
        f = self.downsample_factor
        if len(size) != self.signal_ndim or any(s <= 0 or s % f for s in size):
            raise ValueError(f"Tokenizer: signal size {size} is not {self.signal_ndim} positive multiple(s) of f={f}")
        return tuple(s // f for s in size)

    # -- the three paths -------------------------------------------------------------------
    def forward(self, images: Tensor) -> tuple[Tensor, QuantizerOutput]:
        """(B, 3, H, W) in [-1, 1] -> (reconstruction (B, 3, H, W), quantizer output on (B, h, w, C))."""
        out = self.quantizer(self._latents(images))
        return self._reconstruct(out.quantized), out

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> int64 indices (B, h, w), or (B, h, w, S) for residual quantizers."""
        return self.quantizer.encode(self._latents(images))

    @torch.no_grad()
    def encode_with_side_info(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """RFSQ with ``layernorm_stats="instance"`` only: (indices, side_info (B, S, 2, dim))."""
        if not isinstance(self.quantizer, ResidualQuantizer):
            raise ValueError(f"Tokenizer: {type(self.quantizer).__name__} needs no side information")
        return self.quantizer.encode_with_side_info(self._latents(images))

    @torch.no_grad()
    def decode(self, indices: Tensor, side_info: Tensor | None = None) -> Tensor:
        """Indices (B, h, w) or (B, h, w, S) (a pyramid: (B, L)) -> images (B, 3, h·f, w·f).

        A residual quantizer also decodes its first S' < S stages (coarse reconstruction);
        ``side_info`` is only for instance-LayerNorm RFSQ (see :meth:`encode_with_side_info`).
        """
        axes = "h, w" if self.signal_ndim == 2 else "t"
        ndim = 1 + self.signal_ndim + self.residual
        expected = f"(B, {axes}, S)" if self.residual else f"(B, {axes})"
        if isinstance(self.quantizer, MultiScaleRQ):  # a token pyramid (B, L): the quantizer checks L
            ndim, expected = 2, "(B, L) (a token pyramid)"
        if not isinstance(indices, Tensor) or indices.ndim != ndim:
            shape = tuple(indices.shape) if isinstance(indices, Tensor) else type(indices).__name__
            raise ValueError(f"Tokenizer: expected indices of shape {expected}, got {shape}")
        if isinstance(self.quantizer, ResidualQuantizer):
            codes = self.quantizer.decode(indices, side_info=side_info)
        elif side_info is not None:
            raise ValueError(f"Tokenizer: {type(self.quantizer).__name__} takes no side_info")
        else:
            codes = self.quantizer.decode(indices)
        dtype = next(self.decoder.parameters()).dtype
        return self._reconstruct(codes.to(dtype))

    # -- tokens with a stage axis (the codec's view: vqkit.codec.tiled.TokenModel) -------------------
    def symbol_layout(self) -> tuple[SymbolLayout, ...]:
        return self.quantizer.symbol_layout()

    def code_vectors(self, stage: int) -> Tensor | None:
        return self.quantizer.code_vectors(stage)

    @property
    def side_shape(self) -> tuple[int, ...]:
        """(S, 2, dim) float32 values per encoded signal for instance-LayerNorm RFSQ; () for all others."""
        q = self.quantizer
        return (q.num_stages, 2, q.dim) if q.side_bits_per_sample else ()

    @property
    def pyramid(self) -> tuple[int, ...]:
        """The per-scale sides (s_1, …, s_K) of a multi-scale quantizer, whose tokens are one pyramid (B, L) per
        latent map of exactly s_K positions a side (the codec tiles such a model in s_K × s_K tokens, without a
        margin); () for tokens aligned with the signal's positions."""
        return self.quantizer.patch_nums if isinstance(self.quantizer, MultiScaleRQ) else ()

    @torch.no_grad()
    def encode_tokens(self, signals: Tensor) -> tuple[Tensor, Tensor | None]:
        """(B, C, *spatial) -> (tokens (B, *positions, S) with a stage axis always, side information or None).
        A pyramid model (:attr:`pyramid`) takes signals of exactly s_K·f a side and gives (B, L, 1): its
        positions are the pyramid's L = Σ s_k² slots, scale by scale."""
        if self.side_shape:
            idx, side = self.encode_with_side_info(signals)
            return idx, side
        idx = self.encode(signals)
        return (idx if self.residual else idx[..., None]), None

    @torch.no_grad()
    def decode_tokens(self, tokens: Tensor, side: Tensor | None = None) -> Tensor:
        """Tokens (B, *positions, S) -> signals (B, C, *spatial); S may be fewer than the model's stages
        (a pyramid: (B, L', 1) with L' the tokens of a prefix of whole scales)."""
        if side is not None:
            return self.decode(tokens, side_info=side)
        return self.decode(tokens if self.residual else tokens[..., 0])

    def identity(self) -> bytes:
        """The config and the weights' SHA-256 (as ``save_pretrained`` records it): a saved model and the same
        model in memory agree. After :meth:`prepare_inference`, the identity of the weights as they were."""
        if self._frozen_identity is not None:
            return self._frozen_identity
        weights = hashlib.sha256(pretrained.weights_blob(self.state_dict())).hexdigest()
        return json.dumps(self.config.to_dict(), sort_keys=True).encode() + weights.encode()

    _frozen_identity: bytes | None = None

    def _refuse_if_prepared(self, what: str) -> None:
        if self._frozen_identity is not None:
            raise RuntimeError(f"Tokenizer: this copy was prepared for inference (prepare_inference): its weights "
                               f"are frozen under the stored model's id; load the model again to {what}")

    def train(self, mode: bool = True) -> Tokenizer:
        if mode:
            self._refuse_if_prepared("train it")
        return super().train(mode)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        self._refuse_if_prepared("load other weights")
        return super().load_state_dict(state_dict, strict, assign)

    @torch.no_grad()
    def prepare_inference(self) -> Tokenizer:
        """Make this model fast for CPU inference, in place (the codec's copy): eval mode, 2-D conv weights
        channels-last (oneDNN's faster layout: 1.6× the encoder, 1.7× the decoder of the shipped models, 1 thread)
        and **subnormal weights set to zero** — weight decay leaves some below 2^-126 (12,948 in the default
        decoder's middle layer), and every CPU multiply touching one takes a microcode slow path: that layer ran
        16× slower (1.25 s instead of 0.08 s per tile). Outputs change by float rounding at most. The identity
        (the codec's model id) is taken first and kept, so files name the stored weights; training this model
        afterwards is refused."""
        if self._frozen_identity is None:
            self._frozen_identity = self.identity()
        self.eval()
        for tensor in [*self.parameters(), *self.buffers()]:
            if tensor.is_floating_point():
                tensor.masked_fill_(tensor.abs() < torch.finfo(tensor.dtype).tiny, 0.0)
                tensor.requires_grad_(False)
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
                module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last)
        return self

    # -- layout and checks -------------------------------------------------------------------
    def _latents(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> encoder output, channels-last (B, h, w, C)."""
        self._check_images(images)
        latents: Tensor = rearrange(self.encoder(images), "b c ... -> b ... c")
        return latents

    def reconstruct(self, quantized: Tensor) -> Tensor:
        """The decoder on quantized latents, channels-last (B, *positions, C) -> signals (B, C, *spatial), with
        gradients (e.g. a residual quantizer's first k stage contributions summed: the stage cut k)."""
        return self._reconstruct(quantized)

    def _reconstruct(self, quantized: Tensor) -> Tensor:
        """Channels-last (B, h, w, C) -> images (B, 3, H, W); (B, t, C) -> speech (B, 1, T)."""
        out: Tensor = self.decoder(rearrange(quantized, "b ... c -> b c ..."))
        return out

    def _check_images(self, images: Tensor) -> None:
        kind, axes = ("images", "H, W") if self.signal_ndim == 2 else ("audio", "T")
        expected = f"(B, {self.signal_channels}, {axes})"
        if not isinstance(images, Tensor):
            raise ValueError(f"Tokenizer: {kind} must be a torch.Tensor, got {type(images).__name__}")
        shape = tuple(images.shape)
        if images.ndim != 2 + self.signal_ndim or shape[1] != self.signal_channels:
            raise ValueError(f"Tokenizer: expected {kind} of shape {expected}, got {shape}")
        if not images.dtype.is_floating_point:
            raise ValueError(
                f"Tokenizer: {kind} must be floating point in [-1, 1], got {images.dtype} "
                "(vqkit.modalities.image.datasets.from_uint8 converts uint8)"
            )
        f = self.downsample_factor
        if shape[0] == 0 or any(s == 0 or s % f for s in shape[2:]):
            raise ValueError(
                f"Tokenizer: {kind} {shape}: batch must be non-empty and {axes} positive multiples of "
                f"the downsample factor {f} ({self.config.arch})"
            )

    # -- checkpoints ----------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``model.safetensors`` and ``config.json`` to ``directory``; returns its path."""
        self._refuse_if_prepared("save it")
        return pretrained.save(directory, self.config, self.state_dict())

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str], device: str | torch.device = "cpu") -> Tokenizer:
        """Rebuild a tokenizer saved by :meth:`save_pretrained`, in eval mode on ``device``.
        ``"default"`` loads the tokenizer shipped with vqkit; a run directory, its ``final/`` model.

        Raises ValueError, naming the file, for a missing, malformed or edited ``config.json``, unknown
        arch or quantizer names, weights of another architecture, and corrupt weights; naming the
        argument for a ``directory`` that is not a path and a ``device`` this machine lacks (checked
        first, before anything is read).
        """
        target = _device(device)
        directory = pretrained.resolve(directory)
        config, digest = pretrained.read_config(directory)
        try:
            model = cls(config)
        except ValueError as err:
            raise ValueError(f"{Path(directory) / pretrained.CONFIG_NAME}: cannot build the model: {err}") from err
        what = f"arch={config.arch!r}, quantizer={config.quantizer!r}"
        tensors = pretrained.read_weights(directory, model.state_dict(), digest, what)
        model.load_state_dict(tensors, strict=True)
        return model.to(target).eval()

    def extra_repr(self) -> str:
        c = self.config
        return f"arch={c.arch!r}, quantizer={c.quantizer!r}, f={self.downsample_factor}"


def _device(device: object) -> torch.device:
    """``device`` (a string such as ``"cuda:0"`` or a ``torch.device``) checked against this machine
    (:func:`vqkit.validation.resolve_device`): a ValueError naming it, never torch's AssertionError."""
    if isinstance(device, torch.device):
        if device.type not in ("cuda", "mps"):
            return device  # cpu (or another backend torch was built with): nothing to check here
        device = str(device)
    if not isinstance(device, str):
        raise ConfigError(f"device = {device!r} ({type(device).__name__}): expected a string such as 'cpu' or "
                          "'cuda:0', or a torch.device")
    return resolve_device(device)
