"""SimVQ: frozen codebook C, trainable linear W, every code moves (Fig. 2 in miniature)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vqkit.quantizers import VQ, SimVQ


def _adam_steps(q: torch.nn.Module, steps: int, lr: float = 1e-2, seed: int = 0) -> None:
    q.train()
    opt = torch.optim.Adam([p for p in q.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        z = torch.randn(64, q.dim, generator=g) + 1.0
        out = q(z)
        opt.zero_grad()
        out.loss.backward()
        opt.step()


def test_frozen_codebook_is_a_buffer() -> None:
    torch.manual_seed(0)
    q = SimVQ(16, 128)
    params = dict(q.named_parameters())
    assert "codebook" not in params
    assert "codebook" in dict(q.named_buffers())
    assert not q.codebook.requires_grad
    assert set(params) == {"linear.weight", "linear.bias"}
    assert q.linear.weight.shape == (16, 16)
    assert "codebook" in q.state_dict()  # decoding needs it


def test_codebook_bit_identical_after_adam_and_w_changes() -> None:
    torch.manual_seed(0)
    q = SimVQ(16, 128)
    c0 = q.codebook.clone()
    w0, b0 = q.linear.weight.detach().clone(), q.linear.bias.detach().clone()
    codes0 = q.codes().clone()
    _adam_steps(q, steps=5)
    assert q.codebook.grad is None
    assert torch.equal(q.codebook, c0)
    assert not torch.equal(q.linear.weight.detach(), w0)
    assert not torch.equal(q.linear.bias.detach(), b0)
    moved = (q.codes() - codes0).norm(dim=1)
    assert (moved > 1e-6).all(), f"{int((moved <= 1e-6).sum())} codes did not move"


def test_train_codebook_ablation_makes_c_a_parameter() -> None:
    torch.manual_seed(0)
    q = SimVQ(8, 32, train_codebook=True)
    assert "codebook" in dict(q.named_parameters())
    c0 = q.codebook.detach().clone()
    _adam_steps(q, steps=3)
    assert not torch.equal(q.codebook.detach(), c0)


def test_codes_search_decode_and_loss() -> None:
    torch.manual_seed(0)
    q = SimVQ(8, 64, beta=0.25)
    codes = q.codes()
    torch.testing.assert_close(codes, q.codebook @ q.linear.weight.t() + q.linear.bias)
    assert not codes.requires_grad
    z = torch.randn(4, 6, 8, requires_grad=True)
    out = q(z)
    ref = torch.cdist(z.detach().reshape(-1, 8).double(), codes.double()).argmin(1).reshape(4, 6)
    assert torch.equal(out.indices, ref)
    torch.testing.assert_close(out.quantized, codes[out.indices])
    torch.testing.assert_close(out.loss, 1.25 * F.mse_loss(z.detach(), codes[out.indices]))
    q.eval()
    torch.testing.assert_close(q.decode(out.indices), codes[out.indices])  # decode applies W
    out.loss.backward()
    assert q.linear.weight.grad is not None and q.linear.weight.grad.abs().sum() > 0


def test_codebook_scale() -> None:
    torch.manual_seed(0)
    q = SimVQ(64, 4096)
    assert q.codebook.std().item() == pytest.approx(64**-0.5, rel=0.05)


def test_uniform_init_ablation() -> None:
    """Table 4's uniform row: C uniform with the Gaussian's std d^-1/2, still frozen, every code moves."""
    torch.manual_seed(0)
    q = SimVQ(16, 4096, init="uniform")
    assert q.codebook.abs().max().item() <= (3 / 16) ** 0.5
    assert q.codebook.abs().max().item() > 0.95 * (3 / 16) ** 0.5  # uniform fills its range, Gaussian would not stop
    assert q.codebook.std().item() == pytest.approx(16**-0.5, rel=0.05)
    assert "codebook" in dict(q.named_buffers())
    codes0 = q.codes().clone()
    _adam_steps(q, steps=3)
    assert ((q.codes() - codes0).norm(dim=1) > 0).all()
    with pytest.raises(ValueError, match=r"SimVQ: invalid init = .normal."):
        SimVQ(16, 256, init="normal")  # type: ignore[arg-type]


# -- Fig. 2 in miniature --------------------------------------------------------------------
def _two_clusters(seed: int, per_cluster: int = 10) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(per_cluster, 2, generator=g) + torch.tensor([2.0, 2.0])
    b = torch.randn(per_cluster, 2, generator=g) + torch.tensor([-2.0, -2.0])
    return torch.cat([a, b])


def _fit(q: torch.nn.Module, targets: torch.Tensor, steps: int = 100) -> set[int]:
    opt = torch.optim.Adam(q.parameters(), lr=1e-2)
    used: set[int] = set()
    for _ in range(steps):
        out = q(targets)
        used |= set(out.indices.tolist())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    return used


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_toy_vq_updates_few_codes_simvq_updates_all(seed: int) -> None:
    targets = _two_clusters(seed)

    torch.manual_seed(seed)
    vq = VQ(2, 10)
    vq.codebook.data = torch.randn(10, 2)  # N(0, I) as in the toy
    before = vq.codebook.detach().clone()
    used = _fit(vq, targets)
    vq_moved = int(((vq.codebook.detach() - before).norm(dim=1) > 1e-4).sum())

    torch.manual_seed(seed)
    sim = SimVQ(2, 10, train_codebook=False)
    before_sim = sim.codes().clone()
    _fit(sim, targets)
    sim_moved = int(((sim.codes() - before_sim).norm(dim=1) > 1e-4).sum())

    assert vq_moved == len(used)  # exactly the codes ever selected move (disjoint optimisation)
    assert vq_moved < 10
    assert vq_moved <= 7
    assert sim_moved == 10


# -- which side each loss term reaches --------------------------------------------------------------
@pytest.mark.parametrize("beta", [0.0, 0.25, 0.7])
@pytest.mark.parametrize("train_codebook", [False, True])
def test_gradient_sides(beta: float, train_codebook: bool) -> None:
    """SimVQ: ||q - sg(z)||² (weight 1) trains W (and C when trainable) only; beta·||z - sg(q)||² is the
    commitment and the only gradient z gets. The loss value, 1.25·mse at beta = 0.25, cannot tell a swap."""
    torch.manual_seed(0)
    q = SimVQ(8, 64, beta=beta, train_codebook=train_codebook)
    z = torch.randn(4, 6, 8, requires_grad=True)
    out = q(z)
    wanted = [z, q.linear.weight, q.linear.bias] + ([q.codebook] if train_codebook else [])
    grads = torch.autograd.grad(out.loss, wanted)
    gz, gw, gb = grads[:3]
    idx = out.indices.reshape(-1)
    c = q.codebook.detach()[idx]  # (N, 8) rows of C
    codes = q.codes()[idx]  # W(C) rows, as quantized
    flat_z = z.detach().reshape(-1, 8)
    n = z.numel()
    torch.testing.assert_close(gz.reshape(-1, 8), beta * 2 * (flat_z - codes) / n, rtol=1e-6, atol=0)
    if beta == 0:
        assert torch.equal(gz, torch.zeros_like(z))
    dq = 2 * (codes - flat_z) / n  # codebook term, independent of beta
    torch.testing.assert_close(gw, dq.t() @ c, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(gb, dq.sum(0), rtol=1e-5, atol=1e-8)
    if train_codebook:
        expected = torch.zeros(64, 8).index_add_(0, idx, dq @ q.linear.weight.detach())
        torch.testing.assert_close(grads[3], expected, rtol=1e-5, atol=1e-8)
