"""Residual quantization with per-stage conditioning (RFSQ).

Zhu, "Robust Residual Finite Scalar Quantization for Neural Compression" (RFSQ); residual VQ
as in SoundStream / EnCodec. Stage k quantizes a conditioned residual and contributes, in the
input space, the inverse of that conditioning; the output is the sum of the contributions:

* ``none``:      q_k = Q_k(r_{k-1});            contribution c_k = q_k
* ``scale``:     q_k = Q_k(α_k·r_{k-1});        c_k = q_k / α_k
* ``layernorm``: q_k = Q_k(LN_k(r_{k-1}));      c_k = LN_k⁻¹(q_k)

and r_k = r_{k-1} - c_k, r_0 = z. As printed, the paper's eq. (10) has the sign reversed
(r_k = LN⁻¹(q_k) - r_{k-1}) and Algorithm 1 sums q_k instead of q_k/α_k: both are fixed here
(ANCHORS.md). As in the official code the residual is not detached, no stage adds a loss
of its own beyond its quantizer's, and the first stage is conditioned too.

Scale parameterisation: α_k = exp(p_k), p_k = 0, starts at exactly the paper's 1.0 and stays
positive; ``scale_param="softplus"`` is the official α = softplus(p), which starts at 0.693.

LayerNorm: LN(r) = (r - μ)/σ·γ + β with a learnable per-channel affine; its inverse needs μ, σ.
* ``layernorm_stats="running"`` (default): per-channel statistics over the batch's tokens in
  training (all-reduced into running averages), the running averages in eval. Decodable from
  the indices alone: no side information, ``bits_per_token`` is exactly Σ log2 K.
* ``layernorm_stats="instance"``: the official per-sample, per-channel statistics over the
  positions (H×W or T) of each sample. Not decodable from indices alone: decoding needs
  ``side_bits_per_sample`` = 2·dim·num_stages float32 values per sample, returned by
  :meth:`ResidualQuantizer.encode_with_side_info` and passed to ``decode(..., side_info=)``.
  ``bits_per_token`` excludes them (they are per sample, not per token).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from . import distributed
from .base import Quantizer, float32_math
from .fsq import FSQ
from .simvq import SimVQ
from .vq import EMAVQ, VQ

Conditioning = Literal["none", "scale", "layernorm"]
ScaleParam = Literal["exp", "softplus"]
LayerNormStats = Literal["running", "instance"]


class ResidualQuantizer(Quantizer):
    """Sum of ``stages`` applied to successive residuals.

    z (..., dim) -> quantized (..., dim), indices (..., num_stages). ``decode`` also accepts
    the first S < num_stages columns and sums only those stages (coarse-to-fine decoding).
    """

    running_mean: Tensor
    running_var: Tensor

    def __init__(
        self,
        stages: Sequence[Quantizer],
        conditioning: Conditioning = "none",
        scale_param: ScaleParam = "exp",
        layernorm_stats: LayerNormStats = "running",
        momentum: float = 0.1,
        eps: float = 1e-5,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        if not stages:
            raise ValueError("ResidualQuantizer: needs at least one stage")
        dims = {s.dim for s in stages}
        if len(dims) != 1 or any(s.num_stages != 1 for s in stages):
            raise ValueError(f"ResidualQuantizer: stages must be single quantizers of one dim, got dims {dims}")
        if conditioning not in ("none", "scale", "layernorm"):
            raise ValueError(f"ResidualQuantizer: conditioning must be none/scale/layernorm, got {conditioning!r}")
        if scale_param not in ("exp", "softplus"):
            raise ValueError(f"ResidualQuantizer: scale_param must be 'exp' or 'softplus', got {scale_param!r}")
        if layernorm_stats not in ("running", "instance"):
            raise ValueError(f"ResidualQuantizer: layernorm_stats must be running/instance, got {layernorm_stats!r}")
        self.stages = nn.ModuleList(stages)
        self._stage_list: list[Quantizer] = list(stages)  # typed view of the same modules
        self.dim, self.num_stages = dims.pop(), len(stages)
        self._sizes = tuple(s.codebook_size for s in stages)
        self.codebook_size = max(self._sizes)
        self.conditioning, self.scale_param, self.layernorm_stats = conditioning, scale_param, layernorm_stats
        self.momentum, self.eps, self.check_finite = momentum, eps, check_finite
        n, d = self.num_stages, self.dim
        if conditioning == "scale":
            self.scale_logit = nn.Parameter(torch.zeros(n))
        if conditioning == "layernorm":
            self.ln_weight = nn.Parameter(torch.ones(n, d))
            self.ln_bias = nn.Parameter(torch.zeros(n, d))
            self.register_buffer("running_mean", torch.zeros(n, d))
            self.register_buffer("running_var", torch.ones(n, d))

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return self._sizes

    @property
    def instance_stats(self) -> bool:
        return self.conditioning == "layernorm" and self.layernorm_stats == "instance"

    @property
    def side_bits_per_sample(self) -> int:
        """float32 side information per sample needed to decode (instance LayerNorm only)."""
        return 32 * 2 * self.dim * self.num_stages if self.instance_stats else 0

    def scales(self) -> Tensor:
        """(num_stages,) α_k of the scale strategy."""
        fn = torch.exp if self.scale_param == "exp" else nn.functional.softplus
        return fn(self.scale_logit.float())

    # -- conditioning -------------------------------------------------------------------
    def _statistics(self, k: int, r: Tensor, update: bool) -> tuple[Tensor, Tensor]:
        """(mean, std) that LN_k uses for residual r (..., dim)."""
        if self.instance_stats:
            if r.ndim < 3:
                raise ValueError(f"instance LayerNorm needs z of shape (B, positions..., dim), got {tuple(r.shape)}")
            dims = tuple(range(1, r.ndim - 1))
            mean, var = r.mean(dim=dims, keepdim=True), r.var(dim=dims, keepdim=True, unbiased=False)
        elif self.training:
            flat = r.reshape(-1, self.dim)
            mean, var = flat.mean(dim=0), flat.var(dim=0, unbiased=False)
            if update:
                self._update_running(k, flat.detach())
        else:
            mean, var = self.running_mean[k], self.running_var[k]
        return mean, (var + self.eps).sqrt()

    @torch.no_grad()
    def _update_running(self, k: int, flat: Tensor) -> None:
        moments = torch.cat([flat.sum(0), flat.pow(2).sum(0), flat.new_tensor([flat.shape[0]])])
        distributed.all_reduce_sum_(moments)  # identical running statistics on every rank
        d, count = self.dim, moments[-1]
        mean = moments[:d] / count
        var = (moments[d : 2 * d] / count - mean.pow(2)).clamp_min(0)
        self.running_mean[k].lerp_(mean, self.momentum)
        self.running_var[k].lerp_(var, self.momentum)

    def _condition(self, k: int, r: Tensor, stats: tuple[Tensor, Tensor] | None) -> Tensor:
        if self.conditioning == "scale":
            return r * self.scales()[k]
        if self.conditioning == "layernorm":
            assert stats is not None
            mean, std = stats
            return (r - mean) / std * self.ln_weight[k] + self.ln_bias[k]
        return r

    def _uncondition(self, k: int, q: Tensor, stats: tuple[Tensor, Tensor] | None) -> Tensor:
        if self.conditioning == "scale":
            return q / self.scales()[k]
        if self.conditioning == "layernorm":
            assert stats is not None
            mean, std = stats
            return (q - self.ln_bias[k]) / self.ln_weight[k] * std + mean
        return q

    # -- hooks ---------------------------------------------------------------------------
    def _run(self, z: Tensor, train_path: bool) -> tuple[Tensor, Tensor, Tensor, list[tuple[Tensor, Tensor]]]:
        residual, total, loss = z, torch.zeros_like(z), z.new_zeros(())
        indices, side = [], []
        for k, stage in enumerate(self._stage_list):
            stats = self._statistics(k, residual, update=train_path) if self.conditioning == "layernorm" else None
            x = self._condition(k, residual, stats)
            if train_path:
                q, idx, stage_loss = stage._quantize(x)
                loss = loss + stage_loss
            else:
                idx = stage._encode(x)
                q = stage._decode(idx)
            contribution = self._uncondition(k, q, stats)
            residual = residual - contribution
            total = total + contribution
            indices.append(idx)
            if stats is not None:
                side.append(stats)
        return total, torch.stack(indices, dim=-1), loss, side

    def _quantize(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        total, indices, loss, _ = self._run(z, train_path=True)
        return total, indices, loss

    def _encode(self, z: Tensor) -> Tensor:
        return self._run(z, train_path=False)[1]

    def _decode(self, indices: Tensor, side_info: Tensor | None = None) -> Tensor:
        total: Tensor | None = None
        for k in range(indices.shape[-1]):
            stats = None
            if self.instance_stats:
                assert side_info is not None
                shape = (side_info.shape[0],) + (1,) * (indices.ndim - 2) + (self.dim,)
                stats = (side_info[:, k, 0].reshape(shape), side_info[:, k, 1].reshape(shape))
            elif self.conditioning == "layernorm":
                stats = (self.running_mean[k], (self.running_var[k] + self.eps).sqrt())
            c = self._uncondition(k, self._stage_list[k]._decode(indices[..., k]), stats)
            total = c if total is None else total + c
        assert total is not None
        return total

    # -- public API additions -------------------------------------------------------------
    @torch.no_grad()
    def encode_with_side_info(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Instance LayerNorm only: (indices, side_info (B, num_stages, 2, dim) = mean, std)."""
        if not self.instance_stats:
            raise ValueError("encode_with_side_info: only layernorm_stats='instance' needs side information")
        self._check_input(z)
        with float32_math(z.device):
            _, indices, _, side = self._run(z.float(), train_path=False)
        b = z.shape[0]
        packed = [torch.stack([mean.reshape(b, self.dim), std.reshape(b, self.dim)], 1) for mean, std in side]
        return indices, torch.stack(packed, 1)

    @torch.no_grad()
    def decode(self, indices: Tensor, side_info: Tensor | None = None) -> Tensor:
        """Indices (..., S<=num_stages) -> (..., dim); instance LayerNorm also needs side_info."""
        self._check_indices(indices)
        if self.instance_stats:
            expected = (indices.shape[0], self.num_stages, 2, self.dim)
            if side_info is None:
                raise ValueError(
                    "ResidualQuantizer: layernorm_stats='instance' is not decodable from indices alone; "
                    f"pass side_info {expected} from encode_with_side_info"
                )
            if tuple(side_info.shape) != expected or indices.ndim < 3:
                got = tuple(side_info.shape)
                raise ValueError(f"ResidualQuantizer: side_info must have shape {expected}, got {got}")
        with float32_math(indices.device):
            return self._decode(indices.long(), None if side_info is None else side_info.float())

    def extra_repr(self) -> str:
        return f"conditioning={self.conditioning!r}, num_stages={self.num_stages}, codebook_sizes={list(self._sizes)}"


def ResidualFSQ(
    levels: Sequence[int],
    num_stages: int,
    conditioning: Conditioning = "none",
    *,
    symmetric: bool = False,
    scale_param: ScaleParam = "exp",
    layernorm_stats: LayerNormStats = "running",
    check_finite: bool = True,
) -> ResidualQuantizer:
    """RFSQ: ``num_stages`` FSQ stages over ``levels`` (dim = len(levels))."""
    stages = [FSQ(levels, symmetric=symmetric) for _ in range(num_stages)]
    return ResidualQuantizer(stages, conditioning, scale_param=scale_param, layernorm_stats=layernorm_stats,
                             check_finite=check_finite)


def ResidualVQ(
    dim: int,
    codebook_size: int,
    num_stages: int,
    conditioning: Conditioning = "none",
    *,
    ema: bool = True,
    scale_param: ScaleParam = "exp",
    layernorm_stats: LayerNormStats = "running",
    check_finite: bool = True,
    **stage_options: Any,
) -> ResidualQuantizer:
    """Residual VQ (EnCodec / SoundStream): EMAVQ stages, or gradient VQ with ``ema=False``."""
    cls = EMAVQ if ema else VQ
    stages = [cls(dim, codebook_size, **stage_options) for _ in range(num_stages)]
    return ResidualQuantizer(stages, conditioning, scale_param=scale_param, layernorm_stats=layernorm_stats,
                             check_finite=check_finite)


def ResidualSimVQ(
    dim: int,
    codebook_size: int,
    num_stages: int,
    conditioning: Conditioning = "none",
    *,
    scale_param: ScaleParam = "exp",
    layernorm_stats: LayerNormStats = "running",
    check_finite: bool = True,
    **stage_options: Any,
) -> ResidualQuantizer:
    """Residual SimVQ: each stage its own frozen codebook and linear layer."""
    stages = [SimVQ(dim, codebook_size, **stage_options) for _ in range(num_stages)]
    return ResidualQuantizer(stages, conditioning, scale_param=scale_param, layernorm_stats=layernorm_stats,
                             check_finite=check_finite)
