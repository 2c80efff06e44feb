"""vector-quantize-pytorch ("vqp", 1.32) modules ⇄ vqkit quantizers, exactly or not at all.

``from_vqp(module)`` and ``to_vqp(quantizer)`` copy the weights, codebooks and EMA state into a module of the
other library whose forward pass gives the same quantized output, indices and gradients (the straight-through
sums ``x + sg(q - x)`` and ``sg(q) + (x - sg(x))`` may differ in the last bit in training mode). Every option of
the source module that the target cannot reproduce is refused by name in one :class:`ConversionError`:

=====================  ======================  ==============================================================
vqp                    vqkit                   notes
=====================  ======================  ==============================================================
FSQ                    FSQ                     ``preserve_symmetry`` ⇄ ``symmetric``; same grid and indices
LFQ                    LFQ(bit_order="msb")    ``inv_temperature`` (a forward argument in vqp) ⇄ ``temperature``
LFQ(spherical=True)    BSQ(group_size=bits)    vqp's entropy is over all 2^bits codes: one group
VectorQuantize (EMA)   EMAVQ                   decay, eps, ``threshold_ema_dead_code``, commitment weight = beta
VectorQuantize         VQ(beta=1)              ``ema_update=False, learnable_codebook=True``: vqp weights both
  (learnable)                                  loss terms by ``commitment_weight``, vqkit's codebook term by 1
ResidualVQ             ResidualQuantizer       ``quant_grad_frac`` 0 ⇄ ``detach_residual=True``, 1 ⇄ False
SimVQ                  SimVQ                   a bias-free ``code_transform`` becomes a zero, frozen bias
ResidualSimVQ          ResidualQuantizer       its residual is detached: ``detach_residual=True``
=====================  ======================  ==============================================================

Refused, each by name: multi-head / grouped codebooks, projections vqkit lacks (``codebook_dim`` of
VectorQuantize and ResidualVQ, ``frozen_codebook_dim``, non-linear codebook transforms), k-means state not
yet initialised, orthogonal and diversity regularisers, stochastic / Gumbel sampling, frozen or in-place
optimised codebooks, cosine-similarity codebooks (vqp's are EMA-only, vqkit's ``l2_normalize`` VQ is
learnable), affine and bridge codebooks, quantizer dropout, beam search, soft clamps, orthogonal rotations,
noise dropout, channel-first layouts, quantization outside float32, vqp's ResidualFSQ (fixed per-level
scales L^-k, a hard clamp and an input soft clamp, none of which vqkit's residual FSQ has) and the rotation
trick until vqkit has ``gradient="rotation"`` (:data:`ROTATION_TRICK_SUPPORTED`). Options that change
nothing on one process are accepted: ``sync_codebook`` / ``sync_kmeans`` (vqkit all-reduces EMA statistics
whenever ``torch.distributed`` is initialised), masks (a forward argument), ``sample_codebook_temp`` without
stochastic sampling, FSQ's ``scale`` (stored, unused by vqp 1.32), ``allowed_dtypes`` and ``return_indices``
(vqkit computes in float32 and returns indices always). Losses: vqp's LFQ entropy clamps probabilities
at 1e-5 inside the log (vqkit's is exact), vqp reports residual losses per stage (vqkit sums them), in eval
mode vqp's LFQ reports no commitment loss, and a learnable VectorQuantize reports half of vqkit's VQ loss
(one term for both sides, the same gradients); dead-code restarts draw their random rows differently.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..quantizers import BSQ, EMAVQ, FSQ, LFQ, VQ, Quantizer, ResidualQuantizer, SimVQ
from ..quantizers.bsq import MAX_GROUP_SIZE
from .errors import ConversionError, refuse

# -- the rotation trick: the one place to enable it ---------------------------------------------------------
# vqp's ``rotation_trick=True`` (VectorQuantize's default for dim > 1, SimVQ's and ResidualSimVQ's default) is
# vqkit's ``gradient="rotation"``, which another branch of issue 17 adds to VQ, EMAVQ and SimVQ. Once merged,
# set this to True: conversions then pass ``gradient="rotation"`` on and read it back (tests/test_interop.py's
# test_rotation_trick_is_refused_by_name turns into a parity test).
ROTATION_TRICK_SUPPORTED = False


def _rotation_kwargs(rotation_trick: bool, problems: list[str]) -> dict[str, Any]:
    if not rotation_trick:
        return {}
    if ROTATION_TRICK_SUPPORTED:
        return {"gradient": "rotation"}
    problems.append("rotation_trick=True needs vqkit's gradient=\"rotation\", which this vqkit does not have yet "
                    "(build the vqp module with rotation_trick=False)")
    return {}


def _rotation_of(q: Quantizer) -> bool:
    return getattr(q, "gradient", "ste") == "rotation"
# -----------------------------------------------------------------------------------------------------------


def _vqp() -> Any:
    try:
        import vector_quantize_pytorch
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ConversionError("to_vqp needs vector-quantize-pytorch (pip install vector-quantize-pytorch)") from err
    return vector_quantize_pytorch


@torch.no_grad()
def _copy(dst: Tensor, src: Tensor) -> None:
    if dst.shape != src.shape:
        raise ConversionError(f"shape {tuple(src.shape)} cannot be copied into {tuple(dst.shape)}")
    dst.copy_(src.to(dst.dtype))


def _copy_linear(dst: nn.Module, src: nn.Module) -> None:
    """Weights of one nn.Linear into another (both Identity: nothing to copy)."""
    if isinstance(dst, nn.Linear) and isinstance(src, nn.Linear):
        _copy(dst.weight, src.weight)
        if dst.bias is not None and src.bias is not None:
            _copy(dst.bias, src.bias)
    elif not (isinstance(dst, nn.Identity) and isinstance(src, nn.Identity)):
        raise ConversionError(f"cannot copy a {type(src).__name__} projection into a {type(dst).__name__}")


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
    vqp = _vqp()
    converters: dict[Any, Callable[[Any], Quantizer]] = {
        vqp.FSQ: _fsq_from, vqp.LFQ: lambda m: _lfq_from(m, inv_temperature), vqp.VectorQuantize: _vq_from,
        vqp.ResidualVQ: _rvq_from, vqp.SimVQ: _simvq_from, vqp.ResidualSimVQ: _rsimvq_from,
        vqp.ResidualFSQ: _rfsq_from}
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
    _copy_linear(q.project_in, m.project_in)
    _copy_linear(q.project_out, m.project_out)
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
    _copy_linear(q.project_in, m.project_in)
    _copy_linear(q.project_out, m.project_out)
    return q


def _vq_from(m: Any, owner: str = "from_vqp(VectorQuantize)") -> VQ | EMAVQ:
    cb = m._codebook
    sampling = getattr(cb.gumbel_sample, "keywords", {})
    layout = {"channel_last=False": not m.channel_last, "accept_image_fmap=True": m.accept_image_fmap,
              "accept_3d_fmap=True": m.accept_3d_fmap}
    problems = _layout_problems(m, any(layout.values()), ", ".join(k for k, v in layout.items() if v))
    flags = {
        "heads": (m.heads != 1 or m.separate_codebook_per_head, "one codebook per token only"),
        "codebook_dim": (m.has_projections, "vqkit's VQ has no projection in or out"),
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
    gradient = _rotation_kwargs(bool(m.rotation_trick), problems)
    ema, learnable = bool(cb.ema_update), bool(cb.learnable_codebook)
    if not bool(cb.initted):
        problems.append("kmeans_init=True before its first training batch: vqp's k-means differs from vqkit's "
                        "(run a training step first)")
    if not ema and not learnable:
        problems.append("ema_update=False with learnable_codebook=False: vqkit has no frozen-codebook VQ")
    if learnable and m.commitment_weight != 1:
        problems.append(f"commitment_weight={m.commitment_weight} with a learnable codebook: vqp weights its codebook "
                        "term by it too, vqkit's VQ by 1 (only commitment_weight=1 converts exactly)")
    if learnable and cb.threshold_ema_dead_code > 0:
        problems.append("threshold_ema_dead_code with a learnable codebook: vqkit's VQ restarts no codes (EMAVQ does)")
    if ema and cb.reset_cluster_size != cb.threshold_ema_dead_code:
        problems.append(f"reset_cluster_size={cb.reset_cluster_size}: vqkit resets restarted codes to "
                        "threshold_ema_dead_code")
    refuse(owner, problems)
    k, d = int(m.codebook_size), int(m.dim)
    q: VQ | EMAVQ
    if ema:
        q = EMAVQ(d, k, decay=float(cb.decay), beta=float(m.commitment_weight), eps=float(cb.eps),
                  dead_code_threshold=float(cb.threshold_ema_dead_code), **gradient)
        _copy(q.codebook, cb.embed[0])
        _copy(q.cluster_size, cb.cluster_size[0])
        _copy(q.embed_sum, cb.embed_avg[0])
    else:
        q = VQ(d, k, beta=1.0, **gradient)
        _copy(q.codebook, cb.embed[0])
    return q


def _simvq_from(m: Any, owner: str = "from_vqp(SimVQ)") -> SimVQ:
    t, (k, frozen_dim) = m.code_transform, m.frozen_codebook.shape
    problems = _layout_problems(m, m.channel_first)
    if type(t) is not nn.Linear:
        problems.append(f"codebook_transform={type(t).__name__}: vqkit's SimVQ transform is one nn.Linear(dim, dim)")
    elif t.in_features != t.out_features:
        problems.append(f"frozen_codebook_dim={frozen_dim} != dim={t.out_features}: vqkit's frozen codebook has dim "
                        "columns")
    gradient = _rotation_kwargs(bool(m.rotation_trick), problems)
    if m.commitment_weight != 1:
        problems.append(f"commitment_weight={m.commitment_weight}: vqp scales both loss terms by it, vqkit's codebook "
                        "term has weight 1 (only commitment_weight=1 converts exactly)")
    refuse(owner, problems)
    q = SimVQ(int(frozen_dim), int(k), beta=float(m.input_to_quantize_commit_loss_weight), **gradient)
    _copy(q.codebook, m.frozen_codebook)
    _copy(q.linear.weight, t.weight)
    if t.bias is not None:
        _copy(q.linear.bias, t.bias)
    else:  # vqp's default transform has no bias: a zero bias that never trains is the same function
        with torch.no_grad():
            q.linear.bias.zero_()
        q.linear.bias.requires_grad_(False)
    return q


def _rvq_from(m: Any) -> ResidualQuantizer:
    owner = "from_vqp(ResidualVQ)"
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


_RFSQ_WHY = ("vqp's ResidualFSQ soft-clamps its input to ±(1 + 1/(L-1)), divides stage k by fixed per-channel scales "
             "L^-k and bounds with a hard clamp; vqkit's ResidualFSQ bounds with tanh and learns (or omits) one scale "
             "per stage: the grids differ, so no conversion is exact")


def _rfsq_from(m: Any) -> Quantizer:
    raise ConversionError(f"from_vqp(ResidualFSQ): {_RFSQ_WHY}")


# -- vqkit -> vqp --------------------------------------------------------------------------------------------
def to_vqp(q: Quantizer) -> nn.Module:
    """The vqp module equivalent to the vqkit quantizer ``q`` (same state, train/eval mode and device).

    Raises :class:`ConversionError` naming every setting vqp cannot reproduce (see the module docstring).
    """
    vqp = _vqp()
    module: nn.Module
    if type(q) is FSQ:
        module = _fsq_to(q, vqp)
    elif type(q) in (LFQ, BSQ):
        module = _lfq_to(q, vqp)  # type: ignore[arg-type]
    elif type(q) in (VQ, EMAVQ):
        module = _vq_to(q, vqp)[0]  # type: ignore[arg-type]
    elif type(q) is SimVQ:
        module = _simvq_to(q, vqp)[0]
    elif type(q) is ResidualQuantizer:
        module = _residual_to(q, vqp)
    else:
        raise ConversionError(f"to_vqp: {type(q).__name__} has no vqp equivalent")
    device = next((t.device for t in (*q.parameters(), *q.buffers())), torch.device("cpu"))
    return module.to(device).train(q.training)


def _fsq_to(q: FSQ, vqp: Any) -> nn.Module:
    m = vqp.FSQ(levels=list(q.levels), dim=q.dim, preserve_symmetry=q.symmetric)
    _copy_linear(m.project_in, q.project_in)
    _copy_linear(m.project_out, q.project_out)
    return cast(nn.Module, m)


def _lfq_to(q: LFQ | BSQ, vqp: Any) -> nn.Module:
    name = type(q).__name__
    problems = []
    if q.bit_order != "msb":
        problems.append("bit_order='lsb': vqp numbers tokens MSB-first (the same module with bit_order='msb' "
                        "converts; its indices are these with their bits reversed)")
    if not math.isclose(q.temperature, 0.01, rel_tol=1e-12):
        problems.append(f"temperature={q.temperature}: vqp takes it at each call, forward(x, inv_temperature="
                        f"{1 / q.temperature:g}), not as module state (a module with temperature=0.01 converts)")
    if isinstance(q, LFQ) and q.codebook_entropy != "exact":
        problems.append("codebook_entropy='factorized': vqp's codebook entropy is exact")
    if isinstance(q, BSQ) and q.group_size != q.bits:
        problems.append(f"group_size={q.group_size}: vqp's spherical LFQ has one entropy group of all {q.bits} bits")
    refuse(f"to_vqp({name})", problems)
    m = vqp.LFQ(dim=q.dim, codebook_size=2**q.bits, entropy_loss_weight=q.entropy_weight,
                commitment_loss_weight=q.commitment_weight, diversity_gamma=q.gamma, spherical=isinstance(q, BSQ))
    _copy_linear(m.project_in, q.project_in)
    _copy_linear(m.project_out, q.project_out)
    return cast(nn.Module, m)


def _vq_to(q: VQ | EMAVQ, vqp: Any, owner: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """(module, its constructor arguments but ``dim`` and ``codebook_size``)."""
    owner = owner or f"to_vqp({type(q).__name__})"
    problems = []
    rotation = _rotation_of(q)
    if isinstance(q, VQ):
        if q.l2_normalize:
            problems.append("l2_normalize=True: vqp's cosine codebook (use_cosine_sim) cannot be learnable")
        if q.beta != 1:
            problems.append(f"beta={q.beta}: vqp weights both loss terms of a learnable codebook by one "
                            "commitment_weight (only beta=1 converts exactly)")
        kwargs: dict[str, Any] = {"ema_update": False, "learnable_codebook": True, "commitment_weight": 1.0}
    else:
        if not bool(q.initialized):
            problems.append("kmeans_init=True before its first training batch: vqkit's k-means differs from vqp's "
                            "(run a training step first)")
        kwargs = {"ema_update": True, "decay": q.decay, "eps": q.eps, "commitment_weight": q.beta,
                  "threshold_ema_dead_code": q.dead_code_threshold}
    refuse(owner, problems)
    kwargs["rotation_trick"] = rotation
    m = vqp.VectorQuantize(dim=q.dim, codebook_size=q.codebook_size, **kwargs)
    cb = m._codebook
    _copy(cb.embed[0], q.codebook)
    if isinstance(q, EMAVQ):
        _copy(cb.cluster_size[0], q.cluster_size)
        _copy(cb.embed_avg[0], q.embed_sum)
    return m, kwargs


def _simvq_to(q: SimVQ, vqp: Any, owner: str = "to_vqp(SimVQ)") -> tuple[nn.Module, dict[str, Any]]:
    bias = q.linear.bias
    frozen_zero = not bias.requires_grad and not bool(bias.any())
    problems = []
    if q.train_codebook:
        problems.append("train_codebook=True: vqp's frozen codebook is a buffer")
    if not bias.requires_grad and not frozen_zero:
        problems.append("a frozen, non-zero linear.bias: vqp's transform bias trains or does not exist")
    refuse(owner, problems)
    linear = nn.Linear(q.dim, q.dim, bias=not frozen_zero)
    _copy_linear(linear, q.linear)
    kwargs = {"rotation_trick": _rotation_of(q), "input_to_quantize_commit_loss_weight": q.beta,
              "commitment_weight": 1.0}
    m = vqp.SimVQ(dim=q.dim, codebook_size=q.codebook_size, codebook_transform=linear, **kwargs)
    _copy(m.frozen_codebook, q.codebook)
    return m, {**kwargs, "bias": not frozen_zero}


def _residual_to(q: ResidualQuantizer, vqp: Any) -> nn.Module:
    owner = "to_vqp(ResidualQuantizer)"
    stages = list(q.stages)
    kinds = {type(s) for s in stages}
    problems = []
    if q.conditioning != "none":
        problems.append(f"conditioning={q.conditioning!r}: vqp's residual quantizers condition no stage")
    if len(kinds) != 1 or not kinds <= {VQ, EMAVQ, SimVQ}:
        fsq = f" (and no residual FSQ vqkit can match: {_RFSQ_WHY})" if FSQ in kinds else ""
        problems.append(f"stages {sorted(k.__name__ for k in kinds)}: vqp has residual VectorQuantize and SimVQ "
                        f"stages of one kind{fsq}")
    if kinds == {SimVQ} and not q.detach_residual:
        problems.append("detach_residual=False: vqp's ResidualSimVQ detaches the residual")
    refuse(owner, problems)
    if kinds == {SimVQ}:
        converted = [_simvq_to(s, vqp, f"{owner}.stages[{i}]") for i, s in enumerate(stages)]  # type: ignore[arg-type]
        if len({s.codebook_size for s in stages}) != 1 or len({str(kw) for _, kw in converted}) != 1:
            refuse(owner, ["stages with different codebook sizes or settings: vqp's ResidualSimVQ shares them"])
        kw = {k: v for k, v in converted[0][1].items() if k != "bias"}
        m = vqp.ResidualSimVQ(dim=q.dim, num_quantizers=len(stages), codebook_size=stages[0].codebook_size, **kw)
        for layer, (stage_module, _) in zip(m.layers, converted, strict=True):
            layer.code_transform = stage_module.code_transform
            _copy(layer.frozen_codebook, stage_module.get_buffer("frozen_codebook"))
        return cast(nn.Module, m)
    converted_vq = [_vq_to(s, vqp, f"{owner}.stages[{i}]") for i, s in enumerate(stages)]  # type: ignore[arg-type]
    if len({str(kw) for _, kw in converted_vq}) != 1:
        refuse(owner, ["stages with different settings: vqp's ResidualVQ passes one set to every layer"])
    rvq = vqp.ResidualVQ(dim=q.dim, num_quantizers=len(stages), codebook_size=tuple(s.codebook_size for s in stages),
                       quant_grad_frac=0.0 if q.detach_residual else 1.0, **converted_vq[0][1])
    for layer, (stage_module, _) in zip(rvq.layers, converted_vq, strict=True):
        layer.load_state_dict(stage_module.state_dict())
    return cast(nn.Module, rvq)
