"""The SimVQ / Open-MAGVIT2 ResNet encoder and decoder (``vqgan``).

Layout of the SimVQ image model (its official code): ``conv_in`` 3×3; per level ``num_res_blocks``
ResBlocks (GroupNorm → swish → conv 3×3, twice, bias-free convs, 1×1 shortcut when the width
changes) and, except at the last level, a downsampling conv 3×3 stride 2; ``num_res_blocks`` middle
blocks; GroupNorm → swish → 1×1 to the latent. No attention anywhere. The decoder mirrors it and
upsamples by a 3×3 conv to 4× the channels followed by depth-to-space (DCR order, as the official
code, so its weights keep their meaning). Defaults ch=128, ch_mult=(1, 2, 2, 4), 2 blocks: f = 8,
128×128 → 16×16 latents. Width and depth are arguments so that a small copy runs on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResBlock(nn.Module):
    """(B, c_in, H, W) -> (B, c_out, H, W): pre-activation residual block."""

    def __init__(self, c_in: int, c_out: int, groups: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = _norm(c_in, groups), _norm(c_out, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut: nn.Module = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        out: Tensor = self.shortcut(x) + h
        return out


class Upsample(nn.Module):
    """(B, c, H, W) -> (B, c, 2H, 2W): conv to 4c channels, then depth-to-space."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 4 * channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = rearrange(self.conv(x), "b (h2 w2 c) h w -> b c (h h2) (w w2)", h2=2, w2=2)
        return out


def _level(c_in: int, c_out: int, blocks: int, groups: int) -> tuple[nn.Sequential, int]:
    layers = [ResBlock(c_in if i == 0 else c_out, c_out, groups) for i in range(blocks)]
    return nn.Sequential(*layers), c_out


class VQGANEncoder(nn.Module):
    """(B, in_channels, H, W) -> (B, dim, H/f, W/f), f = 2^(len(ch_mult) - 1)."""

    def __init__(
        self,
        dim: int,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 2, 2, 4),
        num_res_blocks: int = 2,
        norm_groups: int = 32,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        width = ch
        for i, mult in enumerate(ch_mult):
            level, width = _level(width, ch * mult, num_res_blocks, norm_groups)
            layers.append(level)
            if i < len(ch_mult) - 1:
                layers.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
        self.down = nn.Sequential(*layers)
        self.mid = _level(width, width, num_res_blocks, norm_groups)[0]
        self.norm_out = _norm(width, norm_groups)
        self.conv_out = nn.Conv2d(width, dim, 1)
        self.downsample_factor = 2 ** (len(ch_mult) - 1)

    def forward(self, images: Tensor) -> Tensor:
        x = self.mid(self.down(self.conv_in(images)))
        out: Tensor = self.conv_out(F.silu(self.norm_out(x)))
        return out


class VQGANDecoder(nn.Module):
    """(B, dim, h, w) -> (B, out_channels, h·f, w·f); mirror of :class:`VQGANEncoder`."""

    def __init__(
        self,
        dim: int,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 2, 2, 4),
        num_res_blocks: int = 2,
        norm_groups: int = 32,
        out_channels: int = 3,
    ) -> None:
        super().__init__()
        width = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(dim, width, 3, padding=1)
        self.mid = _level(width, width, num_res_blocks, norm_groups)[0]
        layers: list[nn.Module] = []
        for i in reversed(range(len(ch_mult))):
            level, width = _level(width, ch * ch_mult[i], num_res_blocks, norm_groups)
            layers.append(level)
            if i > 0:
                layers.append(Upsample(width))
        self.up = nn.Sequential(*layers)
        self.norm_out = _norm(width, norm_groups)
        self.conv_out = nn.Conv2d(width, out_channels, 3, padding=1)

    def forward(self, latents: Tensor) -> Tensor:
        x = self.up(self.mid(self.conv_in(latents)))
        out: Tensor = self.conv_out(F.silu(self.norm_out(x)))
        return out
