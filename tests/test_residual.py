"""Residual quantization: stages, conditioning math, prefixes, bits, side information."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from conftest import is_instance_ln, roundtrip
from vqkit.quantizers import FSQ, VQ, ResidualFSQ, ResidualQuantizer, ResidualSimVQ, ResidualVQ

LEVELS = (8, 5, 5, 5)
CONDITIONINGS = {
    "none": {"conditioning": "none"},
    "scale": {"conditioning": "scale"},
    "scale-softplus": {"conditioning": "scale", "scale_param": "softplus"},
    "ln-running": {"conditioning": "layernorm"},
    "ln-instance": {"conditioning": "layernorm", "layernorm_stats": "instance"},
}


def fsq_ref(x: torch.Tensor, levels: tuple[int, ...] = LEVELS) -> torch.Tensor:
    """Asymmetric FSQ codes computed independently of vqkit."""
    lv = torch.tensor(levels, dtype=x.dtype)
    half = (lv - 1) * (1 + 1e-3) / 2
    offset = torch.where(lv % 2 == 0, 0.5, 0.0).to(x.dtype)
    return torch.round(torch.tanh(x + torch.atanh(offset / half)) * half - offset) / torch.div(
        lv, 2, rounding_mode="floor"
    )


def _z(shape: tuple[int, ...], seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale


def _prefix_errors(rq: ResidualQuantizer, z: torch.Tensor) -> list[float]:
    if is_instance_ln(rq):
        idx, side = rq.encode_with_side_info(z)
        recon = [rq.decode(idx[..., :k], side_info=side) for k in range(1, rq.num_stages + 1)]
    else:
        idx = rq.encode(z)
        recon = [rq.decode(idx[..., :k]) for k in range(1, rq.num_stages + 1)]
    return [float((r - z).pow(2).mean()) for r in recon]


def _assert_non_increasing(errors: list[float]) -> None:
    for a, b in itertools.pairwise(errors):
        assert b <= a * (1 + 1e-5) + 1e-9, errors
    assert errors[-1] < errors[0], errors  # and the stages do help


def _train(rq: ResidualQuantizer, shape: tuple[int, ...], steps: int = 5, seed: int = 50) -> None:
    rq.train()
    params = [p for p in rq.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-2) if params else None
    for s in range(steps):
        z = _z(shape, seed + s)
        out = rq(z)
        loss = out.loss + (out.quantized - z).pow(2).mean()
        if opt is not None:
            opt.zero_grad()
            loss.backward()
            opt.step()
    rq.eval()


@pytest.mark.parametrize("cond", CONDITIONINGS.values(), ids=CONDITIONINGS.keys())
@pytest.mark.parametrize("trained", [False, True])
def test_rfsq_error_does_not_grow_with_stages(cond: dict, trained: bool) -> None:
    torch.manual_seed(0)
    rq = ResidualFSQ(LEVELS, 4, **cond)
    shape = (4, 8, 8, 4)
    if trained:
        _train(rq, shape)
    rq.eval()
    _assert_non_increasing(_prefix_errors(rq, _z(shape, seed=1)))


def test_rfsq_error_does_not_grow_with_manual_scales() -> None:
    torch.manual_seed(0)
    rq = ResidualFSQ(LEVELS, 4, "scale").eval()
    with torch.no_grad():
        rq.scale_logit.copy_(torch.tensor([0.0, 1.5, 2.5, 3.5]))
    errors = _prefix_errors(rq, _z((256, 4), seed=2))
    _assert_non_increasing(errors)
    small = _prefix_errors(rq, _z((256, 4), seed=2, scale=0.3))  # inside the grid: no saturation
    _assert_non_increasing(small)
    assert small[-1] < 0.02 * small[0]  # growing scales refine the residual


def test_rvq_error_does_not_grow_after_kmeans_init_and_ema_steps() -> None:
    torch.manual_seed(0)
    rq = ResidualVQ(8, 32, 4, kmeans_init=True, kmeans_iters=5)
    z = _z((512, 8), seed=3)
    rq.train()
    for _ in range(3):
        rq(z)
    assert all(bool(s.initialized) for s in rq.stages)
    rq.eval()
    _assert_non_increasing(_prefix_errors(rq, z))


def test_rvq_error_does_not_grow_after_ema_steps() -> None:
    torch.manual_seed(0)
    rq = ResidualVQ(8, 32, 3, decay=0.8)
    rq.train()
    for s in range(10):
        rq(_z((256, 8), seed=10 + s))
    rq.eval()
    _assert_non_increasing(_prefix_errors(rq, _z((256, 8), seed=10)))


def test_builders_and_attributes() -> None:
    rfsq = ResidualFSQ(LEVELS, 3, "layernorm", symmetric=False)
    assert rfsq.num_stages == 3 and rfsq.codebook_size == 1000 and rfsq.dim == 4
    assert rfsq.codebook_sizes == (1000, 1000, 1000)
    assert all(isinstance(s, FSQ) for s in rfsq.stages)
    rvq = ResidualVQ(8, 32, 2, ema=False, beta=0.5)
    assert rvq.num_stages == 2 and rvq.codebook_size == 32 and all(isinstance(s, VQ) for s in rvq.stages)
    assert rvq.stages[0].beta == 0.5
    rsim = ResidualSimVQ(8, 64, 5, "scale", scale_param="softplus")
    assert rsim.num_stages == 5 and rsim.codebook_size == 64 and rsim.scale_param == "softplus"
    # each stage is its own module (no shared codebook)
    assert rsim.stages[0].linear is not rsim.stages[1].linear
    assert not torch.equal(rsim.stages[0].codebook, rsim.stages[1].codebook)


@pytest.mark.parametrize("stages", [1, 2, 5])
def test_bits_per_token_and_indices_shape(stages: int) -> None:
    rq = ResidualFSQ(LEVELS, stages, "scale")
    assert rq.bits_per_token == pytest.approx(stages * math.log2(1000), rel=1e-12)
    assert rq.bits_per_token == pytest.approx(stages * FSQ(LEVELS).bits_per_token, rel=1e-12)
    out = rq(_z((2, 3, 5, 4)))
    assert out.indices.shape == (2, 3, 5, stages)
    inst = ResidualFSQ(LEVELS, stages, "layernorm", layernorm_stats="instance")
    assert inst.bits_per_token == pytest.approx(stages * math.log2(1000), rel=1e-12)  # side info is per sample
    assert inst.side_bits_per_sample == 32 * 2 * 4 * stages


def test_mixed_stages() -> None:
    torch.manual_seed(0)
    stages = [FSQ((8, 8)), FSQ((5, 5, 5), dim=2), VQ(2, 100)]
    rq = ResidualQuantizer(stages)
    assert rq.codebook_sizes == (64, 125, 100)
    assert rq.bits_per_token == pytest.approx(6 + math.log2(125) + math.log2(100), rel=1e-12)
    z = _z((40, 2))
    out = rq(z)
    assert out.indices.shape == (40, 3)
    for s, size in enumerate(rq.codebook_sizes):
        assert int(out.indices[:, s].max()) < size
        assert out.metrics[f"usage_{s}"].item() == pytest.approx(out.indices[:, s].unique().numel() / size)
    rq.eval()
    idx = rq.encode(z)
    bad = idx.clone()
    bad[0, 2] = 110  # valid for stage 1 (125 codes), out of range for stage 2 (100 codes)
    with pytest.raises(ValueError, match="out of range"):
        rq.decode(bad)
    ok = idx.clone()
    ok[0, 1] = 110
    rq.decode(ok)


def test_none_prefix_decode_is_sum_of_stage_decodes() -> None:
    torch.manual_seed(0)
    rq = ResidualVQ(8, 32, 3, kmeans_init=True)
    z = _z((200, 8))
    rq.train()
    rq(z)
    rq.eval()
    idx = rq.encode(z)
    total = torch.zeros_like(z)
    for k in range(3):
        total = total + rq.stages[k].decode(idx[..., k])
        torch.testing.assert_close(rq.decode(idx[..., : k + 1]), total)
    # the encoder really quantizes residuals: stage k+1 is the nearest code to z - (first k)
    resid = z - rq.decode(idx[..., :1])
    assert torch.equal(idx[..., 1], rq.stages[1].encode(resid))


@pytest.mark.parametrize("scale_param", ["exp", "softplus"])
def test_scale_strategy_by_hand(scale_param: str) -> None:
    rq = ResidualFSQ(LEVELS, 2, "scale", scale_param=scale_param)
    p = torch.tensor([0.3, 1.7])
    with torch.no_grad():
        rq.scale_logit.copy_(p)
    alpha = p.exp() if scale_param == "exp" else F.softplus(p)
    torch.testing.assert_close(rq.scales(), alpha)
    z = _z((3, 6, 6, 4), seed=4, scale=1.5)
    # by hand: q_k = FSQ(α_k r_{k-1}), contribution q_k / α_k, r_k = r_{k-1} - q_k / α_k
    q1 = fsq_ref(alpha[0] * z.double())
    c1 = q1 / alpha[0]
    q2 = fsq_ref(alpha[1] * (z.double() - c1))
    c2 = q2 / alpha[1]
    expected = (c1 + c2).float()
    for mode in (True, False):
        rq.train(mode)
        out = rq(z)
        torch.testing.assert_close(out.quantized, expected, atol=1e-5, rtol=1e-5)
    rq.eval()
    torch.testing.assert_close(rq.decode(rq.encode(z)), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rq.decode(rq.encode(z)[..., :1]), c1.float(), atol=1e-5, rtol=1e-5)
    # and not the paper's Algorithm 1 (sum of q_k)
    assert not torch.allclose(out.quantized, (q1 + q2).float(), atol=1e-3)


def test_layernorm_running_by_hand() -> None:
    rq = ResidualFSQ(LEVELS, 2, "layernorm").eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        rq.running_mean.copy_(torch.randn(2, 4, generator=g) * 0.2)
        rq.running_var.copy_(torch.rand(2, 4, generator=g) + 0.5)
        rq.ln_weight.copy_(torch.rand(2, 4, generator=g) + 0.5)
        rq.ln_bias.copy_(torch.randn(2, 4, generator=g) * 0.1)
    mu, var = rq.running_mean.double(), rq.running_var.double()
    gam, bet = rq.ln_weight.detach().double(), rq.ln_bias.detach().double()
    sd = (var + rq.eps).sqrt()
    z = _z((100, 4), seed=6).double()
    r, total = z, torch.zeros_like(z)
    for k in range(2):
        q = fsq_ref((r - mu[k]) / sd[k] * gam[k] + bet[k])
        c = (q - bet[k]) / gam[k] * sd[k] + mu[k]
        r, total = r - c, total + c
    torch.testing.assert_close(rq(z.float()).quantized, total.float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rq.decode(rq.encode(z.float())), total.float(), atol=1e-5, rtol=1e-5)


def test_layernorm_running_statistics_update() -> None:
    rq = ResidualFSQ(LEVELS, 2, "layernorm", layernorm_stats="running")
    rq.momentum = 0.1
    z = _z((4, 16, 4), seed=7, scale=2.0) + 0.5
    rq.train()
    rq(z)
    flat = z.reshape(-1, 4)
    torch.testing.assert_close(rq.running_mean[0], 0.1 * flat.mean(0))
    torch.testing.assert_close(rq.running_var[0], 0.9 + 0.1 * flat.var(0, unbiased=False))
    assert not torch.equal(rq.running_mean[1], torch.zeros(4))
    # training mode normalises with the batch statistics of the residual
    rq2 = ResidualFSQ(LEVELS, 1, "layernorm").train()
    sd = (flat.var(0, unbiased=False) + rq2.eps).sqrt()
    expected = fsq_ref((z - flat.mean(0)) / sd) * sd + flat.mean(0)
    torch.testing.assert_close(rq2(z).quantized, expected, atol=1e-5, rtol=1e-5)


def test_instance_layernorm_side_info() -> None:
    torch.manual_seed(0)
    rq = ResidualFSQ(LEVELS, 3, "layernorm", layernorm_stats="instance").eval()
    z = _z((3, 5, 7, 4), seed=8, scale=2.0) + torch.tensor([1.0, -2.0, 0.0, 3.0])
    idx, side = rq.encode_with_side_info(z)
    assert idx.shape == (3, 5, 7, 3)
    assert side.shape == (3, 3, 2, 4)
    # stage 0 statistics: per sample, per channel, over positions
    torch.testing.assert_close(side[:, 0, 0], z.mean(dim=(1, 2)))
    torch.testing.assert_close(side[:, 0, 1], (z.var(dim=(1, 2), unbiased=False) + rq.eps).sqrt())
    out = rq(z)
    torch.testing.assert_close(rq.decode(idx, side_info=side), out.quantized, atol=1e-5, rtol=1e-5)
    # by hand for the first stage
    mean, sd = side[:, 0, 0].reshape(3, 1, 1, 4), side[:, 0, 1].reshape(3, 1, 1, 4)
    c1 = fsq_ref((z - mean) / sd) * sd + mean
    torch.testing.assert_close(rq.decode(idx[..., :1], side_info=side), c1, atol=1e-5, rtol=1e-5)
    # prefixes with side information do not get worse
    errors = [float((rq.decode(idx[..., :k], side_info=side) - z).pow(2).mean()) for k in (1, 2, 3)]
    _assert_non_increasing(errors)
    with pytest.raises(ValueError, match="side_info"):
        rq.decode(idx)
    # another sample's side information decodes differently: the indices alone are not enough
    assert not torch.allclose(rq.decode(idx, side_info=side.flip(0)), out.quantized)


def test_roundtrip_helper_on_builders() -> None:
    for rq in (
        ResidualFSQ(LEVELS, 2, "layernorm", layernorm_stats="instance"),
        ResidualVQ(8, 16, 2, "layernorm", ema=False),
        ResidualSimVQ(8, 16, 2, "scale"),
    ):
        rq.eval()
        z = _z((2, 6, rq.dim), seed=9)
        torch.testing.assert_close(roundtrip(rq, z), rq(z).quantized, atol=1e-5, rtol=1e-5)


def test_loss_is_sum_of_stage_losses() -> None:
    torch.manual_seed(0)
    rq = ResidualVQ(8, 16, 2, ema=False, beta=0.25)
    z = _z((64, 8), seed=11)
    out = rq(z)
    idx = out.indices
    c1 = rq.stages[0].codebook.detach()[idx[:, 0]]
    c2 = rq.stages[1].codebook.detach()[idx[:, 1]]
    expected = 1.25 * (z - c1).pow(2).mean() + 1.25 * (z - c1 - c2).pow(2).mean()
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.quantized, c1 + c2)


# -- which side each loss term reaches, through the stages --------------------------------------------
@pytest.mark.parametrize("beta", [0.0, 0.25, 0.7])
def test_residual_vq_gradient_sides(beta: float) -> None:
    """Stage k's codebook term trains codebook k on its residual; only stage 0's commitment reaches z:
    r_1 = z - straight_through(z, c_1) has gradient 1 - 1 = 0 w.r.t. z, exactly."""
    torch.manual_seed(0)
    rq = ResidualVQ(8, 16, 2, ema=False, beta=beta)
    z = _z((40, 8), seed=12).requires_grad_()
    out = rq(z)
    cb0, cb1 = rq.stages[0].codebook, rq.stages[1].codebook
    gz, g0, g1 = torch.autograd.grad(out.loss, [z, cb0, cb1])
    c1 = cb0.detach()[out.indices[:, 0]]
    c2 = cb1.detach()[out.indices[:, 1]]
    r1 = z.detach() - c1
    n = z.numel()
    torch.testing.assert_close(gz, beta * 2 * (z.detach() - c1) / n, rtol=1e-6, atol=0)
    if beta == 0:
        assert torch.equal(gz, torch.zeros_like(z))
    torch.testing.assert_close(g0, torch.zeros(16, 8).index_add_(0, out.indices[:, 0], 2 * (c1 - z.detach()) / n),
                               rtol=1e-6, atol=0)
    torch.testing.assert_close(g1, torch.zeros(16, 8).index_add_(0, out.indices[:, 1], 2 * (c2 - r1) / n),
                               rtol=1e-6, atol=0)


@pytest.mark.parametrize("beta", [0.0, 0.25, 0.7])
def test_residual_simvq_gradient_sides(beta: float) -> None:
    torch.manual_seed(0)
    rq = ResidualSimVQ(8, 16, 2, beta=beta)
    z = _z((40, 8), seed=13).requires_grad_()
    out = rq(z)
    s0, s1 = rq.stages
    gz, gw0, gw1 = torch.autograd.grad(out.loss, [z, s0.linear.weight, s1.linear.weight])
    q1 = s0.codes()[out.indices[:, 0]]
    q2 = s1.codes()[out.indices[:, 1]]
    r1 = z.detach() - q1
    n = z.numel()
    torch.testing.assert_close(gz, beta * 2 * (z.detach() - q1) / n, rtol=1e-6, atol=0)
    if beta == 0:
        assert torch.equal(gz, torch.zeros_like(z))
    torch.testing.assert_close(gw0, (2 * (q1 - z.detach()) / n).t() @ s0.codebook[out.indices[:, 0]],
                               rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(gw1, (2 * (q2 - r1) / n).t() @ s1.codebook[out.indices[:, 1]], rtol=1e-5, atol=1e-8)


# -- statistics are updated from finite values only ----------------------------------------------------
def _ln_running(stages: int = 2) -> ResidualQuantizer:
    return ResidualFSQ(LEVELS, stages, "layernorm").train()


def test_skipped_updates_is_not_part_of_the_state_dict() -> None:
    rq = _ln_running()
    assert rq.skipped_updates.tolist() == [0, 0]
    assert rq.skipped_updates.dtype == torch.int64
    assert "skipped_updates" not in rq.state_dict()
    old_style = {k: v for k, v in rq.state_dict().items()}  # a checkpoint from before the counter
    _ln_running().load_state_dict(old_style, strict=True)


def test_huge_batch_does_not_poison_running_statistics() -> None:
    rq, ref = _ln_running(), _ln_running()
    first = _z((4, 16, 4), seed=7, scale=2.0) + 0.5
    rq(first)
    ref(first)
    mean, var = rq.running_mean.clone(), rq.running_var.clone()
    huge = _z((4, 16, 4), seed=8) * 1e30  # finite, but its variance (1e60) is not a float32
    out = rq(huge)
    assert torch.equal(rq.running_mean, mean) and torch.equal(rq.running_var, var)
    assert rq.skipped_updates.tolist() == [1, 1]
    # the batch itself was normalised with its own (float64, finite) statistics, not with inf
    flat = huge.reshape(-1, 4).double()
    m, sd = flat.mean(0).float(), (flat.var(0, unbiased=False) + rq.eps).sqrt().float()
    assert torch.isfinite(out.quantized).all()
    assert torch.equal(out.indices[..., 0], FSQ(LEVELS).encode((huge - m) / sd))
    assert out.indices[..., 0].unique().numel() > 20  # not one code for every token
    # later batches update as if the huge one had never come
    for seed in (9, 10):
        z = _z((4, 16, 4), seed=seed, scale=2.0) - 0.3
        rq(z)
        ref(z)
    assert torch.equal(rq.running_mean, ref.running_mean)
    assert torch.equal(rq.running_var, ref.running_var)
    assert rq.skipped_updates.tolist() == [1, 1]


def test_large_finite_batch_statistics_are_exact() -> None:
    """Values ~1e19: their float32 squares overflow, their float64 variance (~1e38) is a float32."""
    rq = _ln_running(1)
    z = _z((64, 4), seed=11) * 1e19
    rq(z)
    flat = z.double()
    assert rq.skipped_updates.tolist() == [0]
    torch.testing.assert_close(rq.running_mean[0].double(), 0.1 * flat.mean(0), rtol=1e-6, atol=0)
    torch.testing.assert_close(rq.running_var[0].double(), 0.9 + 0.1 * flat.var(0, unbiased=False),
                               rtol=1e-6, atol=0)
    assert torch.isfinite(rq.running_var).all()


def test_nan_batch_is_skipped_with_check_finite_off() -> None:
    rq = ResidualFSQ(LEVELS, 2, "layernorm", check_finite=False).train()
    mean, var = rq.running_mean.clone(), rq.running_var.clone()
    z = _z((4, 16, 4), seed=7)
    z[1, 3, 2] = float("nan")
    rq(z)
    assert torch.equal(rq.running_mean, mean) and torch.equal(rq.running_var, var)
    assert rq.skipped_updates.tolist() == [1, 1]


def test_skip_is_decided_after_the_all_reduce(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another rank's batch made the reduced statistic non-finite: this rank skips too, although its own
    batch is ordinary, so the ranks' running statistics stay identical."""
    from vqkit import distributed

    def peer_with_huge_batch(moments: torch.Tensor) -> torch.Tensor:
        moments[:-1] += 1e60  # its sums: a float64 holds them, a float32 statistic cannot
        moments[-1] += 64  # its token count
        return moments

    monkeypatch.setattr(distributed, "all_reduce_sum_", peer_with_huge_batch)
    rq = _ln_running()
    mean, var = rq.running_mean.clone(), rq.running_var.clone()
    rq(_z((4, 16, 4), seed=7))
    assert torch.equal(rq.running_mean, mean) and torch.equal(rq.running_var, var)
    assert rq.skipped_updates.tolist() == [1, 1]


# -- intermediates pushed out of float32's range ----------------------------------------------------
def test_overflowing_stage_input_is_refused() -> None:
    rq = ResidualFSQ(LEVELS, 2, "scale")
    with torch.no_grad():
        rq.scale_logit.copy_(torch.tensor([0.0, 80.0]))  # α_1 = e^80 ≈ 5.5e34
    z = _z((2, 8, 4), seed=3) * 1e6
    for training in (True, False):
        rq.train(training)
        with pytest.raises(ValueError, match=r"stage 1.*NaN or Inf although z is finite"):
            rq(z)
        with pytest.raises(ValueError, match="stage 1"):
            rq.encode(z)
    rq.check_finite = False  # the residual's setting is every stage's
    assert all(not s.check_finite for s in rq.stages)
    rq(z)  # no check, no error
    rq.check_finite = True
    assert all(s.check_finite for s in rq.stages)
    rq2 = ResidualQuantizer([FSQ(LEVELS, check_finite=False)], check_finite=True)
    assert rq2.stages[0].check_finite is True


def test_stage_inputs_whose_sum_overflows_are_not_refused() -> None:
    """The stage check is one sum per stage; a sum that overflows float32 although every element is finite
    falls back to the elementwise test and is accepted. A later stage that does hold an inf is named."""
    rq = ResidualFSQ(LEVELS, 3, "scale")  # α_k = 1
    z = torch.full((64, 4), 3e38)  # every stage input finite, every one's sum beyond float32
    assert not math.isfinite(float(z.sum()))
    for training in (True, False):
        rq.train(training)
        out = rq(z)
        assert torch.isfinite(out.quantized).all()
        assert torch.equal(rq.encode(z), out.indices)
    with torch.no_grad():
        rq.scale_logit.copy_(torch.tensor([0.0, 0.0, 80.0]))  # α_2 = e^80 ≈ 5.5e34: stage 2's input is inf
    with pytest.raises(ValueError, match=r"stage 2.*NaN or Inf although z is finite"):
        rq(z)


def test_residual_constructor_limits() -> None:
    for build, match in (
        (lambda: ResidualFSQ(LEVELS, 0), r"ResidualFSQ: num_stages must be >= 1, got 0"),
        (lambda: ResidualVQ(8, 16, -2), r"ResidualVQ: num_stages must be >= 1, got -2"),
        (lambda: ResidualSimVQ(8, 16, 0), r"ResidualSimVQ: num_stages must be >= 1, got 0"),
        (lambda: ResidualQuantizer([FSQ(LEVELS)], "layernorm", momentum=1.5), r"momentum must be in \[0, 1\], got 1.5"),
        (lambda: ResidualQuantizer([FSQ(LEVELS)], momentum=-0.1), r"momentum must be in \[0, 1\], got -0.1"),
        (lambda: ResidualQuantizer([FSQ(LEVELS)], "layernorm", eps=0.0), r"eps must be > 0.*got 0.0"),
    ):
        with pytest.raises(ValueError, match=match):
            build()


@pytest.mark.parametrize("build", [lambda d: ResidualVQ(8, 32, 3, detach_residual=d, ema=False),
                                   lambda d: ResidualSimVQ(8, 32, 3, detach_residual=d)])
def test_detach_residual_changes_the_gradients_only(build: Any) -> None:
    """r_k = r_{k-1} - sg(c_k) (SoundStream, EnCodec, vqp): the same forward pass; each of the S stages
    passes its straight-through gradient to z, where with the residual attached only stage 0 does."""
    z = torch.randn(40, build(False).dim)
    out: dict[bool, Any] = {}
    grads = {}
    for detach in (False, True):
        torch.manual_seed(0)
        q = build(detach)
        zz = z.clone().requires_grad_(True)
        out[detach] = q(zz)
        (out[detach].quantized.sum() + 0 * out[detach].loss).backward()
        grads[detach] = zz.grad
    assert torch.equal(out[True].quantized, out[False].quantized)
    assert torch.equal(out[True].indices, out[False].indices)
    assert torch.equal(out[True].loss, out[False].loss)
    torch.testing.assert_close(grads[False], torch.ones_like(z))
    torch.testing.assert_close(grads[True], torch.full_like(z, 3.0))
