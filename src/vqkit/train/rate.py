"""The rate term of rate–distortion training: the bits of an FSQ or RFSQ tokenizer's digits under a learned prior
trained jointly with it — the float twin of the codec's :class:`~vqkit.codec.priors.Learned` prior (the same
features, the same network per digit), so that what training pays for is what the file will cost once
``vqkit fit-prior --learned`` has fitted the integer prior on the trained tokens.

Gradients. The prior's networks learn from the cross-entropy. The encoder gets two: through the neighbours'
and earlier digits used as context (straight-through, as the codes are), and through each digit's own cost,
which is a step function of the digit: its straight-through estimate is the central difference of the code
length between the neighbouring levels, ``(bits(d+1) − bits(d−1)) / 2`` (one-sided at the ends), so a latent
is pushed toward a cheaper level in proportion to what the move saves.

RFSQ: every stage's digits are coded (the whole file, all stages), each stage's networks seeing the previous
stage's digits at the same position as the codec's prior does; the digits are those of the codes each stage's
FSQ produced in the conditioned space (:attr:`~vqkit.quantizers.ResidualQuantizer.stage_codes`), so a
stage's rate reaches the encoder through the residual it quantized.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..codec.priors.learned import HIDDEN, n_features
from ..codec.symbols import StageSpec
from ..quantizers import FSQ, ResidualQuantizer

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
    """Bits of FSQ digits (B, h, w, S, D) of S stages of the same levels ((B, h, w, D): one stage) under
    per-stage, per-digit networks over checkerboard contexts (2-D)."""

    _radix: Tensor

    def __init__(self, levels: tuple[int, ...], stages: int = 1, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.levels, self.num_stages = tuple(int(v) for v in levels), int(stages)
        spec = StageSpec.digits(self.levels)

        def nets(prev: StageSpec | None) -> nn.ModuleList:
            f = n_features(spec, prev, 2)
            return nn.ModuleList(nn.Sequential(nn.Linear(f, hidden), nn.ReLU(), nn.Linear(hidden, r))
                                 for r in self.levels)

        self.nets = nets(None)  # stage 0 (the keys of single-stage checkpoints)
        self.later = nn.ModuleList(nets(spec) for _ in range(self.num_stages - 1))
        self.register_buffer("_radix", torch.tensor(self.levels, dtype=torch.float32), persistent=False)

    @classmethod
    def for_quantizer(cls, quantizer: nn.Module) -> DigitRate:
        """The rate model of an FSQ, or of an RFSQ whose stages are FSQs of the same levels; ValueError else."""
        stages = list(quantizer.stages) if isinstance(quantizer, ResidualQuantizer) else [quantizer]
        fsqs = [q for q in stages if isinstance(q, FSQ) and isinstance(q.project_out, nn.Identity)]
        if len(fsqs) != len(stages) or len({tuple(q.levels) for q in fsqs}) != 1:
            raise ValueError(f"rate-distortion training needs FSQ digits (its digits are the coded symbols): an FSQ "
                             f"quantizer without projections, or an RFSQ of such stages with equal levels, not "
                             f"{type(quantizer).__name__}; use quantizer 'fsq' or 'rfsq'")
        return cls(tuple(fsqs[0].levels), len(fsqs))

    @staticmethod
    def digits_of(quantizer: nn.Module, quantized: Tensor) -> Tensor:
        """The straight-through digits (B, h, w, S, D) of the last training forward of ``quantizer`` (an RFSQ
        keeps its stage codes: ``keep_stage_codes``); ``quantized`` its output (the FSQ's codes)."""
        if isinstance(quantizer, ResidualQuantizer):
            if len(quantizer.stage_codes) != quantizer.num_stages:
                raise RuntimeError("DigitRate: the RFSQ kept no stage codes (set keep_stage_codes before the forward)")
            return torch.stack([stage.codes_to_digits(q.float()) for stage, q  # type: ignore[operator]
                                in zip(quantizer.stages, quantizer.stage_codes, strict=True)], -2)
        assert isinstance(quantizer, FSQ)
        return quantizer.codes_to_digits(quantized.float())[..., None, :]

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
        """Float digits (B, h, w, S, D) or (B, h, w, D) (straight-through values) -> total bits, differentiable."""
        if digits.ndim == 4:
            digits = digits[..., None, :]
        shape = (self.num_stages, len(self.levels))
        if digits.ndim != 5 or tuple(digits.shape[3:]) != shape:
            raise ValueError(f"DigitRate: expected digits (B, h, w, {shape[0]}, {shape[1]}), got {tuple(digits.shape)}")
        cs = 2 * digits - (self._radix - 1)
        total = digits.new_zeros(())
        for s in range(self.num_stages):
            c, u_s = cs[..., s, :], digits[..., s, :]
            nbr, onehot = self._features(c)
            prev = [cs[..., s - 1, :]] if s else []  # the previous stage at the same position
            hard = u_s.detach().round().long()
            nets = self.later[s - 1] if s else self.nets
            assert isinstance(nets, nn.ModuleList)
            for j, (net, r) in enumerate(zip(nets, self.levels, strict=True)):
                intra = torch.cat([c[..., :j], torch.zeros_like(c[..., j:])], -1)
                logits = net(torch.cat([nbr, intra, *prev, onehot], -1))
                bits = -F.log_softmax(logits, -1) / torch.log(torch.tensor(2.0))
                d = hard[..., j : j + 1].clamp(0, r - 1)
                own = bits.gather(-1, d)
                up, down = bits.gather(-1, (d + 1).clamp(max=r - 1)), bits.gather(-1, (d - 1).clamp(min=0))
                span = ((d + 1).clamp(max=r - 1) - (d - 1).clamp(min=0)).clamp(min=1)
                slope = ((up - down) / span).detach()
                u = u_s[..., j : j + 1]
                total = total + own.sum() + ((u - u.detach()) * slope).sum()
        return total
