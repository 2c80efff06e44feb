"""vqkit quantizers -> vqp modules (:func:`to_vqp`); the table and the refusals are in :mod:`.vqp`."""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import nn

from ..quantizers import BSQ, EMAVQ, FSQ, LFQ, VQ, GroupedQuantizer, Quantizer, ResidualQuantizer, SimVQ
from .errors import ConversionError, refuse
from .vqp_base import RFSQ_WHY, copy_linear, copy_tensor, rotation_of, vqp_module


# -- vqkit -> vqp --------------------------------------------------------------------------------------------
def to_vqp(q: Quantizer) -> nn.Module:
    """The vqp module equivalent to the vqkit quantizer ``q`` (same state, train/eval mode and device).

    Raises :class:`ConversionError` naming every setting vqp cannot reproduce (see the module docstring).
    """
    vqp = vqp_module()
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
        module = _residual_to(q, vqp)[0]
    elif type(q) is GroupedQuantizer:
        module = _grouped_to(q, vqp)
    else:
        raise ConversionError(f"to_vqp: {type(q).__name__} has no vqp equivalent")
    device = next((t.device for t in (*q.parameters(), *q.buffers())), torch.device("cpu"))
    return module.to(device).train(q.training)


def _fsq_to(q: FSQ, vqp: Any) -> nn.Module:
    m = vqp.FSQ(levels=list(q.levels), dim=q.dim, preserve_symmetry=q.symmetric)
    copy_linear(m.project_in, q.project_in)
    copy_linear(m.project_out, q.project_out)
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
    copy_linear(m.project_in, q.project_in)
    copy_linear(m.project_out, q.project_out)
    return cast(nn.Module, m)


def _vq_to(q: VQ | EMAVQ, vqp: Any, owner: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """(module, its constructor arguments but ``dim`` and ``codebook_size``)."""
    owner = owner or f"to_vqp({type(q).__name__})"
    problems = []
    rotation = rotation_of(q)
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
    copy_tensor(cb.embed[0], q.codebook)
    if isinstance(q, EMAVQ):
        copy_tensor(cb.cluster_size[0], q.cluster_size)
        copy_tensor(cb.embed_avg[0], q.embed_sum)
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
    copy_linear(linear, q.linear)
    kwargs = {"rotation_trick": rotation_of(q), "input_to_quantize_commit_loss_weight": q.beta,
              "commitment_weight": 1.0}
    m = vqp.SimVQ(dim=q.dim, codebook_size=q.codebook_size, codebook_transform=linear, **kwargs)
    copy_tensor(m.frozen_codebook, q.codebook)
    return m, {**kwargs, "bias": not frozen_zero}


def _residual_to(q: ResidualQuantizer, vqp: Any, owner: str = "to_vqp(ResidualQuantizer)"
                 ) -> tuple[nn.Module, dict[str, Any]]:
    """(ResidualVQ or ResidualSimVQ, its constructor arguments but ``dim``)."""
    stages = list(q.stages)
    kinds = {type(s) for s in stages}
    problems = []
    if q.conditioning != "none":
        problems.append(f"conditioning={q.conditioning!r}: vqp's residual quantizers condition no stage")
    if len(kinds) != 1 or not kinds <= {VQ, EMAVQ, SimVQ}:
        fsq = f" (and no residual FSQ vqkit can match: {RFSQ_WHY})" if FSQ in kinds else ""
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
        kw.update(num_quantizers=len(stages), codebook_size=stages[0].codebook_size)
        m = vqp.ResidualSimVQ(dim=q.dim, **kw)
        for layer, (stage_module, _) in zip(m.layers, converted, strict=True):
            layer.code_transform = stage_module.code_transform
            copy_tensor(layer.frozen_codebook, stage_module.get_buffer("frozen_codebook"))
        return cast(nn.Module, m), kw
    converted_vq = [_vq_to(s, vqp, f"{owner}.stages[{i}]") for i, s in enumerate(stages)]  # type: ignore[arg-type]
    if len({str(kw) for _, kw in converted_vq}) != 1:
        refuse(owner, ["stages with different settings: vqp's ResidualVQ passes one set to every layer"])
    kw = {**converted_vq[0][1], "num_quantizers": len(stages), "codebook_size": tuple(s.codebook_size for s in stages),
          "quant_grad_frac": 0.0 if q.detach_residual else 1.0}
    rvq = vqp.ResidualVQ(dim=q.dim, **kw)
    for layer, (stage_module, _) in zip(rvq.layers, converted_vq, strict=True):
        layer.load_state_dict(stage_module.state_dict())
    return cast(nn.Module, rvq), kw


def _grouped_to(q: GroupedQuantizer, vqp: Any) -> nn.Module:
    """Groups of VQ/EMAVQ: a multi-head VectorQuantize (``codebook_dim`` = the group's dim, separate codebooks
    unless shared); groups of residual VQs: GroupedResidualVQ. Every group must have the same settings."""
    owner = "to_vqp(GroupedQuantizer)"
    inner = list(q.inner)
    kinds = {type(g) for g in inner}
    if len(kinds) == 1 and kinds <= {VQ, EMAVQ}:
        heads = [_vq_to(g, vqp, f"{owner}.inner[{i}]") for i, g in enumerate(inner)]  # type: ignore[arg-type]
        if len({(g.codebook_size, str(kw)) for g, (_, kw) in zip(inner, heads, strict=True)}) != 1:
            refuse(owner, ["groups with different codebook sizes or settings: vqp's heads share one set"])
        kw = {**heads[0][1], "commitment_weight": heads[0][1]["commitment_weight"] * q.groups}  # vqp: mean over heads
        m = vqp.VectorQuantize(dim=q.dim, codebook_size=inner[0].codebook_size, heads=q.groups,
                               codebook_dim=q.group_dim, separate_codebook_per_head=not q.shared, **kw)
        for h, (head, _) in enumerate(heads):
            for name in ("embed", "cluster_size", "embed_avg"):
                copy_tensor(getattr(m._codebook, name)[h], getattr(head._codebook, name)[0])
        return cast(nn.Module, m)
    problems = []
    if kinds != {ResidualQuantizer}:
        problems.append(f"groups of {sorted(k.__name__ for k in kinds)}: vqp's grouped modules vqkit reproduces are "
                        "multi-head VectorQuantize (VQ/EMAVQ groups) and GroupedResidualVQ (residual VQ groups)")
    if q.shared:
        problems.append("shared=True with residual groups: vqp's GroupedResidualVQ gives each group its own codebooks")
    refuse(owner, problems)
    groups = [_residual_to(g, vqp, f"{owner}.inner[{i}]") for i, g in enumerate(inner)]  # type: ignore[arg-type]
    if not all(isinstance(g, vqp.ResidualVQ) for g, _ in groups):
        refuse(owner, ["groups of residual SimVQ: vqp has no grouped ResidualSimVQ"])
    if len({str(kw) for _, kw in groups}) != 1:
        refuse(owner, ["groups with different settings: vqp's GroupedResidualVQ passes one set to every group"])
    grvq = vqp.GroupedResidualVQ(dim=q.dim, groups=q.groups, **groups[0][1])
    for rvq, (group, _) in zip(grvq.rvqs, groups, strict=True):
        rvq.load_state_dict(group.state_dict())
    return cast(nn.Module, grvq)
