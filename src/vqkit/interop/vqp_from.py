"""vqp modules -> vqkit quantizers (:func:`from_vqp`); the table and the refusals are in :mod:`.vqp`."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..quantizers import BSQ, EMAVQ, FSQ, LFQ, VQ, GroupedQuantizer, Quantizer, ResidualQuantizer, SimVQ
from ..quantizers.bsq import MAX_GROUP_SIZE
from .errors import ConversionError, refuse
from .vqp_base import RFSQ_WHY, RLFQ_WHY, copy_linear, copy_tensor, rotation_kwargs, vqp_module


def _layout_problems(m: Any, channel_first: bool | None, option: str = "channel_first=True") -> list[str]:
    problems = []
    if channel_first:
        problems.append(f"{option}: vqkit quantizers take channels-last (..., dim) tensors (convert a module "
                        "built channels-last and move the channels last)")
    if not getattr(m, "force_quantization_f32", True):
        problems.append("force_quantization_f32=False: vqkit always quantizes in float32 "
                        "(set module.force_quantization_f32 = True to convert)")
    if getattr(m, "orthogonal_rotation", False):
        problems.append("orthogonal_rotation=True: vqkit has no orthogonal rotation of the codes")
    if getattr(m, "num_codebooks", 1) != 1 or getattr(m, "keep_num_codebooks_dim", False):
        problems.append(f"num_codebooks={m.num_codebooks}, keep_num_codebooks_dim={m.keep_num_codebooks_dim}: "
                        "one codebook per token only")
    return problems


def _bias_problem(projection: nn.Module) -> list[str]:
    if isinstance(projection, nn.Linear) and projection.bias is None:
        return ["projection_has_bias=False: vqkit's projections have a bias"]
    return []


# -- vqp -> vqkit --------------------------------------------------------------------------------------------
def from_vqp(module: nn.Module, *, inv_temperature: float = 100.0) -> Quantizer:
    """The vqkit quantizer equivalent to the vqp ``module`` (same state, same train/eval mode and device).

    ``inv_temperature``: vqp's LFQ takes it as a forward argument (default 100), vqkit as
    ``temperature = 1 / inv_temperature``; pass the value the vqp module was trained with.
    Raises :class:`ConversionError` naming every option that has no exact vqkit equivalent.
    """
    vqp = vqp_module()
    converters: dict[Any, Callable[[Any], Quantizer]] = {
        vqp.FSQ: _fsq_from, vqp.LFQ: lambda m: _lfq_from(m, inv_temperature), vqp.VectorQuantize: _vq_from,
        vqp.ResidualVQ: _rvq_from, vqp.SimVQ: _simvq_from, vqp.ResidualSimVQ: _rsimvq_from,
        vqp.ResidualFSQ: _rfsq_from, vqp.GroupedResidualVQ: _grvq_from, vqp.GroupedResidualFSQ: _rfsq_from,
        vqp.ResidualLFQ: _rlfq_from, vqp.GroupedResidualLFQ: _rlfq_from}
    convert = converters.get(type(module))
    if convert is None:
        names = sorted(cls.__name__ for cls in converters)
        raise ConversionError(f"from_vqp: {type(module).__name__} has no vqkit equivalent; converted: {names}")
    q: Quantizer = convert(module)
    device = next((t.device for t in (*module.parameters(), *module.buffers())), torch.device("cpu"))
    return q.to(device).train(module.training)


def _fsq_from(m: Any) -> FSQ:
    problems = _layout_problems(m, m.channel_first) + _bias_problem(m.project_in)
    if m.noise_dropout > 0:
        problems.append(f"noise_dropout={m.noise_dropout}: vqkit's FSQ always rounds")
    if m.bound_hard_clamp:
        problems.append("bound_hard_clamp=True: vqkit's FSQ bounds with tanh, never a hard clamp")
    refuse("from_vqp(FSQ)", problems)
    q = FSQ([int(v) for v in m._levels.tolist()], dim=m.dim, symmetric=bool(m.preserve_symmetry))
    copy_linear(q.project_in, m.project_in)
    copy_linear(q.project_out, m.project_out)
    return q


def _lfq_from(m: Any, inv_temperature: float) -> LFQ | BSQ:
    bits = int(m.codebook_dim)
    problems = _layout_problems(m, m.channel_first) + _bias_problem(m.project_out)
    if m.has_projections != (m.dim != bits):
        problems.append(f"has_projections={m.has_projections} with dim={m.dim}, {bits} bits: vqkit projects "
                        "exactly when dim != bits")
    if m.has_projections and type(m.project_in) is not nn.Linear:
        problems.append("cosine_sim_project_in=True: vqkit's projection is an nn.Linear")
    if not isinstance(m.activation, nn.Identity):
        problems.append(f"straight_through_activation={type(m.activation).__name__}: vqkit's straight-through "
                        "estimator is the identity")
    for name, value, default in (("codebook_scale", m.codebook_scale, 1.0),
                                 ("frac_per_sample_entropy", m.frac_per_sample_entropy, 1.0),
                                 ("soft_clamp_input_value", m.soft_clamp_input_value, None),
                                 ("experimental_softplus_entropy_loss", m.experimental_softplus_entropy_loss, False)):
        if value != default:
            problems.append(f"{name}={value}: vqkit's {'BSQ' if m.spherical else 'LFQ'} has only {name}={default}")
    if m.spherical and bits > MAX_GROUP_SIZE:
        problems.append(f"spherical=True with {bits} bits: vqp's entropy is over all 2^{bits} codes, which vqkit "
                        f"computes exactly up to {MAX_GROUP_SIZE} bits")
    if not (isinstance(inv_temperature, int | float) and inv_temperature > 0 and math.isfinite(inv_temperature)):
        problems.append(f"inv_temperature={inv_temperature!r} must be a positive number")
    refuse("from_vqp(LFQ)", problems)
    common: dict[str, Any] = {"dim": int(m.dim), "bits": bits, "entropy_weight": float(m.entropy_loss_weight),
              "commitment_weight": float(m.commitment_loss_weight), "gamma": float(m.diversity_gamma),
              "temperature": 1.0 / float(inv_temperature), "bit_order": "msb"}
    q = BSQ(group_size=bits, **common) if m.spherical else LFQ(**common)
    copy_linear(q.project_in, m.project_in)
    copy_linear(q.project_out, m.project_out)
    return q


def _vq_from(m: Any, owner: str = "from_vqp(VectorQuantize)") -> VQ | EMAVQ | GroupedQuantizer:
    cb = m._codebook
    sampling = getattr(cb.gumbel_sample, "keywords", {})
    layout = {"channel_last=False": not m.channel_last, "accept_image_fmap=True": m.accept_image_fmap,
              "accept_3d_fmap=True": m.accept_3d_fmap}
    problems = _layout_problems(m, any(layout.values()), ", ".join(k for k, v in layout.items() if v))
    flags = {
        "codebook_dim": (m.has_projections, "vqkit's VQ has no projection in or out" + (
            f" (heads={m.heads} convert without one: codebook_dim = dim / heads)" if m.heads > 1 else "")),
        "freeze_codebook": (m.freeze_codebook, "vqkit's codebooks always train"),
        "commitment_use_cross_entropy_loss": (m.commitment_use_cross_entropy_loss, "vqkit's commitment is an MSE"),
        "orthogonal_reg_weight": (m.has_codebook_orthogonal_loss, "vqkit has no orthogonal regulariser"),
        "codebook_diversity_loss_weight": (m.has_codebook_diversity_loss, "vqkit's VQ has no diversity loss"),
        "stochastic_sample_codes": (sampling.get("stochastic", False), "vqkit picks the nearest code"),
        "straight_through": (sampling.get("straight_through", False), "vqkit has no Gumbel straight-through"),
        "directional_reparam": (m.directional_reparam, "vqkit has no directional reparameterisation"),
        "affine_param": (cb.affine_param, "vqkit has no affine codebook"),
        "vq_bridge": (cb.vq_bridge is not None, "vqkit has no codebook bridge"),
        "manual_ema_update": (cb.manual_ema_update, "vqkit updates the EMA in the forward pass"),
        "in_place_codebook_optimizer": (m.in_place_codebook_optimizer is not None, "vqkit has no in-place optimizer"),
        "sync_update_v": (m.sync_update_v > 0, "vqkit has no synchronous update rule"),
        "route_gradients_to_input": (not m.route_gradients_to_input, "vqkit's VQ always routes gradients to z"),
        "use_cosine_sim": (m.use_cosine_sim, "vqkit's EMA codebook is Euclidean (VQ(l2_normalize=True) is learnable, "
                                             "vqp's cosine codebook cannot be)"),
    }
    problems += [f"{name}: {why}" for name, (bad, why) in flags.items() if bad]
    gradient = rotation_kwargs(bool(m.rotation_trick))
    ema, learnable = bool(cb.ema_update), bool(cb.learnable_codebook)
    heads, weight = int(m.heads), float(m.commitment_weight)
    if not bool(cb.initted):
        problems.append("kmeans_init=True before its first training batch: vqp's k-means differs from vqkit's "
                        "(run a training step first)")
    if not ema and not learnable:
        problems.append("ema_update=False with learnable_codebook=False: vqkit has no frozen-codebook VQ")
    if learnable and weight != heads:
        problems.append(f"commitment_weight={m.commitment_weight} with a learnable codebook: vqp weights its codebook "
                        f"term by it too, vqkit's VQ by 1 (only commitment_weight={heads}, the number of heads, "
                        "converts exactly)")
    if learnable and cb.threshold_ema_dead_code > 0:
        problems.append("threshold_ema_dead_code with a learnable codebook: vqkit's VQ restarts no codes (EMAVQ does)")
    if ema and cb.reset_cluster_size != cb.threshold_ema_dead_code:
        problems.append(f"reset_cluster_size={cb.reset_cluster_size}: vqkit resets restarted codes to "
                        "threshold_ema_dead_code")
    refuse(owner, problems)
    k, d = int(m.codebook_size), int(m.dim) // heads

    def head(h: int) -> VQ | EMAVQ:
        """Head h's quantizer (vqp's loss is a mean over heads, vqkit's grouped loss a sum: weight / heads)."""
        q: VQ | EMAVQ
        if ema:
            q = EMAVQ(d, k, decay=float(cb.decay), beta=weight / heads, eps=float(cb.eps),
                      dead_code_threshold=float(cb.threshold_ema_dead_code), **gradient)
            copy_tensor(q.codebook, cb.embed[h])
            copy_tensor(q.cluster_size, cb.cluster_size[h])
            copy_tensor(q.embed_sum, cb.embed_avg[h])
        else:
            q = VQ(d, k, beta=1.0, **gradient)
            copy_tensor(q.codebook, cb.embed[h])
        return q

    if heads == 1:
        return head(0)
    separate = bool(m.separate_codebook_per_head)
    made = iter(range(heads))
    return GroupedQuantizer(lambda: head(next(made) if separate else 0), heads, shared=not separate)


def _simvq_from(m: Any, owner: str = "from_vqp(SimVQ)") -> SimVQ:
    t, (k, frozen_dim) = m.code_transform, m.frozen_codebook.shape
    problems = _layout_problems(m, m.channel_first)
    if type(t) is not nn.Linear:
        problems.append(f"codebook_transform={type(t).__name__}: vqkit's SimVQ transform is one nn.Linear(dim, dim)")
    elif t.in_features != t.out_features:
        problems.append(f"frozen_codebook_dim={frozen_dim} != dim={t.out_features}: vqkit's frozen codebook has dim "
                        "columns")
    gradient = rotation_kwargs(bool(m.rotation_trick))
    if m.commitment_weight != 1:
        problems.append(f"commitment_weight={m.commitment_weight}: vqp scales both loss terms by it, vqkit's codebook "
                        "term has weight 1 (only commitment_weight=1 converts exactly)")
    refuse(owner, problems)
    q = SimVQ(int(frozen_dim), int(k), beta=float(m.input_to_quantize_commit_loss_weight), **gradient)
    copy_tensor(q.codebook, m.frozen_codebook)
    copy_tensor(q.linear.weight, t.weight)
    if t.bias is not None:
        copy_tensor(q.linear.bias, t.bias)
    else:  # vqp's default transform has no bias: a zero bias that never trains is the same function
        with torch.no_grad():
            q.linear.bias.zero_()
        q.linear.bias.requires_grad_(False)
    return q


def _rvq_from(m: Any, owner: str = "from_vqp(ResidualVQ)") -> ResidualQuantizer:
    flags = {"codebook_dim": m.has_projections, "shared_codebook": m.shared_codebook, "diveq": m.diveq,
             "implicit_neural_codebook": m.implicit_neural_codebook, "quantize_dropout": m.quantize_dropout,
             "beam_size": m.beam_size is not None, "accept_image_fmap": m.accept_image_fmap}
    problems = [f"{name}: vqkit's residual quantizer has no such option" for name, bad in flags.items() if bad]
    if m.quant_grad_frac not in (0.0, 1.0):
        problems.append(f"quant_grad_frac={m.quant_grad_frac}: vqkit detaches the residual fully (0) or not (1)")
    refuse(owner, problems)
    stages = [_vq_from(layer, f"{owner}.layers[{i}]") for i, layer in enumerate(m.layers)]
    return ResidualQuantizer(stages, "none", detach_residual=m.quant_grad_frac == 0)


def _rsimvq_from(m: Any) -> ResidualQuantizer:
    owner = "from_vqp(ResidualSimVQ)"
    refuse(owner, ["quantize_dropout: vqkit's residual quantizer has no quantizer dropout"] if m.quantize_dropout
           else [])
    stages = [_simvq_from(layer, f"{owner}.layers[{i}]") for i, layer in enumerate(m.layers)]
    return ResidualQuantizer(stages, "none", detach_residual=True)


def _rfsq_from(m: Any) -> Quantizer:
    grouped = " (each group of GroupedResidualFSQ is one)" if hasattr(m, "rvqs") else ""
    raise ConversionError(f"from_vqp({type(m).__name__}): {RFSQ_WHY}{grouped}")


def _rlfq_from(m: Any) -> Quantizer:
    grouped = " (each group of GroupedResidualLFQ is one)" if hasattr(m, "rvqs") else ""
    raise ConversionError(f"from_vqp({type(m).__name__}): {RLFQ_WHY}{grouped}")


def _grvq_from(m: Any) -> Quantizer:
    """G ResidualVQs on consecutive channel groups: a GroupedQuantizer of residual quantizers (groups=1: the one
    ResidualQuantizer; vqp's indices (G, ..., S) are vqkit's (..., G·S), group-major)."""
    owner = "from_vqp(GroupedResidualVQ)"
    refuse(owner, ["accept_image_fmap=True: vqkit quantizers take channels-last (..., dim) tensors"]
           if m.accept_image_fmap else [])
    groups = [_rvq_from(rvq, f"{owner}.rvqs[{g}]") for g, rvq in enumerate(m.rvqs)]
    if len(groups) == 1:
        return groups[0]
    made = iter(groups)
    return GroupedQuantizer(lambda: next(made), len(groups))
