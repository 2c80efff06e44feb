"""VQ, EMAVQ and FactorizedVQ: search, losses, EMA update, dead-code restart, k-means init."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vqkit.quantizers import EMAVQ, VQ, FactorizedVQ


def brute_nearest(z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    return torch.cdist(z.reshape(-1, z.shape[-1]).double(), codes.double()).argmin(dim=1).reshape(z.shape[:-1])


# -- VQ ---------------------------------------------------------------------------------
def test_vq_init_and_search() -> None:
    torch.manual_seed(0)
    q = VQ(8, 64)
    assert isinstance(q.codebook, torch.nn.Parameter) and q.codebook.shape == (64, 8)
    assert q.codebook.abs().max() <= 1 / 64  # U(-1/K, 1/K)
    q.codebook.data = torch.randn(64, 8)
    z = torch.randn(3, 5, 7, 8)
    out = q(z)
    assert torch.equal(out.indices, brute_nearest(z, q.codebook.detach()))
    torch.testing.assert_close(out.quantized, q.codebook.detach()[out.indices])


def test_vq_loss_and_codebook_gradient() -> None:
    torch.manual_seed(0)
    q = VQ(4, 32, beta=0.25)
    q.codebook.data = torch.randn(32, 4)
    z = torch.randn(10, 4, requires_grad=True)
    out = q(z)
    c = q.codebook.detach()[out.indices]
    mse = (z.detach() - c).pow(2).mean()
    torch.testing.assert_close(out.loss, 1.25 * mse)
    out.loss.backward()
    grad = q.codebook.grad
    assert grad is not None
    used = torch.zeros(32, dtype=torch.bool)
    used[out.indices] = True
    assert (grad[~used] == 0).all()  # only the selected codes get a gradient
    assert (grad[used].abs().sum(dim=1) > 0).all()
    # codebook term: d/dc mean((c - sg z)^2) ; commitment term: gradient to z with weight beta
    expected = torch.zeros(32, 4).index_add_(0, out.indices, 2 * (c - z.detach()) / z.numel())
    torch.testing.assert_close(grad, expected)
    torch.testing.assert_close(z.grad, 0.25 * 2 * (z.detach() - c) / z.numel())


def test_vq_l2_normalize() -> None:
    torch.manual_seed(0)
    q = VQ(8, 64, l2_normalize=True)
    q.codebook.data = torch.randn(64, 8)
    z = torch.randn(50, 8) * 3
    out = q(z)
    torch.testing.assert_close(out.quantized.norm(dim=-1), torch.ones(50))
    cos = F.normalize(z, dim=-1) @ F.normalize(q.codebook.detach(), dim=-1).t()
    assert torch.equal(out.indices, cos.argmax(dim=1))
    q.eval()
    torch.testing.assert_close(q.decode(out.indices), out.quantized)


# -- EMAVQ ------------------------------------------------------------------------------
def ema_reference(z, codebook, cluster_size, embed_sum, decay, eps):
    """Dense EMA update: one-hot matmul counts/sums, decay, Laplace smoothing (float64)."""
    z, codebook = z.double(), codebook.double()
    idx = torch.cdist(z, codebook).argmin(dim=1)
    onehot = F.one_hot(idx, codebook.shape[0]).double()
    counts, sums = onehot.sum(0), onehot.t() @ z
    cs = decay * cluster_size.double() + (1 - decay) * counts
    es = decay * embed_sum.double() + (1 - decay) * sums
    n = cs.sum()
    k = codebook.shape[0]
    smoothed = (cs + eps) / (n + k * eps) * n
    return idx, cs, es, es / smoothed.unsqueeze(1)


@pytest.mark.parametrize("decay", [0.0, 0.5, 0.99])
def test_emavq_update_matches_dense_reference(decay: float) -> None:
    torch.manual_seed(0)
    k, d = 16, 4
    q = EMAVQ(d, k, decay=decay, eps=1e-3, beta=0.3)
    cs0, es0 = torch.rand(k) * 3 + 0.5, torch.randn(k, d)
    q.cluster_size.copy_(cs0)
    q.embed_sum.copy_(es0)
    q.codebook.copy_(torch.randn(k, d))
    cb0 = q.codebook.clone()
    z = torch.randn(2, 50, d) * 1.5
    q.train()
    out = q(z)
    idx, cs, es, cb = ema_reference(z.reshape(-1, d), cb0, cs0, es0, decay, 1e-3)
    assert torch.equal(out.indices.reshape(-1), idx)
    tol = {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(q.cluster_size.double(), cs, **tol)
    torch.testing.assert_close(q.embed_sum.double(), es, **tol)
    torch.testing.assert_close(q.codebook.double(), cb, **tol)
    # output and loss use the codebook before the update
    torch.testing.assert_close(out.quantized, cb0[out.indices])
    torch.testing.assert_close(out.loss, 0.3 * (z - cb0[out.indices]).pow(2).mean())
    # a second step from the updated state still matches
    z2 = torch.randn(100, d)
    q(z2)
    _, cs2, es2, cb2 = ema_reference(z2, cb.float(), cs, es, decay, 1e-3)
    torch.testing.assert_close(q.codebook.double(), cb2, **tol)
    torch.testing.assert_close(q.cluster_size.double(), cs2, **tol)
    torch.testing.assert_close(q.embed_sum.double(), es2, **tol)


def test_emavq_codebook_is_not_trained_by_gradient() -> None:
    q = EMAVQ(4, 8)
    assert list(q.parameters()) == []
    assert {"codebook", "cluster_size", "embed_sum"} <= dict(q.named_buffers()).keys()


def test_emavq_eval_does_not_update() -> None:
    torch.manual_seed(0)
    q = EMAVQ(4, 8).eval()
    before = {k: v.clone() for k, v in q.state_dict().items()}
    q(torch.randn(64, 4) + 3)
    for k, v in q.state_dict().items():
        assert torch.equal(before[k], v), k


def test_emavq_dead_code_restart() -> None:
    torch.manual_seed(0)
    k, d = 16, 4
    q = EMAVQ(d, k, decay=0.99, dead_code_threshold=1.0)
    z = torch.randn(64, d) + 100.0  # far from every code: all tokens pick one code
    q.train()
    out = q(z)
    live = int(out.indices[0])
    assert (out.indices == live).all()
    dead = torch.ones(k, dtype=torch.bool)
    dead[live] = False
    # every dead code now equals some batch vector, and they are distinct rows of the batch
    match = (q.codebook[dead].unsqueeze(1) == z.unsqueeze(0)).all(dim=-1)  # (dead, N)
    assert match.any(dim=1).all()
    assert torch.unique(match.float().argmax(dim=1)).numel() == int(dead.sum())
    torch.testing.assert_close(q.cluster_size[dead], torch.full((k - 1,), 1.0))
    torch.testing.assert_close(q.embed_sum[dead], q.codebook[dead] * 1.0)
    # the live code is an EMA mean, not a batch vector
    assert not (q.codebook[live] == z).all(dim=-1).any()
    # restarted codes are now used: the next batch from the same region spreads over them
    q.eval()
    assert q(z).metrics["usage"].item() > 0.5


def test_emavq_no_restart_without_threshold() -> None:
    torch.manual_seed(0)
    q = EMAVQ(4, 16, dead_code_threshold=0.0)
    z = torch.randn(64, 4) + 100.0
    q.train()
    q(z)
    assert not (q.codebook.unsqueeze(1) == z.unsqueeze(0)).all(dim=-1).any()
    assert (q.codebook.norm(dim=1) < 50).sum() == 15


def _clusters(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(8, 4, generator=g) * 6
    return (centers.repeat_interleave(64, 0) + 0.3 * torch.randn(512, 4, generator=g))[torch.randperm(512, generator=g)]


def test_emavq_kmeans_init_lowers_error() -> None:
    z = _clusters(0)
    torch.manual_seed(0)
    rand = EMAVQ(4, 16).eval()
    torch.manual_seed(0)
    km = EMAVQ(4, 16, kmeans_init=True, kmeans_iters=10)
    assert not bool(km.initialized)
    km.train()
    km(z)
    assert bool(km.initialized)
    km.eval()
    err_rand = (rand(z).quantized - z).pow(2).mean()
    err_km = (km(z).quantized - z).pow(2).mean()
    assert err_km < 0.1 * err_rand
    assert err_km < 0.5  # 8 tight clusters, 16 codes: near the within-cluster variance (0.09)
    # k-means init happens once
    cb = km.codebook.clone()
    km.train()
    km(z + 50)  # far away: one code takes every token; a re-init would move all 16 codes
    moved = ((km.codebook - cb).norm(dim=1) > 0.5).sum()
    assert moved == 1


def test_emavq_validation() -> None:
    with pytest.raises(ValueError, match="decay"):
        EMAVQ(4, 8, decay=1.0)
    with pytest.raises(ValueError, match="codebook_size"):
        EMAVQ(4, 1)
    with pytest.raises(ValueError, match="codebook_size"):
        VQ(4, 1)


# -- FactorizedVQ ---------------------------------------------------------------------------
def test_factorized_vq_lookup() -> None:
    torch.manual_seed(0)
    q = FactorizedVQ(32, 128, code_dim=8)
    assert q.code_dim == 8 and q.codebook.shape == (128, 8)
    z = torch.randn(4, 9, 32)
    out = q(z)
    x = F.normalize(q.project_in(z), dim=-1)
    codes = F.normalize(q.codebook, dim=-1)
    assert torch.equal(out.indices, brute_nearest(x.detach(), codes.detach()))
    torch.testing.assert_close(out.quantized, q.project_out(codes[out.indices]))
    qn = codes[out.indices]
    expected = (qn - x).pow(2).mean() * 1.25
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert q.codebook.grad is not None and q.project_in.weight.grad is not None
    q.eval()
    torch.testing.assert_close(q.decode(out.indices), out.quantized.detach())


# -- which side each loss term reaches --------------------------------------------------------------
# Convention (van den Oord et al.): loss = ||sg(z) - q||² (codebook term, weight 1) + beta·||z - sg(q)||²
# (commitment). The codebook term must train only the codebook, the commitment only z; a swap of the
# weights keeps the loss value (their sum) and is caught only by the gradients.
BETAS = [0.0, 0.25, 0.7]


def normalize_vjp(v: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Gradient w.r.t. v of <g, v/|v|>: (g - (g·u)u)/|v| with u = v/|v| (rows), in float64."""
    v, g = v.double(), g.double()
    norm = v.norm(dim=-1, keepdim=True)
    u = v / norm
    return (g - (g * u).sum(-1, keepdim=True) * u) / norm


@pytest.mark.parametrize("beta", BETAS)
def test_vq_gradient_sides(beta: float) -> None:
    torch.manual_seed(0)
    q = VQ(4, 32, beta=beta)
    q.codebook.data = torch.randn(32, 4)
    z = torch.randn(10, 4, requires_grad=True)
    out = q(z)
    gz, gc = torch.autograd.grad(out.loss, [z, q.codebook])
    c = q.codebook.detach()[out.indices]
    n = z.numel()
    if beta == 0:
        assert torch.equal(gz, torch.zeros_like(z))  # no commitment: nothing reaches z
    torch.testing.assert_close(gz, beta * 2 * (z.detach() - c) / n, rtol=1e-6, atol=0)
    # the codebook gradient does not depend on beta
    expected = torch.zeros(32, 4).index_add_(0, out.indices, 2 * (c - z.detach()) / n)
    torch.testing.assert_close(gc, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("beta", BETAS)
def test_vq_l2_gradient_sides(beta: float) -> None:
    torch.manual_seed(1)
    q = VQ(6, 16, beta=beta, l2_normalize=True)
    q.codebook.data = torch.randn(16, 6)
    z = (torch.randn(12, 6) * 3).requires_grad_()
    out = q(z)
    gz, gc = torch.autograd.grad(out.loss, [z, q.codebook])
    x = F.normalize(z.detach(), dim=-1)
    raw = q.codebook.detach()[out.indices]
    u = F.normalize(raw, dim=-1)
    n = z.numel()
    torch.testing.assert_close(gz.double(), normalize_vjp(z.detach(), beta * 2 * (x - u) / n), rtol=1e-5, atol=1e-9)
    if beta == 0:
        assert torch.equal(gz, torch.zeros_like(z))
    expected = torch.zeros(16, 6, dtype=torch.float64).index_add_(0, out.indices, normalize_vjp(raw, 2 * (u - x) / n))
    torch.testing.assert_close(gc.double(), expected, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("beta", BETAS)
def test_emavq_commitment_is_the_only_gradient(beta: float) -> None:
    torch.manual_seed(0)
    q = EMAVQ(4, 16, beta=beta).eval()
    z = torch.randn(20, 4, requires_grad=True)
    out = q(z)
    (gz,) = torch.autograd.grad(out.loss, [z])
    c = q.codebook[out.indices]
    torch.testing.assert_close(gz, beta * 2 * (z.detach() - c) / z.numel(), rtol=1e-6, atol=0)
    assert not q.codebook.requires_grad


@pytest.mark.parametrize("beta", BETAS)
def test_factorized_vq_gradient_sides(beta: float) -> None:
    """Codebook term -> codebook only; commitment -> project_in (and z) only; project_out gets nothing."""
    torch.manual_seed(2)
    q = FactorizedVQ(12, 32, code_dim=4, beta=beta)
    z = torch.randn(3, 7, 12, requires_grad=True)
    out = q(z)
    params = [z, q.codebook, q.project_in.weight, q.project_in.bias, q.project_out.weight]
    gz, gc, gw, gb, gout = torch.autograd.grad(out.loss, params, allow_unused=True)
    assert gout is None  # the loss never reaches project_out
    y = q.project_in(z.detach()).detach().reshape(-1, 4)
    x = F.normalize(y, dim=-1)
    idx = out.indices.reshape(-1)
    raw = q.codebook.detach()[idx]
    u = F.normalize(raw, dim=-1)
    n = x.numel()  # the loss lives in the 4-d lookup space
    dy = normalize_vjp(y, beta * 2 * (x - u) / n)  # commitment, through the normalisation
    torch.testing.assert_close(gw.double(), dy.t() @ z.detach().reshape(-1, 12).double(), rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(gb.double(), dy.sum(0), rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(gz.double().reshape(-1, 12), dy @ q.project_in.weight.detach().double(),
                               rtol=1e-5, atol=1e-9)
    if beta == 0:
        assert torch.equal(gw, torch.zeros_like(gw)) and torch.equal(gz, torch.zeros_like(gz))
    expected = torch.zeros(32, 4, dtype=torch.float64).index_add_(0, idx, normalize_vjp(raw, 2 * (u - x) / n))
    torch.testing.assert_close(gc.double(), expected, rtol=1e-5, atol=1e-9)


# -- EMA statistics: float64 sums, never updated from a non-finite statistic -----------------------
def _ema_reference(q: EMAVQ, z: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(cluster_size, embed_sum, codebook) after one EMA step, dense and in float64."""
    onehot = F.one_hot(indices.reshape(-1), q.codebook_size).double()
    flat = z.reshape(-1, q.dim).double()
    cs = q.cluster_size.double() * q.decay + onehot.sum(0) * (1 - q.decay)
    es = q.embed_sum.double() * q.decay + (onehot.t() @ flat) * (1 - q.decay)
    total = cs.sum()
    smoothed = (cs + q.eps) / (total + q.codebook_size * q.eps) * total
    return cs, es, es / smoothed.unsqueeze(1)


def test_emavq_sums_that_overflow_float32_are_exact() -> None:
    """64 tokens of 3e38: their float32 sum is inf; in float64 the EMA (0.01 of it) is a float32."""
    torch.manual_seed(0)
    q = EMAVQ(4, 8, decay=0.99).train()
    z = torch.full((64, 4), 3e38)
    indices = q.encode(z)
    cs, es, cb = _ema_reference(q, z, indices)
    assert torch.isfinite(es.float()).all() and not torch.isfinite(z.sum(0)).all()
    q(z)
    assert q.skipped_updates.item() == 0
    torch.testing.assert_close(q.cluster_size.double(), cs, rtol=1e-6, atol=0)
    torch.testing.assert_close(q.embed_sum.double(), es, rtol=1e-6, atol=0)
    torch.testing.assert_close(q.codebook.double(), cb, rtol=1e-6, atol=0)


def test_emavq_skips_an_update_that_would_not_be_finite() -> None:
    torch.manual_seed(0)
    q = EMAVQ(4, 8, decay=0.5).train()
    ref = EMAVQ(4, 8, decay=0.5).train()
    ref.load_state_dict(q.state_dict())
    assert "skipped_updates" not in q.state_dict()  # checkpoints keep their keys
    state = {k: v.clone() for k, v in q.state_dict().items()}
    out = q(torch.full((64, 4), 3e38))  # 0.5 of the sum is beyond float32
    assert torch.isfinite(out.quantized).all()
    for k, v in q.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert q.skipped_updates.item() == 1
    for seed in (1, 2):  # later batches update as if the huge one had never come
        z = torch.randn(32, 4, generator=torch.Generator().manual_seed(seed))
        q(z)
        ref(z)
    for k, v in q.state_dict().items():
        assert torch.equal(v, ref.state_dict()[k]), k
    assert q.skipped_updates.item() == 1


def test_emavq_nan_batch_leaves_the_codebook_alone_with_check_finite_off() -> None:
    torch.manual_seed(0)
    q = EMAVQ(4, 8, dead_code_threshold=1.5, check_finite=False).train()
    q.cluster_size.fill_(0.5)  # every code dead: all restarted from the batch's rows
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(3))
    z[::2, 1] = float("nan")  # half the rows
    q(z)
    assert q.skipped_updates.item() == 1  # the EMA step (NaN sums) was skipped
    assert torch.isfinite(q.codebook).all() and torch.isfinite(q.embed_sum).all()
    assert torch.isfinite(q.cluster_size).all()
    restarted = (q.cluster_size == 1.5).sum().item()
    assert 0 < restarted < 8  # only codes drawn from finite rows were restarted
    good = z[1::2]
    fresh = q.codebook[q.cluster_size == 1.5]
    assert (torch.cdist(fresh, good).min(dim=1).values == 0).all()


def test_emavq_kmeans_waits_for_a_finite_batch() -> None:
    torch.manual_seed(0)
    q = EMAVQ(4, 8, kmeans_init=True, kmeans_iters=2, check_finite=False).train()
    z = torch.randn(32, 4, generator=torch.Generator().manual_seed(4))
    bad = z.clone()
    bad[5, 0] = float("nan")
    q(bad)
    assert not bool(q.initialized)
    assert torch.isfinite(q.codebook).all()
    assert q.skipped_updates.item() == 2  # the k-means seeding and the EMA step
    q(z)
    assert bool(q.initialized) and torch.isfinite(q.codebook).all()


def test_emavq_skip_is_decided_after_the_all_reduce(monkeypatch: pytest.MonkeyPatch) -> None:
    from vqkit import distributed

    def peer_with_huge_batch(stats: torch.Tensor) -> torch.Tensor:
        stats[:, 1:] += 1e60  # another rank's sums: float64 holds them, the float32 codebook cannot
        return stats

    monkeypatch.setattr(distributed, "all_reduce_sum_", peer_with_huge_batch)
    torch.manual_seed(0)
    q = EMAVQ(4, 8).train()
    state = {k: v.clone() for k, v in q.state_dict().items()}
    q(torch.randn(16, 4))  # an ordinary local batch
    for k, v in q.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert q.skipped_updates.item() == 1


def test_residual_vq_stages_count_their_skips() -> None:
    from vqkit.quantizers import ResidualVQ

    torch.manual_seed(0)
    rq = ResidualVQ(4, 8, 2, decay=0.5).train()
    rq(torch.full((64, 4), 3e38))
    assert [s.skipped_updates.item() for s in rq.stages] == [1, 1]
    assert all(torch.isfinite(s.codebook).all() for s in rq.stages)


def test_emavq_restart_never_writes_an_overflowing_sum() -> None:
    """A restarted code's EMA sum is row · threshold: 3e38 · 2 is inf, and an inf embed_sum would make
    every later EMA step non-finite (hence skipped) for good; such rows restart nothing."""
    torch.manual_seed(0)
    q = EMAVQ(2, 4, decay=0.99, dead_code_threshold=2.0).train()
    q.cluster_size.fill_(0.5)  # all dead
    z = torch.tensor([[3e38, 0.0], [3e38, 1.0], [3e38, -1.0], [3e38, 2.0]])
    q(z)
    assert torch.isfinite(q.embed_sum).all() and torch.isfinite(q.codebook).all()
    assert (q.cluster_size < 2.0).all()  # no restart took place
    before = q.skipped_updates.item()
    q(torch.randn(64, 2, generator=torch.Generator().manual_seed(1)))
    assert q.skipped_updates.item() == before  # the EMA still moves
