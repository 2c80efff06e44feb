"""Plain conv encoders/decoders of the RFSQ and FSQ-pytorch experiments (``rfsq_conv``, ``fsq_conv``).

Encoder: ``[Conv 4×4 s2 p1 -> ReLU] × n`` then ``Conv 1×1`` to the quantizer's dim; f = 2^n.
Decoder, the mirror: ``Conv 1×1`` from dim, ReLU, then ``[ConvTranspose 4×4 s2 p1 -> ReLU]`` back
through the widths, the last one to RGB with no activation (the reconstruction is unbounded).

``rfsq_conv`` is the model of the official RFSQ code: widths (128, 256), **two** stride-2 layers,
f = 4, so 128×128 images give 32×32 tokens. The RFSQ paper's text describes *three* stride-2 layers
(3→128→256→256) and still reports a 32×32×256 map: three layers would give 16×16. The text is
the FSQ-pytorch encoder (three stride-2 layers, f = 8) and the code is what produced the paper's
numbers, so ``rfsq_conv`` follows the code; the text's model is ``fsq_conv``.

``fsq_conv`` uses the widths of the RFSQ text, (128, 256, 256), f = 8. FSQ-pytorch itself uses 512
channels in every layer (``conv_channels=(512, 512, 512)``) and places its decoder's 1×1 conv last
rather than first; the layer order here mirrors the encoder, as the RFSQ text describes.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

RFSQ_CONV_CHANNELS = (128, 256)
FSQ_CONV_CHANNELS = (128, 256, 256)


class ConvEncoder(nn.Module):
    """(B, in_channels, H, W) -> (B, dim, H/f, W/f), f = 2^len(channels)."""

    def __init__(self, dim: int, channels: Sequence[int], in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for width in channels:
            layers += [nn.Conv2d(prev, width, 4, stride=2, padding=1), nn.ReLU()]
            prev = width
        layers.append(nn.Conv2d(prev, dim, 1))
        self.blocks = nn.Sequential(*layers)
        self.downsample_factor = 2 ** len(channels)

    def forward(self, images: Tensor) -> Tensor:
        out: Tensor = self.blocks(images)
        return out


class ConvDecoder(nn.Module):
    """(B, dim, h, w) -> (B, out_channels, h·f, w·f); mirror of :class:`ConvEncoder`."""

    def __init__(self, dim: int, channels: Sequence[int], out_channels: int = 3) -> None:
        super().__init__()
        widths = list(channels)[::-1]  # e.g. (256, 128)
        layers: list[nn.Module] = [nn.Conv2d(dim, widths[0], 1), nn.ReLU()]
        targets = [*widths[1:], out_channels]
        for i, (width, nxt) in enumerate(zip(widths, targets, strict=True)):
            layers.append(nn.ConvTranspose2d(width, nxt, 4, stride=2, padding=1))
            if i < len(widths) - 1:
                layers.append(nn.ReLU())
        self.blocks = nn.Sequential(*layers)

    def forward(self, latents: Tensor) -> Tensor:
        out: Tensor = self.blocks(latents)
        return out
