"""Residual quantization with per-stage conditioning (RFSQ).

Zhu, "Robust Residual Finite Scalar Quantization for Neural Compression" (RFSQ); residual VQ
as in SoundStream / EnCodec. Stage k quantizes a conditioned residual and contributes, in the
input space, the inverse of that conditioning; the output is the sum of the contributions:

* ``none``:      q_k = Q_k(r_{k-1});            contribution c_k = q_k
* ``scale``:     q_k = Q_k(α_k·r_{k-1});        c_k = q_k / α_k
* ``layernorm``: q_k = Q_k(LN_k(r_{k-1}));      c_k = LN_k⁻¹(q_k)

and r_k = r_{k-1} - c_k, r_0 = z. As printed, the paper's eq. (10) has the sign reversed
(r_k = LN⁻¹(q_k) - r_{k-1}) and Algorithm 1 sums q_k instead of q_k/α_k: both are fixed here
(the README's Methods section). As in the official code the residual is not detached, no stage adds a loss
of its own beyond its quantizer's, and the first stage is conditioned too. ``detach_residual=True`` is the
SoundStream / EnCodec / vqp form, r_k = r_{k-1} - sg(c_k): the forward pass is the same, but every stage's
straight-through and commitment gradients reach z (with the residual attached, stage k > 0 sees
d r_k / d z = 0, so only stage 0's do).

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

Numerics: LayerNorm statistics are computed in float64 and cast back (a float32 variance of finite
values |r| > ~1.8e19 overflows, and a std of inf would send every token to one code). A running
statistic that would not be finite in float32 (a batch of values beyond ~1.8e19: its variance)
is not folded in: that stage's update is skipped and counted in ``skipped_updates[k]`` (a
non-persistent buffer, not in ``state_dict``); the decision is taken after the all-reduce, so
every rank takes the same one. Each stage's conditioned input is checked for NaN/Inf (one
``aminmax`` reduction per stage, which propagates NaN, and one host sync per forward for all stages
together, after they ran; ``check_finite=False`` skips it), since
a scale α_k, a LayerNorm or a huge code can take finite values out of float32's range; by then a
stage may have updated its statistics, but only from finite ones (the rest were skipped).
``check_finite`` is shared with the stages: setting it on the residual quantizer sets it on every
stage.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

import annotated_types as at
import torch
from torch import Tensor, nn

from .. import distributed
from ..validation import ConfigError, check_args
from .base import Quantizer, check_size, float32_math
from .fsq import FSQ
from .layout import SymbolLayout
from .simvq import SimVQ
from .vq import EMAVQ, VQ

Conditioning = Literal["none", "scale", "layernorm"]
ScaleParam = Literal["exp", "softplus"]
LayerNormStats = Literal["running", "instance"]
MAX_STAGES = 1024
"""Most stages a residual quantizer may have (a typo of 10**9 stages would build modules for ever)."""
ARGS = {"conditioning": Conditioning, "scale_param": ScaleParam, "layernorm_stats": LayerNormStats,
        "momentum": float, "eps": float, "check_finite": bool,
        "num_stages": Annotated[int, at.Le(MAX_STAGES)], "symmetric": bool, "ema": bool, "detach_residual": bool}
"""Types of the residual quantizers' arguments (:func:`vqkit.validation.check_args`); ranges checked after."""


def _check(owner: str, **values: Any) -> dict[str, Any]:
    return check_args(owner, ARGS, **values)


def _check_stage_options(owner: str, stage: type[Quantizer], options: dict[str, Any]) -> None:
    """A ConfigError naming keyword arguments that ``stage`` does not take (instead of a TypeError)."""
    known = set(inspect.signature(stage).parameters) - {"dim", "codebook_size"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"{owner}: unknown stage option(s) {unknown} for {stage.__name__}; known: {sorted(known)}")


class ResidualQuantizer(Quantizer):
    """Sum of ``stages`` applied to successive residuals.

    z (..., dim) -> quantized (..., dim), indices (..., num_stages). ``decode`` also accepts
    the first S < num_stages columns and sums only those stages (coarse-to-fine decoding).
    """

    running_mean: Tensor
    running_var: Tensor
    skipped_updates: Tensor

    def __init__(
        self,
        stages: Sequence[Quantizer],
        conditioning: Conditioning = "none",
        scale_param: ScaleParam = "exp",
        layernorm_stats: LayerNormStats = "running",
        momentum: float = 0.1,
        eps: float = 1e-5,
        check_finite: bool = True,
        detach_residual: bool = False,
    ) -> None:
        super().__init__()
        args = _check("ResidualQuantizer", conditioning=conditioning, scale_param=scale_param,
                      layernorm_stats=layernorm_stats, momentum=momentum, eps=eps, check_finite=check_finite,
                      detach_residual=detach_residual)
        self.detach_residual: bool = args["detach_residual"]
        momentum, eps, check_finite = args["momentum"], args["eps"], args["check_finite"]
        if not isinstance(stages, Iterable) or isinstance(stages, str | bytes | Quantizer):
            raise ConfigError(f"ResidualQuantizer: invalid stages = {stages!r} ({type(stages).__name__}): "
                              "expected a list of quantizers")
        stages = list(stages)
        bad = [i for i, s in enumerate(stages) if not isinstance(s, Quantizer)]
        if bad:
            raise ConfigError(f"ResidualQuantizer: invalid stages: item {bad[0]} is a {type(stages[bad[0]]).__name__}, "
                              "not a vqkit quantizer")
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
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"ResidualQuantizer: momentum must be in [0, 1], got {momentum}")
        if not eps > 0:
            raise ValueError(f"ResidualQuantizer: eps must be > 0 (LayerNorm divides by sqrt(var + eps)), got {eps}")
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
        # running-statistic updates refused per stage; not persistent: checkpoints keep their keys
        self.register_buffer("skipped_updates", torch.zeros(n, dtype=torch.long), persistent=False)
        self.keep_stage_codes = False
        """When set, each training forward keeps every stage's straight-through codes (in the conditioned space,
        what the stage's quantizer coded) in :attr:`stage_codes` — a rate model's input (:mod:`vqkit.train.rate`)
        — and its contribution to the output in :attr:`stage_parts` (the first k summed: the stage cut k)."""
        self.stage_codes: list[Tensor] = []
        self.stage_parts: list[Tensor] = []

    @property
    def check_finite(self) -> bool:
        """Whether inputs and intermediates are checked for NaN/Inf; shared with every stage."""
        return self._check_finite

    @check_finite.setter
    def check_finite(self, value: bool) -> None:
        self._check_finite = bool(value)
        for stage in getattr(self, "_stage_list", ()):
            stage.check_finite = self._check_finite

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return self._sizes

    def symbol_layout(self) -> tuple[SymbolLayout, ...]:
        """Each stage's own layout, in stage order."""
        return tuple(stage.symbol_layout()[0] for stage in self._stage_list)

    def code_vectors(self, stage: int = 0) -> Tensor | None:
        """Stage ``stage``'s codes as its quantizer holds them (before un-conditioning: what groups similar
        indices of that stage)."""
        if not 0 <= stage < self.num_stages:
            raise ValueError(f"ResidualQuantizer: stage {stage} out of range ({self.num_stages} stages)")
        return self._stage_list[stage].code_vectors(0)

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
        """(mean, std) that LN_k uses for residual r (..., dim); batch statistics in float64.

        The float32 results are finite for finite r: |mean| and std are at most max |r|.
        """
        if self.instance_stats:
            if r.ndim < 3:
                raise ValueError(f"instance LayerNorm needs z of shape (B, positions..., dim), got {tuple(r.shape)}")
            dims = tuple(range(1, r.ndim - 1))
            wide = r.double()
            mean, var = wide.mean(dim=dims, keepdim=True), wide.var(dim=dims, keepdim=True, unbiased=False)
        elif self.training:
            flat = r.reshape(-1, self.dim)
            wide = flat.double()
            mean, var = wide.mean(dim=0), wide.var(dim=0, unbiased=False)
            if update:
                self._update_running(k, flat.detach())
        else:
            return self.running_mean[k], (self.running_var[k] + self.eps).sqrt()
        return mean.float(), (var + self.eps).sqrt().float()

    @torch.no_grad()
    def _update_running(self, k: int, flat: Tensor) -> None:
        """Fold the batch's statistics into stage k's running ones, unless they are not finite in float32.

        Moments in float64, about the running mean (identical on every rank) so that E[x²] - E[x]²
        does not cancel; the skip decision is taken after the all-reduce: the same on every rank.
        """
        shift = self.running_mean[k].double()
        x = flat.double() - shift
        moments = torch.cat([x.sum(0), x.pow(2).sum(0), x.new_tensor([flat.shape[0]])])
        distributed.all_reduce_sum_(moments)  # identical running statistics on every rank
        d, count = self.dim, moments[-1]
        delta = moments[:d] / count
        mean = shift + delta
        var = (moments[d : 2 * d] / count - delta.pow(2)).clamp_min(0)
        ok = torch.isfinite(mean.float()).all() & torch.isfinite(var.float()).all()
        for running, batch in ((self.running_mean, mean), (self.running_var, var)):
            new = running[k].double().lerp(batch, self.momentum).float()  # between two finite values
            running[k].copy_(torch.where(ok, new, running[k]))
        self.skipped_updates[k] += (~ok).long()

    def _stage_scales(self) -> list[Tensor] | None:
        """α_k of every stage, computed once per call (``scale`` conditioning only)."""
        return list(self.scales().unbind()) if self.conditioning == "scale" else None

    def _condition(self, k: int, r: Tensor, stats: tuple[Tensor, Tensor] | None,
                   scales: list[Tensor] | None) -> Tensor:
        if scales is not None:  # ``scale`` conditioning: :meth:`_stage_scales`
            return r * scales[k]
        if self.conditioning == "layernorm":
            assert stats is not None
            mean, std = stats
            return (r - mean) / std * self.ln_weight[k] + self.ln_bias[k]
        return r

    def _uncondition(self, k: int, q: Tensor, stats: tuple[Tensor, Tensor] | None,
                     scales: list[Tensor] | None) -> Tensor:
        if scales is not None:
            return q / scales[k]
        if self.conditioning == "layernorm":
            assert stats is not None
            mean, std = stats
            return (q - self.ln_bias[k]) / self.ln_weight[k] * std + mean
        return q

    # -- hooks ---------------------------------------------------------------------------
    def _run(self, z: Tensor, train_path: bool) -> tuple[Tensor, Tensor, Tensor, list[tuple[Tensor, Tensor]]]:
        residual, total, loss = z, None, z.new_zeros(())
        scales = self._stage_scales()
        indices, side, checked, ranges, codes, parts = [], [], [], [], [], []
        for k, stage in enumerate(self._stage_list):
            stats = self._statistics(k, residual, update=train_path) if self.conditioning == "layernorm" else None
            x = self._condition(k, residual, stats, scales)
            if self.check_finite and (k > 0 or self.conditioning != "none"):
                checked.append(k)
                ranges.append(torch.stack(torch.aminmax(x.detach())))  # NaN/±inf iff an element is (NaN propagates)
            if train_path:
                q, idx, stage_loss = stage._quantize(x)
                loss = loss + stage_loss
                codes.append(q)
            else:
                idx = stage._encode(x)
                q = stage._decode(idx)
            contribution = self._uncondition(k, q, stats, scales)
            parts.append(contribution)
            residual = residual - (contribution.detach() if self.detach_residual else contribution)
            total = contribution if total is None else total + contribution
            indices.append(idx)
            if stats is not None:
                side.append(stats)
        if ranges:
            finite = torch.isfinite(torch.stack(ranges)).all(dim=1)
            if not bool(finite.all()):  # one host sync for every stage
                first = checked[int((~finite).nonzero()[0, 0])]
                raise self._overflow_error(f"the conditioned input of stage {first}")
        assert total is not None
        keep = train_path and self.keep_stage_codes and self.training  # the trainer clears them after backward
        self.stage_codes, self.stage_parts = (codes, parts) if keep else ([], [])
        return total, torch.stack(indices, dim=-1), loss, side

    def _quantize(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        total, indices, loss, _ = self._run(z, train_path=True)
        return total, indices, loss

    def _encode(self, z: Tensor) -> Tensor:
        return self._run(z, train_path=False)[1]

    def _decode(self, indices: Tensor, side_info: Tensor | None = None) -> Tensor:
        total: Tensor | None = None
        scales = self._stage_scales()
        for k in range(indices.shape[-1]):
            stats = None
            if self.instance_stats:
                assert side_info is not None
                shape = (side_info.shape[0],) + (1,) * (indices.ndim - 2) + (self.dim,)
                stats = (side_info[:, k, 0].reshape(shape), side_info[:, k, 1].reshape(shape))
            elif self.conditioning == "layernorm":
                stats = (self.running_mean[k], (self.running_var[k] + self.eps).sqrt())
            c = self._uncondition(k, self._stage_list[k]._decode(indices[..., k]), stats, scales)
            total = c if total is None else total + c
        assert total is not None
        return total

    # -- public API additions -------------------------------------------------------------
    @torch.no_grad()
    def encode_with_side_info(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Instance LayerNorm only: (indices, side_info (B, num_stages, 2, dim) = mean, std)."""
        if not self.instance_stats:
            raise ValueError("encode_with_side_info: only layernorm_stats='instance' needs side information")
        zf = self._input(z)
        with float32_math(z.device):
            _, indices, _, side = self._run(zf, train_path=False)
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
        return (f"conditioning={self.conditioning!r}, num_stages={self.num_stages}, codebook_sizes={list(self._sizes)}"
                + (", detach_residual=True" if self.detach_residual else ""))


def ResidualFSQ(
    levels: Sequence[int],
    num_stages: int,
    conditioning: Conditioning = "none",
    *,
    symmetric: bool = False,
    scale_param: ScaleParam = "exp",
    layernorm_stats: LayerNormStats = "running",
    check_finite: bool = True,
    detach_residual: bool = False,
) -> ResidualQuantizer:
    """RFSQ: ``num_stages`` FSQ stages over ``levels`` (dim = len(levels))."""
    _check("ResidualFSQ", num_stages=num_stages, symmetric=symmetric, conditioning=conditioning)
    num_stages = check_size("ResidualFSQ", "num_stages", num_stages, 1)
    stages = [FSQ(levels, symmetric=symmetric) for _ in range(num_stages)]
    return ResidualQuantizer(stages, conditioning, scale_param=scale_param, layernorm_stats=layernorm_stats,
                             check_finite=check_finite, detach_residual=detach_residual)


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
    detach_residual: bool = False,
    **stage_options: Any,
) -> ResidualQuantizer:
    """Residual VQ (EnCodec / SoundStream): EMAVQ stages, or gradient VQ with ``ema=False``."""
    _check("ResidualVQ", num_stages=num_stages, ema=ema, conditioning=conditioning)
    num_stages = check_size("ResidualVQ", "num_stages", num_stages, 1)
    cls = EMAVQ if ema else VQ
    _check_stage_options("ResidualVQ", cls, stage_options)
    stages = [cls(dim, codebook_size, **stage_options) for _ in range(num_stages)]
    return ResidualQuantizer(stages, conditioning, scale_param=scale_param, layernorm_stats=layernorm_stats,
                             check_finite=check_finite, detach_residual=detach_residual)


def ResidualSimVQ(
    dim: int,
    codebook_size: int,
    num_stages: int,
    conditioning: Conditioning = "none",
    *,
    scale_param: ScaleParam = "exp",
    layernorm_stats: LayerNormStats = "running",
    check_finite: bool = True,
    detach_residual: bool = False,
    **stage_options: Any,
) -> ResidualQuantizer:
    """Residual SimVQ: each stage its own frozen codebook and linear layer."""
    _check("ResidualSimVQ", num_stages=num_stages, conditioning=conditioning)
    num_stages = check_size("ResidualSimVQ", "num_stages", num_stages, 1)
    _check_stage_options("ResidualSimVQ", SimVQ, stage_options)
    stages = [SimVQ(dim, codebook_size, **stage_options) for _ in range(num_stages)]
    return ResidualQuantizer(stages, conditioning, scale_param=scale_param, layernorm_stats=layernorm_stats,
                             check_finite=check_finite, detach_residual=detach_residual)
