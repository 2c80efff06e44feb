"""The rate term of rate–distortion training: the bits of an FSQ tokenizer's digits under a learned prior
trained jointly with it — the float twin of the codec's :class:`~vqkit.codec.priors.Learned` prior (the same
features, the same network per digit), so that what training pays for is what the file will cost once
``vqkit fit-prior --learned`` has fitted the integer prior on the trained tokens.

Gradients. The prior's networks learn from the cross-entropy. The encoder gets two: through the neighbours'
and earlier digits used as context (straight-through, as the codes are), and through each digit's own cost,
which is a step function of the digit: its straight-through estimate is the central difference of the code
length between the neighbouring levels, ``(bits(d+1) − bits(d−1)) / 2`` (one-sided at the ends), so a latent
is pushed toward a cheaper level in proportion to what the move saves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..codec.priors.learned import HIDDEN, n_features
from ..codec.symbols import StageSpec
from ..quantizers import FSQ

DIAGONAL = ((-1, -1), (-1, 1), (1, -1), (1, 1))
DIRECT = ((0, -1), (-1, 0), (0, 1), (1, 0))
"""Neighbour offsets of passes 1 and 2, in the order of :func:`vqkit.codec.symbols.neighbours`."""


def _shift(x: Tensor, dy: int, dx: int) -> Tensor:
    """x (B, h, w, C) -> x[y + dy, x + dx], zero where that is outside the grid."""
    out = torch.zeros_like(x)
    h, w = x.shape[1], x.shape[2]
    ys, yd = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
    xs, xd = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    out[:, yd, xd] = x[:, ys, xs]
    return out


class DigitRate(nn.Module):
    """Bits of FSQ digits (B, h, w, D) under per-digit networks over checkerboard contexts (single stage, 2-D)."""

    _radix: Tensor

    def __init__(self, levels: tuple[int, ...], hidden: int = HIDDEN) -> None:
        super().__init__()
        self.levels = tuple(int(v) for v in levels)
        f = n_features(StageSpec.digits(self.levels), None, 2)
        self.nets = nn.ModuleList(nn.Sequential(nn.Linear(f, hidden), nn.ReLU(), nn.Linear(hidden, r))
                                  for r in self.levels)
        self.register_buffer("_radix", torch.tensor(self.levels, dtype=torch.float32), persistent=False)

    @classmethod
    def for_quantizer(cls, quantizer: nn.Module) -> DigitRate:
        if not isinstance(quantizer, FSQ) or not isinstance(quantizer.project_out, nn.Identity):
            raise ValueError(f"rate-distortion training needs an FSQ quantizer without projections (its digits are "
                             f"the coded symbols), not {type(quantizer).__name__}; use quantizer 'fsq'")
        return cls(tuple(quantizer.levels))

    def _features(self, c: Tensor) -> tuple[Tensor, Tensor]:
        """Centred digits (B, h, w, D) -> (neighbour features (B, h, w, 4(D+1)), pass one-hot (B, h, w, 3))."""
        b, h, w, _ = c.shape
        y = torch.arange(h, device=c.device)[:, None]
        x = torch.arange(w, device=c.device)[None, :]
        masks = [((y % 2 == 0) & (x % 2 == 0)), ((y % 2 == 1) & (x % 2 == 1)), ((y + x) % 2 == 1)]
        ones = torch.ones_like(c[..., :1])
        nbr = torch.zeros(b, h, w, 4 * (c.shape[-1] + 1), device=c.device, dtype=c.dtype)
        for p, offsets in ((1, DIAGONAL), (2, DIRECT)):
            parts = [_shift(c, dy, dx) for dy, dx in offsets] + [_shift(ones, dy, dx) for dy, dx in offsets]
            nbr = torch.where(masks[p][None, :, :, None], torch.cat(parts, -1), nbr)
        onehot = torch.stack(masks, -1).to(c.dtype).expand(b, h, w, 3)
        return nbr, onehot

    def forward(self, digits: Tensor) -> Tensor:
        """Float digits (B, h, w, D) (straight-through values) -> total bits, differentiable."""
        if digits.ndim != 4 or digits.shape[-1] != len(self.levels):
            raise ValueError(f"DigitRate: expected digits (B, h, w, {len(self.levels)}), got {tuple(digits.shape)}")
        c = 2 * digits - (self._radix - 1)
        nbr, onehot = self._features(c)
        hard = digits.detach().round().long()
        total = digits.new_zeros(())
        for j, (net, r) in enumerate(zip(self.nets, self.levels, strict=True)):
            intra = torch.cat([c[..., :j], torch.zeros_like(c[..., j:])], -1)
            bits = -F.log_softmax(net(torch.cat([nbr, intra, onehot], -1)), -1) / torch.log(torch.tensor(2.0))
            d = hard[..., j : j + 1].clamp(0, r - 1)
            own = bits.gather(-1, d)
            up, down = bits.gather(-1, (d + 1).clamp(max=r - 1)), bits.gather(-1, (d - 1).clamp(min=0))
            span = ((d + 1).clamp(max=r - 1) - (d - 1).clamp(min=0)).clamp(min=1)
            slope = ((up - down) / span).detach()
            u = digits[..., j : j + 1]
            total = total + own.sum() + ((u - u.detach()) * slope).sum()
        return total
