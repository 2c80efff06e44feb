"""Tokenizer = encoder + quantizer + decoder, any vqkit quantizer in the middle.

Images are float ``(B, 3, H, W)`` in **[-1, 1]** (the range of :mod:`vqkit.data.images`; it is
documented, not clamped), with H and W multiples of ``downsample_factor``. The encoder gives
``(B, C, h, w)``; the model, not the quantizer, moves it to channels-last ``(B, h, w, C)`` because
quantizers take ``(..., dim)``. Tokens are ``(B, h, w)``, or ``(B, h, w, S)`` for residual
quantizers, with h = H / f and w = W / f.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor, nn

from ..quantizers import QuantizerOutput, ResidualQuantizer
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

    @property
    def residual(self) -> bool:
        """Whether tokens carry a trailing stage axis ``(B, h, w, S)``."""
        return isinstance(self.quantizer, ResidualQuantizer) or self.quantizer.num_stages > 1

    @property
    def bits_per_token(self) -> float:
        return self.quantizer.bits_per_token

    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the token grid of an image of ``height`` × ``width`` pixels."""
        f = self.downsample_factor
        if height <= 0 or width <= 0 or height % f or width % f:
            raise ValueError(f"Tokenizer: image size {height}×{width} is not a positive multiple of f={f}")
        return height // f, width // f

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
        """Indices (B, h, w) or (B, h, w, S) -> images (B, 3, h·f, w·f).

        A residual quantizer also decodes its first S' < S stages (coarse reconstruction);
        ``side_info`` is only for instance-LayerNorm RFSQ (see :meth:`encode_with_side_info`).
        """
        ndim, expected = (4, "(B, h, w, S)") if self.residual else (3, "(B, h, w)")
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

    # -- layout and checks -------------------------------------------------------------------
    def _latents(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> encoder output, channels-last (B, h, w, C)."""
        self._check_images(images)
        latents: Tensor = rearrange(self.encoder(images), "b c h w -> b h w c")
        return latents

    def _reconstruct(self, quantized: Tensor) -> Tensor:
        """Channels-last (B, h, w, C) -> images (B, 3, H, W)."""
        out: Tensor = self.decoder(rearrange(quantized, "b h w c -> b c h w"))
        return out

    def _check_images(self, images: Tensor) -> None:
        if not isinstance(images, Tensor):
            raise ValueError(f"Tokenizer: images must be a torch.Tensor, got {type(images).__name__}")
        shape = tuple(images.shape)
        if images.ndim != 4 or shape[1] != 3:
            raise ValueError(f"Tokenizer: expected images of shape (B, 3, H, W), got {shape}")
        if not images.dtype.is_floating_point:
            raise ValueError(
                f"Tokenizer: images must be floating point in [-1, 1], got {images.dtype} "
                "(vqkit.data.images.from_uint8 converts uint8)"
            )
        f = self.downsample_factor
        if shape[0] == 0 or shape[2] == 0 or shape[3] == 0 or shape[2] % f or shape[3] % f:
            raise ValueError(
                f"Tokenizer: images {shape}: batch must be non-empty and H, W positive multiples of "
                f"the downsample factor {f} ({self.config.arch})"
            )

    # -- checkpoints ----------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``model.safetensors`` and ``config.json`` to ``directory``; returns its path."""
        return pretrained.save(directory, self.config, self.state_dict())

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str], device: str | torch.device = "cpu") -> Tokenizer:
        """Rebuild a tokenizer saved by :meth:`save_pretrained`, in eval mode on ``device``.

        Raises ValueError, naming the file, for a missing or malformed ``config.json``, unknown
        arch or quantizer names, weights of another architecture, and corrupt weights.
        """
        config, digest = pretrained.read_config(directory)
        try:
            model = cls(config)
        except ValueError as err:
            raise ValueError(f"{Path(directory) / pretrained.CONFIG_NAME}: cannot build the model: {err}") from err
        what = f"arch={config.arch!r}, quantizer={config.quantizer!r}"
        tensors = pretrained.read_weights(directory, model.state_dict(), digest, what)
        model.load_state_dict(tensors, strict=True)
        return model.to(device).eval()

    def extra_repr(self) -> str:
        c = self.config
        return f"arch={c.arch!r}, quantizer={c.quantizer!r}, f={self.downsample_factor}"
