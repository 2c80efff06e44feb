"""The gradient a code-vector quantizer passes back to its input: straight-through or the rotation trick.

Fifty et al., "Restructuring Vector Quantization with the Rotation Trick" (ICLR 2025, arXiv 2410.06424).
With e the input vector (encoder output, in the space the codes live in) and q its code, the output is

    q̃ = sg(λ·R)·e,   λ = ||q|| / ||e||,   R = I - 2·r·rᵀ + 2·q̂·êᵀ,   r = (ê + q̂) / ||ê + q̂||,

with ê = e/||e||, q̂ = q/||q||. R is the rotation that takes ê to q̂ in the plane they span (it is the
Householder reflection about r followed by the one about q̂; R·ê = q̂ exactly, since 2·r·rᵀ·ê = ê + q̂), so
the forward value λ·R·e = q. The backward treats λ and R as constants:

    ∂L/∂e = λ·Rᵀ·g = λ·(g - 2·r·(rᵀg) + 2·ê·(q̂ᵀg)),   g = ∂L/∂q̃,

O(d) per token, never a d×d matrix (the paper's Eq. for the efficient form, Section 4.2). No gradient
reaches q through q̃, as with the straight-through estimator: the codebook learns from its own loss term.

What vqkit does at the edges (vqp's ``rotate_to`` clamps both norms at 1e-6 instead):

* the forward value is exactly q (q itself, not λ·R·e rounded), as :func:`~.base.straight_through` is;
* e = 0 (no direction, λ infinite) or a λ beyond float32's range: that token gets the straight-through
  (identity) gradient, never NaN or inf; q = 0 gives λ = 0, hence a zero gradient (the formula's value,
  and vqp's);
* e and q exactly opposite (ê + q̂ = 0, r undefined): r = 0, so Rᵀ = I + 2·ê·q̂ᵀ = I - 2·ê·êᵀ, the
  reflection that maps ê to q̂ = -ê (the limit vqp's normalisation also takes);
* norms are taken in float64 (no overflow for |e| beyond ~1.8e19), the rest in float32.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .base import l2_normalize, straight_through

Gradient = Literal["ste", "rotation"]
"""``"ste"``: identity (straight-through) gradient; ``"rotation"``: the rotation trick."""
GRADIENTS: tuple[Gradient, ...] = ("ste", "rotation")


def rotation_backward(e: Tensor, q: Tensor, grad: Tensor) -> Tensor:
    """λ·Rᵀ·grad for rows (..., d) of inputs ``e`` and codes ``q``; see the module docstring for the edges."""
    e_hat, q_hat = l2_normalize(e), l2_normalize(q)
    r = F.normalize(e_hat + q_hat, dim=-1)  # 0 where e and q are opposite
    norm_e = torch.linalg.vector_norm(e, dim=-1, keepdim=True, dtype=torch.float64)
    norm_q = torch.linalg.vector_norm(q, dim=-1, keepdim=True, dtype=torch.float64)
    scale = (norm_q / norm_e).to(grad.dtype)  # inf or NaN where e = 0, inf where λ overflows float32
    rotated = grad - 2 * r * (r * grad).sum(-1, keepdim=True) + 2 * e_hat * (q_hat * grad).sum(-1, keepdim=True)
    return torch.where((norm_e > 0) & torch.isfinite(scale), rotated * scale, grad)


class _RotationTrick(torch.autograd.Function):
    """Forward: q (exactly). Backward: λ·Rᵀ·g to e, nothing to q. Not twice differentiable."""

    @staticmethod
    def forward(ctx: Any, e: Tensor, q: Tensor) -> Tensor:
        ctx.save_for_backward(e, q)
        return q.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        e, q = ctx.saved_tensors
        return rotation_backward(e, q, grad), None


def rotation_trick(e: Tensor, q: Tensor) -> Tensor:
    """``q`` in the forward pass; the rotation trick's gradient λ·Rᵀ·g to ``e``; no gradient to ``q``."""
    out: Tensor = _RotationTrick.apply(e.float(), q.detach().float())  # type: ignore[no-untyped-call]
    return out


def through(e: Tensor, q: Tensor, gradient: Gradient) -> Tensor:
    """``q`` with the gradient estimator ``gradient`` to ``e`` (``"ste"``: :func:`~.base.straight_through`)."""
    return rotation_trick(e, q) if gradient == "rotation" else straight_through(e, q)
