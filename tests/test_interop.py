"""vqp ⇄ vqkit: trained vqp modules convert to vqkit quantizers with the same outputs, indices, losses and
gradients; round trips keep every tensor; options vqkit cannot reproduce are refused by name."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from vqkit.interop import ConversionError, from_vqp, to_vqp
from vqkit.quantizers import (
    BSQ,
    EMAVQ,
    FSQ,
    LFQ,
    VQ,
    FactorizedVQ,
    GroupedQuantizer,
    Quantizer,
    ResidualFSQ,
    ResidualQuantizer,
    ResidualSimVQ,
    ResidualVQ,
    SimVQ,
)

vqp = pytest.importorskip("vector_quantize_pytorch",
                          reason="vector-quantize-pytorch (the test extra) is not installed; the vqp parity tests "
                          "need it")


def dim_of(m: Any) -> int:
    if hasattr(m, "layers"):
        return dim_of(m.layers[0])
    return int(m.code_transform.out_features if hasattr(m, "code_transform") else m.dim)


def run_vqp(m: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(quantized, indices, total loss) of any vqp module; grouped indices (G, ..., S) as vqkit's (..., G·S)."""
    out = m(x)
    if isinstance(m, vqp.FSQ):
        return out[0], out[1].long(), x.new_zeros(())
    indices = out[1].movedim(0, -2).flatten(-2) if isinstance(m, vqp.GroupedResidualVQ) else out[1]
    return out[0], indices.long(), out[2].sum()


# each case: vqp constructor, input scale, pairs of (vqp tensor, vqkit tensor) whose gradients must agree,
# tolerance of the loss (vqp's LFQ entropy clamps p at 1e-5 inside the log; vqkit's is exact)
Pairs = Callable[[Any, Any], list[tuple[Tensor, Tensor]]]


def leaves(m: Any) -> list[Any]:
    """The single quantizers of a vqp module or a vqkit quantizer, in group-major, stage order."""
    for name in ("rvqs", "layers", "inner", "stages"):
        if isinstance(getattr(m, name, None), nn.ModuleList):
            return [leaf for child in getattr(m, name) for leaf in leaves(child)]
    return [m]


def linear_pairs(m: Any, q: Any) -> list[tuple[Tensor, Tensor]]:
    if isinstance(m.project_in, nn.Identity):
        return []
    return [(a.grad, b.grad) for a, b in ((m.project_in.weight, q.project_in.weight), (m.project_in.bias,
            q.project_in.bias), (m.project_out.weight, q.project_out.weight), (m.project_out.bias, q.project_out.bias))]


def vq_pairs(m: Any, q: Any) -> list[tuple[Tensor, Tensor]]:
    """(vqp gradient, vqkit gradient) of every trained codebook tensor, after backward (multi-head: one per head)."""
    layers, stages = leaves(m), leaves(q)
    if len(layers) == 1 and len(stages) > 1:  # multi-head VectorQuantize: head h <-> group h (or one shared)
        embed = layers[0]._codebook.embed
        return [(embed.grad[h], stage.codebook.grad) for h, stage in enumerate(stages)] if embed.requires_grad else []
    pairs = []
    for layer, stage in zip(layers, stages, strict=True):
        if hasattr(layer, "code_transform"):
            pairs.append((layer.code_transform.weight.grad, stage.linear.weight.grad))
            if layer.code_transform.bias is not None:
                pairs.append((layer.code_transform.bias.grad, stage.linear.bias.grad))
        elif layer._codebook.learnable_codebook:
            pairs.append((layer._codebook.embed.grad, stage.codebook.grad))
    return pairs


CASES: dict[str, tuple[Callable[[], nn.Module], float, Pairs, float]] = {
    "fsq": (lambda: vqp.FSQ(levels=[8, 5, 5, 5]), 1.5, linear_pairs, 0.0),
    "fsq_symmetric": (lambda: vqp.FSQ(levels=[7, 4, 2], preserve_symmetry=True), 1.5, linear_pairs, 0.0),
    "fsq_projection": (lambda: vqp.FSQ(levels=[8, 5, 5], dim=12), 1.0, linear_pairs, 0.0),
    "lfq": (lambda: vqp.LFQ(dim=10, commitment_loss_weight=0.25), 1.0, linear_pairs, 2e-3),
    "lfq_projection": (lambda: vqp.LFQ(dim=16, codebook_size=2**8), 1.0, linear_pairs, 2e-3),
    "bsq": (lambda: vqp.LFQ(dim=8, spherical=True, commitment_loss_weight=0.25), 1.0, linear_pairs, 2e-3),
    "bsq_projection": (lambda: vqp.LFQ(dim=12, codebook_size=2**6, spherical=True), 1.0, linear_pairs, 2e-3),
    "vq_ema": (lambda: vqp.VectorQuantize(dim=8, codebook_size=32, decay=0.9, rotation_trick=False), 1.0, vq_pairs, 0),
    "vq_ema_dead_codes": (lambda: vqp.VectorQuantize(dim=8, codebook_size=64, rotation_trick=False,
                                                     threshold_ema_dead_code=1.5, commitment_weight=0.5),
                          1.0, vq_pairs, 0.0),
    "vq_learnable": (lambda: vqp.VectorQuantize(dim=8, codebook_size=32, ema_update=False, learnable_codebook=True,
                                                rotation_trick=False), 1.0, vq_pairs, 0.0),
    "rvq_ema": (lambda: vqp.ResidualVQ(dim=8, num_quantizers=3, codebook_size=16, rotation_trick=False), 1.0,
                vq_pairs, 0.0),
    "rvq_learnable_sizes": (lambda: vqp.ResidualVQ(dim=8, num_quantizers=2, codebook_size=(32, 16), ema_update=False,
                                                   learnable_codebook=True, rotation_trick=False), 1.0, vq_pairs, 0.0),
    "rvq_attached_residual": (lambda: vqp.ResidualVQ(dim=8, num_quantizers=2, codebook_size=16, ema_update=False,
                                                     learnable_codebook=True, rotation_trick=False,
                                                     quant_grad_frac=1.0), 1.0, vq_pairs, 0.0),
    "simvq": (lambda: vqp.SimVQ(dim=8, codebook_size=64, rotation_trick=False), 1.0, vq_pairs, 0.0),
    "simvq_bias": (lambda: vqp.SimVQ(dim=8, codebook_size=64, rotation_trick=False, codebook_transform=nn.Linear(8, 8)),
                   1.0, vq_pairs, 0.0),
    "rsimvq": (lambda: vqp.ResidualSimVQ(dim=8, num_quantizers=2, codebook_size=32, rotation_trick=False), 1.0,
               vq_pairs, 0.0),
    # the rotation trick: vqp's default for VectorQuantize (dim > 1), SimVQ and ResidualSimVQ
    "vq_ema_rotation": (lambda: vqp.VectorQuantize(dim=8, codebook_size=32, decay=0.9), 1.0, vq_pairs, 0.0),
    "vq_learnable_rotation": (lambda: vqp.VectorQuantize(dim=8, codebook_size=32, ema_update=False,
                                                         learnable_codebook=True), 1.0, vq_pairs, 0.0),
    "rvq_ema_rotation": (lambda: vqp.ResidualVQ(dim=8, num_quantizers=3, codebook_size=16), 1.0, vq_pairs, 0.0),
    "rvq_attached_rotation": (lambda: vqp.ResidualVQ(dim=8, num_quantizers=2, codebook_size=16, ema_update=False,
                                                     learnable_codebook=True, quant_grad_frac=1.0), 1.0, vq_pairs, 0.0),
    "simvq_rotation": (lambda: vqp.SimVQ(dim=8, codebook_size=64), 1.0, vq_pairs, 0.0),
    "rsimvq_rotation": (lambda: vqp.ResidualSimVQ(dim=8, num_quantizers=2, codebook_size=32), 1.0, vq_pairs, 0.0),
    # grouped: multi-head VectorQuantize (codebook_dim = dim / heads) and GroupedResidualVQ
    "heads_ema": (lambda: vqp.VectorQuantize(dim=8, codebook_size=32, heads=2, codebook_dim=4, decay=0.9,
                                             separate_codebook_per_head=True, commitment_weight=0.5),
                  1.0, vq_pairs, 0.0),
    "heads_ema_shared": (lambda: vqp.VectorQuantize(dim=12, codebook_size=32, heads=3, codebook_dim=4, decay=0.9,
                                                    rotation_trick=False), 1.0, vq_pairs, 0.0),
    "heads_learnable_rotation": (lambda: vqp.VectorQuantize(dim=8, codebook_size=32, heads=2, codebook_dim=4,
                                                            separate_codebook_per_head=True, ema_update=False,
                                                            learnable_codebook=True, commitment_weight=2.0),
                                 1.0, vq_pairs, 0.0),
    "heads_learnable_shared": (lambda: vqp.VectorQuantize(dim=6, codebook_size=16, heads=3, codebook_dim=2,
                                                          ema_update=False, learnable_codebook=True,
                                                          commitment_weight=3.0), 1.0, vq_pairs, 0.0),
    "grouped_rvq_ema": (lambda: vqp.GroupedResidualVQ(dim=8, groups=2, num_quantizers=2, codebook_size=16,
                                                      decay=0.9), 1.0, vq_pairs, 0.0),
    "grouped_rvq_learnable": (lambda: vqp.GroupedResidualVQ(dim=12, groups=3, num_quantizers=2, codebook_size=(16, 8),
                                                            ema_update=False, learnable_codebook=True,
                                                            rotation_trick=False), 1.0, vq_pairs, 0.0),
}


def trained(name: str) -> tuple[nn.Module, float]:
    """The vqp module of case ``name`` after a few training steps (EMA statistics, codebooks, projections moved)."""
    build, scale, _, _ = CASES[name]
    torch.manual_seed(0)
    m = build().train()
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.5) if params else None
    for _ in range(4):
        x = torch.randn(4, 32, dim_of(m)) * scale
        quantized, _, loss = run_vqp(m, x)
        if opt is not None:
            opt.zero_grad()
            (loss + (quantized - 0.7 * x).pow(2).mean()).backward()
            opt.step()
    m.zero_grad(set_to_none=True)
    return m, scale


@pytest.mark.parametrize("name", list(CASES))
def test_converted_module_gives_identical_outputs_indices_and_gradients(name: str) -> None:
    m, scale = trained(name)
    q = from_vqp(m)
    assert isinstance(q, Quantizer) and q.training
    x = torch.randn(3, 40, dim_of(m), generator=torch.Generator().manual_seed(1)) * scale
    # eval: the very same values
    m.eval(), q.eval()
    with torch.no_grad():
        ref_q, ref_i, _ = run_vqp(m, x)
        out = q(x)
    assert torch.equal(out.indices, ref_i)
    torch.testing.assert_close(out.quantized, ref_q, rtol=0, atol=1e-6)
    assert torch.equal(q.encode(x), ref_i)
    torch.testing.assert_close(q.decode(ref_i), ref_q, rtol=0, atol=1e-6)
    # train: one step of each on the same input, gradients of the same objective
    m.train(), q.train()
    _, _, pairs_of, loss_tol = CASES[name]
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ref_q, ref_i, ref_loss = run_vqp(m, xa)
    out = q(xb)
    assert torch.equal(out.indices, ref_i)
    torch.testing.assert_close(out.quantized, ref_q, rtol=0, atol=1e-6)
    # vqp's learnable codebook: loss = w·mse(q, x) (one term, gradient to both sides); vqkit's VQ: mse(q, sg(x)) +
    # beta·mse(sg(q), x): with w = beta = 1 the same gradients, and twice the value
    factor = 2.0 if "learnable" in name or "attached" in name else 1.0
    # (grouped: vqp sums its stacked (G, S) losses, vqkit group by group: float32 rounding, rtol 1e-6)
    torch.testing.assert_close(out.loss, factor * ref_loss, rtol=max(loss_tol, 1e-6), atol=1e-7)
    target = torch.randn_like(x)
    ((ref_q * target).sum() + ref_loss).backward()
    ((out.quantized * target).sum() + out.loss).backward()
    grad_tol = 1e-3 if loss_tol else 1e-5
    torch.testing.assert_close(xb.grad, xa.grad, rtol=grad_tol, atol=grad_tol)
    pairs = pairs_of(m, q)
    assert bool(pairs) == any(p.requires_grad for p in m.parameters())
    for a, b in pairs:
        torch.testing.assert_close(b, a.reshape(b.shape), rtol=grad_tol, atol=grad_tol * 0.1)
    # the EMA step both took from that batch leaves the same codebooks (float64 vs float32 sums: rounding)
    if "ema" in name and "dead" not in name:
        layers, stages = leaves(m), leaves(q)
        if len(layers) == 1:  # multi-head: codebook h of the one vqp codebook (one shared: codebook 0)
            layers = layers * len(stages)
        for h, (layer, stage) in enumerate(zip(layers, stages, strict=True)):
            head = h if layer._codebook.embed.shape[0] > 1 else 0
            torch.testing.assert_close(stage.codebook, layer._codebook.embed[head], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(stage.cluster_size, layer._codebook.cluster_size[head], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(CASES))
def test_vqp_round_trip_keeps_every_tensor(name: str) -> None:
    m, _ = trained(name)
    back = to_vqp(from_vqp(m))
    assert type(back) is type(m) and back.training == m.training
    want, got = m.state_dict(), back.state_dict()
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        if key.endswith("embed_avg") and ("learnable" in name or "attached" in name):
            continue  # EMA state a learnable vqp codebook keeps but never reads (no EMA, no dead-code restart)
        assert torch.equal(got[key].to(value.dtype), value), key
    x = torch.randn(2, 24, dim_of(m))
    m.eval(), back.eval()
    with torch.no_grad():
        for a, b in zip(run_vqp(m, x), run_vqp(back, x), strict=True):
            assert torch.equal(a, b)


def vqkit_modules() -> dict[str, Callable[[], Quantizer]]:
    return {
        "fsq": lambda: FSQ([8, 5, 5, 5]),
        "fsq_symmetric_projection": lambda: FSQ([5, 2, 3], dim=7, symmetric=True),
        "lfq": lambda: LFQ(9, commitment_weight=0.1),
        "bsq": lambda: BSQ(12, bits=7, group_size=7),
        "vq": lambda: VQ(6, 40, beta=1.0),
        "emavq": lambda: EMAVQ(6, 40, decay=0.95, dead_code_threshold=0.5),
        "simvq": lambda: SimVQ(6, 40, beta=0.3),
        "rvq": lambda: ResidualVQ(6, 16, 3, detach_residual=True),
        "rvq_attached": lambda: ResidualVQ(6, 16, 2, ema=False, beta=1.0),
        "rsimvq": lambda: ResidualSimVQ(6, 16, 2, detach_residual=True),
        "vq_rotation": lambda: VQ(6, 40, beta=1.0, gradient="rotation"),
        "simvq_rotation": lambda: SimVQ(6, 40, gradient="rotation"),
        "grouped_emavq": lambda: GroupedQuantizer(lambda: EMAVQ(3, 16, decay=0.9, gradient="rotation"), 2),
        "grouped_vq_shared": lambda: GroupedQuantizer(lambda: VQ(2, 16, beta=1.0), 3, shared=True),
        "grouped_rvq": lambda: GroupedQuantizer(lambda: ResidualVQ(3, 8, 2, detach_residual=True,
                                                                   gradient="rotation"), 2),
    }


@pytest.mark.parametrize("name", list(vqkit_modules()))
def test_vqkit_round_trip_through_vqp(name: str) -> None:
    torch.manual_seed(0)
    q = vqkit_modules()[name]().train()
    q(torch.randn(64, q.dim))  # EMA state, running statistics: not the initial values
    back = from_vqp(to_vqp(q))
    assert type(back) is type(q) and gradients(back) == gradients(q)
    for key, value in q.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    x = torch.randn(30, q.dim)
    q.eval(), back.eval()
    assert torch.equal(back.encode(x), q.encode(x))
    assert torch.equal(back(x).quantized, q(x).quantized)


# -- refusals --------------------------------------------------------------------------------------------
REFUSED: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "heads_projection": (lambda: vqp.VectorQuantize(dim=8, codebook_size=16, heads=2, separate_codebook_per_head=True),
                         "codebook_dim: vqkit's VQ has no projection in or out (heads=2 convert without one"),
    "heads_learnable_weight": (lambda: vqp.VectorQuantize(dim=8, codebook_size=16, heads=2, codebook_dim=4,
                                                          ema_update=False, learnable_codebook=True),
                               "only commitment_weight=2, the number of heads"),
    "codebook_dim": (lambda: vqp.VectorQuantize(dim=8, codebook_size=16, codebook_dim=4, rotation_trick=False),
                     "codebook_dim"),
    "orthogonal_reg": (lambda: vqp.VectorQuantize(dim=8, codebook_size=16, orthogonal_reg_weight=1.0,
                                                  rotation_trick=False), "orthogonal_reg_weight"),
    "cosine": (lambda: vqp.VectorQuantize(dim=8, codebook_size=16, use_cosine_sim=True, rotation_trick=False),
               "use_cosine_sim"),
    "stochastic": (lambda: vqp.VectorQuantize(dim=8, codebook_size=16, stochastic_sample_codes=True,
                                              rotation_trick=False), "stochastic_sample_codes"),
    "kmeans_pending": (lambda: vqp.VectorQuantize(dim=8, codebook_size=16, kmeans_init=True, rotation_trick=False),
                       "kmeans_init"),
    "learnable_weight": (lambda: vqp.VectorQuantize(dim=8, codebook_size=16, ema_update=False, learnable_codebook=True,
                                                    commitment_weight=0.25, rotation_trick=False),
                         "commitment_weight=0.25"),
    "frozen_codebook": (lambda: vqp.VectorQuantize(dim=8, codebook_size=16, ema_update=False, rotation_trick=False),
                        "frozen-codebook"),
    "diversity": (lambda: vqp.VectorQuantize(dim=8, codebook_size=16, codebook_diversity_loss_weight=0.1,
                                             rotation_trick=False), "codebook_diversity_loss_weight"),
    "affine": (lambda: vqp.VectorQuantize(dim=8, codebook_size=16, affine_param=True, rotation_trick=False),
               "affine_param"),
    "image_fmap": (lambda: vqp.VectorQuantize(dim=8, codebook_size=16, accept_image_fmap=True, rotation_trick=False),
                   "channels-last"),
    "fsq_noise": (lambda: vqp.FSQ(levels=[5, 5], preserve_symmetry=True, noise_dropout=0.2), "noise_dropout"),
    "fsq_hard_clamp": (lambda: vqp.FSQ(levels=[5, 5], bound_hard_clamp=True), "bound_hard_clamp"),
    "fsq_codebooks": (lambda: vqp.FSQ(levels=[5, 5], num_codebooks=2), "num_codebooks"),
    "fsq_f16": (lambda: vqp.FSQ(levels=[5, 5], force_quantization_f32=False), "force_quantization_f32"),
    "fsq_rotation": (lambda: vqp.FSQ(levels=[5, 5], orthogonal_rotation=True), "orthogonal_rotation"),
    "lfq_soft_clamp": (lambda: vqp.LFQ(dim=6, soft_clamp_input_value=2.0), "soft_clamp_input_value"),
    "lfq_scale": (lambda: vqp.LFQ(dim=6, codebook_scale=0.5), "codebook_scale"),
    "lfq_frac": (lambda: vqp.LFQ(dim=6, frac_per_sample_entropy=0.5), "frac_per_sample_entropy"),
    "lfq_activation": (lambda: vqp.LFQ(dim=6, straight_through_activation=nn.Tanh()), "straight_through_activation"),
    "lfq_cosine_in": (lambda: vqp.LFQ(dim=12, codebook_size=2**6, cosine_sim_project_in=True), "cosine_sim_project_in"),
    "lfq_no_bias": (lambda: vqp.LFQ(dim=12, codebook_size=2**6, projection_has_bias=False), "projection_has_bias"),
    "lfq_codebooks": (lambda: vqp.LFQ(dim=12, num_codebooks=2, codebook_size=2**6), "num_codebooks"),
    "lfq_softplus": (lambda: vqp.LFQ(dim=6, experimental_softplus_entropy_loss=True),
                     "experimental_softplus_entropy_loss"),
    "simvq_mlp": (lambda: vqp.SimVQ(dim=8, codebook_size=16, rotation_trick=False,
                                    codebook_transform=nn.Sequential(nn.Linear(8, 8), nn.ReLU())),
                  "codebook_transform"),
    "simvq_weight": (lambda: vqp.SimVQ(dim=8, codebook_size=16, rotation_trick=False, commitment_weight=0.5),
                     "commitment_weight=0.5"),
    "rvq_dropout": (lambda: vqp.ResidualVQ(dim=8, num_quantizers=2, codebook_size=16, quantize_dropout=True,
                                           rotation_trick=False), "quantize_dropout"),
    "rvq_shared": (lambda: vqp.ResidualVQ(dim=8, num_quantizers=2, codebook_size=16, shared_codebook=True,
                                          rotation_trick=False), "shared_codebook"),
    "rvq_layer": (lambda: vqp.ResidualVQ(dim=8, num_quantizers=2, codebook_size=16, use_cosine_sim=True),
                  "ResidualVQ).layers[0]: cannot convert exactly: use_cosine_sim"),
    "rvq_frac": (lambda: vqp.ResidualVQ(dim=8, num_quantizers=2, codebook_size=16, quant_grad_frac=0.5,
                                        rotation_trick=False), "quant_grad_frac=0.5"),
    "residual_fsq": (lambda: vqp.ResidualFSQ(levels=[5, 5, 5], num_quantizers=2, dim=3), "L^-k"),
    "grouped_rfsq": (lambda: vqp.GroupedResidualFSQ(dim=6, groups=2, levels=[5, 5, 5], num_quantizers=2),
                     "from_vqp(GroupedResidualFSQ): vqp's ResidualFSQ soft-clamps"),
    "residual_lfq": (lambda: vqp.ResidualLFQ(dim=4, num_quantizers=2, codebook_size=16), "codebook_scale"),
    "grouped_rlfq": (lambda: vqp.GroupedResidualLFQ(dim=8, groups=2, num_quantizers=2, codebook_size=16),
                     "from_vqp(GroupedResidualLFQ): vqp's ResidualLFQ gives stage k the codes ±2^-k"),
    "grouped_rvq_layer": (lambda: vqp.GroupedResidualVQ(dim=8, groups=2, num_quantizers=2, codebook_size=16,
                                                        quantize_dropout=True), "rvqs[0]: cannot convert exactly: "
                          "quantize_dropout"),
    "grouped_rvq_fmap": (lambda: vqp.GroupedResidualVQ(dim=8, groups=2, num_quantizers=2, codebook_size=16,
                                                       accept_image_fmap=True), "accept_image_fmap=True"),
    "no_equivalent": (lambda: vqp.LatentQuantize(levels=[5, 5], dim=2), "no vqkit equivalent"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_options_without_a_vqkit_equivalent_are_refused_by_name(name: str) -> None:
    build, message = REFUSED[name]
    with pytest.raises(ConversionError, match=re.escape(message)):
        from_vqp(build())


def test_every_refused_option_is_named_at_once() -> None:
    m = vqp.VectorQuantize(dim=8, codebook_size=16, use_cosine_sim=True, orthogonal_reg_weight=1.0,
                           stochastic_sample_codes=True)
    with pytest.raises(ConversionError) as err:
        from_vqp(m)
    for name in ("use_cosine_sim", "orthogonal_reg_weight", "stochastic_sample_codes"):
        assert name in str(err.value)


def gradients(m: Any) -> list[str]:
    """Each leaf's gradient estimator, vqp's ``rotation_trick`` read as vqkit's ``gradient`` ("-": FSQ, LFQ)."""
    return [("rotation" if leaf.rotation_trick else "ste") if hasattr(leaf, "rotation_trick")
            else getattr(leaf, "gradient", "-") for leaf in leaves(m)]


@pytest.mark.parametrize("name", [n for n in CASES if "vq" in n or "heads" in n])
def test_rotation_trick_converts_both_ways(name: str) -> None:
    """rotation_trick ⇄ gradient="rotation" on every stage and head, both ways; and the setting matters: the
    converted module's input gradient is its estimator's, not the other one's (ordinary inputs only: vqp clamps
    norms at 1e-6 where vqkit falls back to straight-through at e = 0, README)."""
    m, _ = trained(name)
    q = from_vqp(m)
    (kind,) = set(gradients(m))
    assert kind == ("rotation" if "rotation" in name else kind)
    assert gradients(q) == [kind] * len(leaves(q))
    assert gradients(to_vqp(q)) == gradients(m)
    other = copy.deepcopy(q)
    for leaf in leaves(other):
        leaf.gradient = "ste" if kind == "rotation" else "rotation"
    x = torch.randn(2, 30, dim_of(m), generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    w = torch.randn(2, 30, dim_of(m), generator=torch.Generator().manual_seed(4))
    (grad,) = torch.autograd.grad((q(x).quantized * w).sum(), x)
    (grad_other,) = torch.autograd.grad((other(x).quantized * w).sum(), x)
    assert not torch.allclose(grad, grad_other, rtol=1e-3, atol=1e-4)


TO_VQP_REFUSED: dict[str, tuple[Callable[[], Quantizer], str]] = {
    "lfq_lsb": (lambda: LFQ(8, bit_order="lsb"), "bit_order='lsb'"),
    "lfq_temperature": (lambda: LFQ(8, temperature=0.5), "inv_temperature=2"),
    "lfq_factorized": (lambda: LFQ(8, codebook_entropy="factorized"), "codebook_entropy='factorized'"),
    "bsq_groups": (lambda: BSQ(12), "group_size=9"),
    "vq_beta": (lambda: VQ(8, 16), "beta=0.25"),
    "vq_cosine": (lambda: VQ(8, 16, beta=1.0, l2_normalize=True), "l2_normalize=True"),
    "emavq_kmeans": (lambda: EMAVQ(8, 16, kmeans_init=True), "kmeans_init"),
    "simvq_train_codebook": (lambda: SimVQ(8, 16, train_codebook=True), "train_codebook=True"),
    "rfsq": (lambda: ResidualFSQ([5, 5, 5], 2), "L^-k"),
    "rvq_scale": (lambda: ResidualVQ(8, 16, 2, "scale"), "conditioning='scale'"),
    "rsimvq_attached": (lambda: ResidualSimVQ(8, 16, 2), "detach_residual=False"),
    "rvq_mixed": (lambda: ResidualQuantizer([VQ(8, 16, beta=1.0), EMAVQ(8, 16)]), "one kind"),
    "factorized": (lambda: FactorizedVQ(8, 16), "no vqp equivalent"),
    "grouped_fsq": (lambda: GroupedQuantizer(lambda: FSQ([5, 5]), 2), "groups of ['FSQ']"),
    "grouped_simvq": (lambda: GroupedQuantizer(lambda: SimVQ(4, 16), 2), "groups of ['SimVQ']"),
    "grouped_rsimvq": (lambda: GroupedQuantizer(lambda: ResidualSimVQ(4, 16, 2, detach_residual=True), 2),
                       "no grouped ResidualSimVQ"),
    "grouped_shared_rvq": (lambda: GroupedQuantizer(lambda: ResidualVQ(4, 16, 2, detach_residual=True), 2,
                                                    shared=True), "shared=True with residual groups"),
    "grouped_head_beta": (lambda: GroupedQuantizer(lambda: VQ(4, 16), 2),
                          "inner[0]: cannot convert exactly: beta=0.25"),
    "grouped_mixed": (lambda: GroupedQuantizer(iter([EMAVQ(4, 16), EMAVQ(4, 16, decay=0.9)]).__next__, 2),
                      "groups with different codebook sizes or settings"),
}


@pytest.mark.parametrize("name", list(TO_VQP_REFUSED))
def test_vqkit_settings_vqp_lacks_are_refused_by_name(name: str) -> None:
    build, message = TO_VQP_REFUSED[name]
    with pytest.raises(ConversionError, match=re.escape(message)):
        to_vqp(build())


# -- token ids agree with vqp: FSQ grid and casting, LFQ bit order ---------------------------------------------
@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [7, 6, 4], [2, 3, 9]])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fsq_indices_and_codes_equal_vqps_on_every_cell(levels: list[int], dtype: torch.dtype) -> None:
    """A dense sweep through every cell boundary: the same indices, codes and implicit codebook (bf16 inputs are
    quantized in float32 by both)."""
    symmetric = 2 in levels
    m = vqp.FSQ(levels=levels, preserve_symmetry=symmetric).eval()
    q = FSQ(levels, symmetric=symmetric)
    sweep = torch.linspace(-4, 4, 4001)
    z = torch.stack([sweep.roll(17 * i) for i in range(len(levels))], dim=-1)[None].to(dtype)
    ref_codes, ref_idx = m(z)
    out = q(z)
    assert torch.equal(out.indices, ref_idx.long())
    assert torch.equal(out.quantized.float(), ref_codes.float())
    every = torch.arange(q.codebook_size)
    assert torch.equal(q.indices_to_codes(every), m.implicit_codebook)
    assert torch.equal(q.codes_to_indices(m.implicit_codebook), every)


def test_lfq_indices_equal_vqps_msb_first_and_reversed_lsb_first() -> None:
    m = vqp.LFQ(dim=9).eval()
    z = torch.randn(2, 300, 9)
    _, ref, _ = m(z)
    assert torch.equal(LFQ(9).encode(z), ref)
    lsb = LFQ(9, bit_order="lsb").encode(z)
    reversed_bits = sum(((lsb >> j) & 1) << (8 - j) for j in range(9))
    assert torch.equal(reversed_bits, ref)
    assert torch.equal(BSQ(9, bit_order="msb").encode(z), vqp.LFQ(dim=9, spherical=True).eval()(z)[1])


def test_google_reference_fsq_differs_in_its_bound_and_its_truncating_cast() -> None:
    """The FSQ paper's reference code (google-research fsq.ipynb, Appendix A.1) differs from vqp and vqkit in
    exactly two places, both measured here: (1) its bound uses (L-1)(1-eps)/2 and tan where vqp/vqkit use
    (L-1)(1+eps)/2 and atanh, which moves the cell boundaries by O(eps): indices differ only for inputs whose
    bounded value lies within L·eps of a rounding boundary; (2) codes_to_indexes casts the float sum to an
    integer without rounding, so codes that are not exact (bf16 codes k/3, k/5...) lose one: vqkit rounds first."""
    levels = torch.tensor([8, 5, 6])
    eps = 1e-3

    def google_bound(z: Tensor) -> Tensor:
        half = (levels - 1) * (1 - eps) / 2
        offset = torch.where(levels % 2 == 1, 0.0, 0.5)
        return torch.tanh(z + torch.tan(offset / half)) * half - offset

    def google_index(codes: Tensor) -> Tensor:
        basis = torch.cumprod(torch.tensor([1, *levels[:-1].tolist()]), 0)
        half_width = levels // 2
        return ((codes * half_width + half_width) * basis).sum(-1).to(torch.int64)  # truncation, as .astype(uint32)

    q = FSQ(levels.tolist())
    z = torch.linspace(-3, 3, 20001)[:, None].expand(-1, 3).contiguous()
    google_codes = google_bound(z).round() / (levels // 2)
    ours = q.quantize_codes(z)
    differ = (google_codes != ours).any(-1)
    assert 0 < int(differ.sum()) < 0.01 * len(z)  # (1): a few inputs, near boundaries only
    half = (levels - 1) * (1 + eps) / 2
    bounded = torch.tanh(z + torch.atanh(torch.where(levels % 2 == 0, 0.5, 0.0) / half)) * half - \
        torch.where(levels % 2 == 0, 0.5, 0.0)
    distance = ((bounded - bounded.floor()) - 0.5).abs()  # to the nearest rounding boundary k + 1/2
    assert bool((distance[differ].min(-1).values < levels.max() * eps).all())
    # (2): the same codes, once in bf16: truncation loses indices, rounding (vqkit, vqp) does not
    every = torch.arange(q.codebook_size)
    codes = q.indices_to_codes(every)
    assert torch.equal(google_index(codes), every)  # float32 codes of these levels happen to be exact
    codes16 = codes.bfloat16().float()
    assert not torch.equal(google_index(codes16), every)
    assert torch.equal(q.codes_to_indices(codes16), every)


def test_vqps_residual_fsq_is_symmetric_fsq_behind_a_clamp_and_fixed_scales() -> None:
    """Why from_vqp refuses vqp's ResidualFSQ, measured: its indices are those of vqkit's symmetric FSQ stages
    applied to atanh(clamp(r_k / s_k)), with r_0 = tanh(x/c)·c soft-clamped (c = 1 + 1/(L-1)) and fixed per-channel
    scales s_k = L^-k — none of which vqkit's ResidualFSQ (tanh bound, one learned or no scale per stage) has."""
    levels = [5, 5, 7]
    m = vqp.ResidualFSQ(levels=levels, num_quantizers=3, dim=3).eval()
    x = torch.randn(1, 500, 3) * 1.5
    _, ref = m(x)
    lv = torch.tensor(levels, dtype=torch.float32)
    c = 1 + 1 / (lv - 1)
    stage = FSQ(levels, symmetric=True)
    residual = torch.tanh(x / c) * c
    for k in range(3):
        scale = lv ** -k
        y = (residual / scale).clamp(-1 + 1e-6, 1 - 1e-6)
        idx = stage.encode(torch.atanh(y))
        assert torch.equal(idx, ref[..., k].long())
        residual = residual - stage.decode(idx) * scale
    ours = ResidualFSQ(levels, 3, symmetric=True).eval()  # same levels and grid, no clamp, no fixed scales
    assert not torch.equal(ours.encode(x), ref.long())
