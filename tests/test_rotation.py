"""The rotation trick: forward value q exactly, gradient λ·Rᵀ·g against autograd of the explicit d×d rotation,
the edges (zero and opposite vectors), the option on every code-vector quantizer, and parity with vqp."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vqkit.models import build_quantizer
from vqkit.quantizers import EMAVQ, VQ, FactorizedVQ, ResidualQuantizer, ResidualSimVQ, ResidualVQ, SimVQ
from vqkit.quantizers.rotation import rotation_trick
from vqkit.train.sections import QuantizerConfig
from vqkit.validation import ConfigError


def explicit_rotation(e: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """λ·R·e with R = I - 2rrᵀ + 2q̂êᵀ built as a (N, d, d) float64 matrix, R and λ detached (the paper's
    definition, written independently of vqkit); gradient flows to e only through the final product."""
    e64, q64 = e.double(), q.double()
    with torch.no_grad():
        e_hat, q_hat = F.normalize(e64, dim=-1), F.normalize(q64, dim=-1)
        r = F.normalize(e_hat + q_hat, dim=-1)
        eye = torch.eye(e.shape[-1], dtype=torch.float64)
        rot = eye - 2 * r.unsqueeze(-1) * r.unsqueeze(-2) + 2 * q_hat.unsqueeze(-1) * e_hat.unsqueeze(-2)
        lam = q64.norm(dim=-1, keepdim=True) / e64.norm(dim=-1, keepdim=True)
    return lam * (rot @ e64.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("d", [2, 3, 8, 64])
def test_gradient_is_autograd_of_the_explicit_rotation(d: int) -> None:
    g = torch.Generator().manual_seed(d)
    e = (torch.randn(200, d, generator=g) * 2).requires_grad_()
    q = torch.randn(200, d, generator=g) * torch.rand(200, 1, generator=g) * 3
    w = torch.randn(200, d, generator=g)
    out = rotation_trick(e, q)
    assert torch.equal(out, q)  # the forward value is q itself
    (grad,) = torch.autograd.grad((out * w).sum(), e)
    e64 = e.detach().double().requires_grad_()
    ref_out = explicit_rotation(e64, q)
    torch.testing.assert_close(ref_out, q.double(), rtol=1e-9, atol=1e-9)  # λRe = q: the paper's identity
    (ref,) = torch.autograd.grad((ref_out * w.double()).sum(), e64)
    torch.testing.assert_close(grad.double(), ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(grad, w)  # not the straight-through gradient


def test_rotation_preserves_the_gradient_norm_up_to_lambda() -> None:
    """R is orthogonal: ||∂L/∂e|| = λ·||g|| per token."""
    g = torch.Generator().manual_seed(1)
    e = torch.randn(64, 16, generator=g).requires_grad_()
    q = torch.randn(64, 16, generator=g) * 0.3
    w = torch.randn(64, 16, generator=g)
    (grad,) = torch.autograd.grad((rotation_trick(e, q) * w).sum(), e)
    lam = q.norm(dim=-1) / e.detach().norm(dim=-1)
    torch.testing.assert_close(grad.norm(dim=-1), lam * w.norm(dim=-1), rtol=1e-5, atol=1e-6)


def test_edges_give_no_nan() -> None:
    """e = 0: straight-through gradient; q = 0: zero gradient; e = -q: the reflection I - 2êêᵀ; a tiny e whose
    λ overflows float32: straight-through; |e| beyond float32's squared range: finite."""
    e = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [1.0, -2.0, 0.5], [1e-39, 0.0, 0.0], [3e20, 1e20, 0.0]])
    q = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [-2.0, 4.0, -1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    e.requires_grad_()
    w = torch.tensor([[1.0, -2.0, 3.0]]).expand(5, 3)
    out = rotation_trick(e, q)
    assert torch.equal(out, q)
    (grad,) = torch.autograd.grad((out * w).sum(), e)
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(grad[0], w[0])  # e = 0
    torch.testing.assert_close(grad[1], torch.zeros(3))  # q = 0: λ = 0
    e_hat = F.normalize(e.detach()[2], dim=0)
    reflected = 2.0 * (w[2] - 2 * e_hat * (e_hat @ w[2]))  # λ = ||q||/||e|| = 2
    torch.testing.assert_close(grad[2], reflected)
    torch.testing.assert_close(grad[3], w[3])  # λ ≈ 1.4e39: beyond float32
    e64 = e.detach()[4:].double().requires_grad_()
    (ref,) = torch.autograd.grad((explicit_rotation(e64, q[4:]) * w[4:].double()).sum(), e64)
    torch.testing.assert_close(grad[4:].double(), ref, rtol=1e-5, atol=1e-30)


# -- the option on the quantizers ---------------------------------------------------------------------
BUILDERS = {
    "vq": lambda g: VQ(8, 32, gradient=g),
    "vq_l2": lambda g: VQ(8, 32, l2_normalize=True, gradient=g),
    "emavq": lambda g: EMAVQ(8, 32, gradient=g),
    "factorized": lambda g: FactorizedVQ(12, 32, code_dim=6, gradient=g),
    "simvq": lambda g: SimVQ(8, 32, gradient=g),
    "rvq": lambda g: ResidualVQ(8, 32, 2, gradient=g),
    "rvq_grad": lambda g: ResidualVQ(8, 32, 2, ema=False, gradient=g),
    "rsimvq": lambda g: ResidualSimVQ(8, 32, 2, gradient=g),
}


def _lookup_pair(q: torch.nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(e, code) in the space the code lives in, for a single-stage quantizer."""
    if isinstance(q, FactorizedVQ):
        e = q._lookup_space(z)
        return e, F.normalize(q.codebook.detach()[q._search(e)], dim=-1)
    if isinstance(q, VQ) and q.l2_normalize:
        e = F.normalize(z, dim=-1)
        return e, F.normalize(q.codebook.detach()[q.encode(z)], dim=-1)
    return z, q.decode(q.encode(z))


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_option_changes_only_the_gradient(name: str) -> None:
    """Same outputs, indices, loss and codebook gradients as "ste"; the input gradient is the rotation's."""
    torch.manual_seed(0)
    ste = BUILDERS[name]("ste")
    torch.manual_seed(0)
    rot = BUILDERS[name]("rotation")
    rot.load_state_dict(ste.state_dict())
    z = torch.randn(4, 9, rot.dim, generator=torch.Generator().manual_seed(2)).requires_grad_()
    w = torch.randn(4, 9, rot.dim, generator=torch.Generator().manual_seed(3))
    outs, grads = [], []
    for q in (ste, rot):
        q.train()
        out = q(z)
        outs.append(out)
        grads.append(torch.autograd.grad((out.quantized * w).sum() + out.loss, [z, *q.parameters()],
                                         allow_unused=True))
    assert torch.equal(outs[0].quantized, outs[1].quantized)
    assert torch.equal(outs[0].indices, outs[1].indices)
    assert torch.equal(outs[0].loss, outs[1].loss)
    assert not torch.allclose(grads[0][0], grads[1][0])
    if isinstance(rot, ResidualQuantizer):
        return
    # parameters: only those before the lookup (FactorizedVQ's project_in) see the rotated gradient
    for (pname, _), g_ste, g_rot in zip(rot.named_parameters(), grads[0][1:], grads[1][1:], strict=True):
        if not pname.startswith("project_in"):
            torch.testing.assert_close(g_ste, g_rot, msg=pname)
    # the input gradient: the explicit rotation in the lookup space, chained through what precedes it
    q = rot
    zz = z.detach().clone().requires_grad_()
    e, code = _lookup_pair(q, zz)
    explicit = explicit_rotation(e, code).float()
    out = q.project_out(explicit) if isinstance(q, FactorizedVQ) else explicit
    (ref,) = torch.autograd.grad((out * w).sum(), zz)
    (only_out,) = torch.autograd.grad((q.train()(zz).quantized * w).sum(), zz)
    torch.testing.assert_close(only_out, ref, rtol=1e-4, atol=1e-5)


def test_default_is_ste_and_unknown_values_are_refused_by_name() -> None:
    for build in (lambda: VQ(8, 16), lambda: EMAVQ(8, 16), lambda: SimVQ(8, 16), lambda: FactorizedVQ(8, 16)):
        assert build().gradient == "ste"
    for build in (lambda: VQ(8, 16, gradient="rot"), lambda: EMAVQ(8, 16, gradient="STE"),
                  lambda: SimVQ(8, 16, gradient=None), lambda: FactorizedVQ(8, 16, gradient="rotate")):
        with pytest.raises(ValueError, match=r"invalid gradient = .*'ste' or 'rotation'"):
            build()
    with pytest.raises(ValueError, match=r"invalid gradient"):
        ResidualVQ(8, 16, 2, gradient="bogus")


def test_option_flows_through_configs() -> None:
    for name in ("vq", "emavq", "simvq", "factorized", "rvq", "rsimvq"):
        q = build_quantizer(name, {"dim": 8, "codebook_size": 16, "gradient": "rotation",
                                   **({"num_stages": 2} if name.startswith("r") else {})})
        stages = list(q.stages) if isinstance(q, ResidualQuantizer) else [q]
        assert all(s.gradient == "rotation" for s in stages), name
    with pytest.raises(ValueError, match=r"gradient"):
        build_quantizer("vq", {"dim": 8, "codebook_size": 16, "gradient": "rotations"})
    with pytest.raises(ConfigError, match=r"args.gradient = 'rotations'"):
        QuantizerConfig("simvq", {"dim": 8, "codebook_size": 16, "gradient": "rotations"})
    QuantizerConfig("vq", {"dim": 8, "codebook_size": 16, "gradient": "rotation"})


# -- parity with vector-quantize-pytorch ---------------------------------------------------------------
vqp = pytest.importorskip("vector_quantize_pytorch", reason="vector-quantize-pytorch (vqp) is not installed")


@pytest.mark.parametrize("cosine", [False, True])
def test_vqp_vector_quantize_rotation_trick_parity(cosine: bool) -> None:
    """vqp's VectorQuantize(rotation_trick=True) and vqkit's quantizer with the same codebook: the same indices,
    outputs and input gradients (vqp's EMA codebook; cosine = vqp's use_cosine_sim = vqkit's l2_normalize)."""
    torch.manual_seed(0)
    ref = vqp.VectorQuantize(dim=16, codebook_size=64, rotation_trick=True, use_cosine_sim=cosine).train()
    codebook = ref._codebook.embed.detach()[0].clone()
    ours: torch.nn.Module
    if cosine:
        ours = VQ(16, 64, l2_normalize=True, gradient="rotation")
        ours.codebook.data.copy_(codebook)
    else:
        ours = EMAVQ(16, 64, gradient="rotation")
        ours.codebook.copy_(codebook)
    x = (torch.randn(4, 256, 16, generator=torch.Generator().manual_seed(1)) * 0.7).requires_grad_()
    w = torch.randn(4, 256, 16, generator=torch.Generator().manual_seed(2))
    quantized, indices, _ = ref(x, freeze_codebook=True)
    (ref_grad,) = torch.autograd.grad((quantized * w).sum(), x)
    out = ours.train()(x)
    (grad,) = torch.autograd.grad((out.quantized * w).sum(), x)
    assert torch.equal(out.indices, indices)
    torch.testing.assert_close(out.quantized, quantized, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-5)


def test_vqp_simvq_rotation_trick_parity() -> None:
    """vqp's SimVQ (rotation trick on by default, W without bias) and vqkit's SimVQ(gradient="rotation") with the
    same frozen codebook and W: the same indices, outputs and input gradients."""
    torch.manual_seed(0)
    ref = vqp.SimVQ(dim=16, codebook_size=64).train()
    ours = SimVQ(16, 64, gradient="rotation")
    ours.codebook.copy_(ref.frozen_codebook)
    ours.linear.weight.data.copy_(ref.code_transform.weight)
    ours.linear.bias.data.zero_()
    x = torch.randn(2, 128, 16, generator=torch.Generator().manual_seed(1)).requires_grad_()
    w = torch.randn(2, 128, 16, generator=torch.Generator().manual_seed(2))
    quantized, indices, _ = ref(x)
    (ref_grad,) = torch.autograd.grad((quantized * w).sum(), x)
    out = ours.train()(x)
    (grad,) = torch.autograd.grad((out.quantized * w).sum(), x)
    assert torch.equal(out.indices, indices)
    torch.testing.assert_close(out.quantized, quantized, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-5)
