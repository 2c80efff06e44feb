"""The API contract every quantizer honours (see vqkit.quantizers.base)."""

from __future__ import annotations

import math
import re

import pytest
import torch

import vqkit.quantizers as Q
from conftest import ALL, IDENTITY_STE, RESIDUAL, fsq_preimage, is_instance_ln, make, roundtrip, train_few, z_for
from vqkit.quantizers import FSQ, VQ, QuantizerOutput, ResidualQuantizer
from vqkit.quantizers.base import CodeMetrics, all_finite

ATOL = 1e-5


def test_exports() -> None:
    for name in (
        "FSQ",
        "LFQ",
        "BSQ",
        "IBQ",
        "VQ",
        "EMAVQ",
        "FactorizedVQ",
        "SimVQ",
        "ResidualQuantizer",
        "ResidualFSQ",
        "ResidualVQ",
        "ResidualSimVQ",
        "MultiScaleRQ",  # not in the catalogue below: one square (B, h, w, dim) map in (tests/test_multiscale.py)
        "GroupedQuantizer",
        "QuantizerOutput",
    ):
        assert hasattr(Q, name), name
        assert name in Q.__all__, name
    assert issubclass(QuantizerOutput, tuple)
    assert QuantizerOutput._fields == ("quantized", "indices", "loss", "metrics")


@pytest.mark.parametrize("kind", ["bhwd", "nd"])
def test_forward_output_structure(any_name: str, kind: str) -> None:
    q = make(any_name)
    z = z_for(q, kind)
    out = q(z)
    assert isinstance(out, QuantizerOutput)
    assert isinstance(q, torch.nn.Module)
    assert out.quantized.shape == z.shape
    assert out.quantized.dtype == z.dtype
    expected = z.shape[:-1] + ((q.num_stages,) if any_name in RESIDUAL else ())
    assert out.indices.shape == expected
    assert out.indices.dtype == torch.int64
    assert out.loss.ndim == 0 and out.loss.is_floating_point()
    assert torch.isfinite(out.loss)
    assert {"perplexity", "usage"} <= set(out.metrics)
    sizes = q.codebook_sizes
    assert len(sizes) == q.num_stages
    for s in range(q.num_stages):
        col = out.indices[..., s] if any_name in RESIDUAL else out.indices
        assert int(col.min()) >= 0 and int(col.max()) < sizes[s]


def test_attributes(any_name: str) -> None:
    q = make(any_name)
    assert isinstance(q.dim, int)
    stages = 4 if any_name == "grouped_rfsq" else 3 if any_name.startswith(("rfsq", "rvq_ema")) else 2
    assert q.num_stages == (stages if any_name in RESIDUAL else 1)
    assert isinstance(q.bits_per_token, float)
    expected = sum(math.log2(k) for k in q.codebook_sizes)
    assert q.bits_per_token == pytest.approx(expected, rel=1e-12, abs=0)
    if any_name not in RESIDUAL:
        assert q.codebook_sizes == (q.codebook_size,)


def test_bits_per_token_values() -> None:
    assert make("fsq").bits_per_token == pytest.approx(math.log2(1000), rel=1e-12)
    assert make("lfq").bits_per_token == 8.0
    assert make("vq").bits_per_token == 6.0
    assert make("rfsq_ln_instance").bits_per_token == pytest.approx(3 * math.log2(1000), rel=1e-12)
    assert make("rvq_ema").bits_per_token == 15.0


def test_loss_is_exactly_zero_without_auxiliary_loss() -> None:
    for name in ("fsq", "fsq_sym", "rfsq_none", "rfsq_scale", "rfsq_ln_running"):
        q = make(name)
        z = z_for(q).requires_grad_()
        out = q(z)
        assert out.loss.ndim == 0
        assert out.loss.item() == 0.0, name


# -- decode(encode(z)) == forward(z).quantized -----------------------------------------------
@pytest.mark.parametrize("kind", ["bhwd", "btd", "nd"])
def test_decode_encode_matches_forward_fresh(any_name: str, kind: str) -> None:
    q = make(any_name).eval()
    z = z_for(q, kind)
    with torch.no_grad():
        out = q(z)
    assert torch.equal(q.encode(z), out.indices)
    decoded = roundtrip(q, z)
    assert decoded.shape == z.shape
    torch.testing.assert_close(decoded, out.quantized, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("kind", ["bhwd", "nd"])
def test_decode_encode_matches_forward_after_training(any_name: str, kind: str) -> None:
    q = make(any_name)
    before = {k: v.clone() for k, v in q.state_dict().items()}
    train_few(q, kind)
    after = q.state_dict()
    if before:  # the training steps must have made some state non-trivial
        assert any(not torch.equal(before[k], after[k]) for k in before), "training changed no state"
    assert not q.training
    z = z_for(q, kind, seed=7, scale=1.5)
    with torch.no_grad():
        out = q(z)
    assert torch.equal(q.encode(z), out.indices)
    torch.testing.assert_close(roundtrip(q, z), out.quantized, atol=ATOL, rtol=1e-5)


def test_decode_needs_only_indices_and_state(any_name: str) -> None:
    """A fresh module (different seed) loaded with the state dict decodes the same indices."""
    q = make(any_name)
    train_few(q)
    z = z_for(q, seed=11)
    other = make(any_name, seed=12345)
    other.load_state_dict(q.state_dict())
    other.eval()
    if is_instance_ln(q):
        idx, side = q.encode_with_side_info(z)
        torch.testing.assert_close(other.decode(idx, side_info=side), q.decode(idx, side_info=side))
    else:
        idx = q.encode(z)
        torch.testing.assert_close(other.decode(idx), q.decode(idx))
    assert torch.equal(other.encode(z), idx)


def test_encode_is_pure(any_name: str) -> None:
    """encode changes no state, even in training mode."""
    q = make(any_name)
    q.train()
    before = {k: v.clone() for k, v in q.state_dict().items()}
    z = z_for(q, scale=3.0) + 5.0
    idx1 = q.encode(z)
    idx2 = q.encode(z)
    assert torch.equal(idx1, idx2)
    for k, v in q.state_dict().items():
        assert torch.equal(before[k], v), k


def test_eval_forward_is_pure(any_name: str) -> None:
    q = make(any_name).eval()
    before = {k: v.clone() for k, v in q.state_dict().items()}
    z = z_for(q, scale=3.0) + 5.0
    q(z)
    for k, v in q.state_dict().items():
        assert torch.equal(before[k], v), k


# -- straight-through gradient ---------------------------------------------------------------
def test_straight_through_gradient(any_name: str) -> None:
    q = make(any_name)
    q.train()
    z = z_for(q).requires_grad_()
    out = q(z)
    (grad,) = torch.autograd.grad(out.quantized.sum(), z)
    assert grad.shape == z.shape
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0
    if any_name in IDENTITY_STE:
        assert torch.equal(grad, torch.ones_like(z))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_straight_through_half_precision(any_name: str, dtype: torch.dtype) -> None:
    q = make(any_name)
    z = z_for(q).to(dtype).requires_grad_()
    out = q(z)
    (grad,) = torch.autograd.grad(out.quantized.float().sum(), z)
    assert grad.dtype == dtype
    assert torch.isfinite(grad.float()).all()


# -- dtypes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_same_indices(any_name: str, dtype: torch.dtype) -> None:
    q = make(any_name).eval()
    z16 = (z_for(q, scale=2.0)).to(dtype)
    z32 = z16.float()
    out16, out32 = q(z16), q(z32)
    assert out16.quantized.dtype == dtype
    assert out16.quantized.shape == z16.shape
    assert torch.equal(out16.indices, out32.indices)
    assert torch.equal(out16.quantized, out32.quantized.to(dtype))
    assert torch.equal(q.encode(z16), q.encode(z32))


def test_half_precision_same_indices_in_training_mode(any_name: str) -> None:
    q16, q32 = make(any_name), make(any_name)
    q16.train()
    q32.train()
    z16 = z_for(q16, scale=2.0).to(torch.bfloat16)
    out16, out32 = q16(z16), q32(z16.float())
    assert out16.quantized.dtype == torch.bfloat16
    assert torch.equal(out16.indices, out32.indices)


def test_autocast_does_not_change_indices(any_name: str) -> None:
    q = make(any_name).eval()
    z = z_for(q, scale=2.0)
    ref = q(z)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = q(z)
        idx = q.encode(z)
    assert torch.equal(out.indices, ref.indices)
    assert torch.equal(idx, ref.indices)
    assert out.quantized.dtype == torch.float32
    torch.testing.assert_close(out.quantized, ref.quantized)


# -- metrics -------------------------------------------------------------------------------
def _perplexity(idx: torch.Tensor, size: int) -> float:
    counts = torch.bincount(idx.reshape(-1), minlength=size).double()
    p = counts[counts > 0] / counts.sum()
    return math.exp(float(-(p * p.log()).sum()))


def test_metrics_generic(any_name: str) -> None:
    q = make(any_name)
    z = z_for(q).requires_grad_()
    out = q(z)
    m = out.metrics
    for key, v in m.items():
        assert isinstance(v, torch.Tensor), key
        assert v.ndim == 0, key
        assert not v.requires_grad and v.grad_fn is None, key
    idx = out.indices.reshape(-1, q.num_stages)
    usages, perps = [], []
    for s, size in enumerate(q.codebook_sizes):
        usages.append(idx[:, s].unique().numel() / size)
        perps.append(_perplexity(idx[:, s], size))
        assert 1.0 - 1e-5 <= perps[-1] <= size
    assert m["usage"].item() == pytest.approx(sum(usages) / len(usages), rel=1e-6)
    assert m["perplexity"].item() == pytest.approx(sum(perps) / len(perps), rel=1e-4)
    assert 1.0 - 1e-5 <= m["perplexity"].item() <= max(q.codebook_sizes)
    assert 0.0 < m["usage"].item() <= 1.0
    if any_name in RESIDUAL:
        for s in range(q.num_stages):
            assert m[f"usage_{s}"].item() == pytest.approx(usages[s], rel=1e-6)
            assert m[f"perplexity_{s}"].item() == pytest.approx(perps[s], rel=1e-4)


def test_metrics_known_batch_vq() -> None:
    torch.manual_seed(0)
    q = VQ(4, 16)
    q.codebook.data = torch.randn(16, 4) * 10
    chosen = torch.tensor([0, 0, 1, 2, 5, 5, 5, 9])
    z = q.codebook.detach()[chosen] + 0.01 * torch.randn(8, 4)
    out = q(z)
    assert torch.equal(out.indices, chosen)
    assert out.metrics["usage"].item() == pytest.approx(5 / 16)
    p = torch.tensor([2, 1, 1, 3, 1], dtype=torch.float64) / 8
    assert out.metrics["perplexity"].item() == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-5)


@pytest.mark.parametrize("n", [3, 5000])  # sparse (unique) and dense (histogram) statistics paths
def test_metrics_known_batch_fsq(n: int) -> None:
    levels = (8, 5, 5, 5)
    q = FSQ(levels)
    assert q.codebook_size == 1000
    chosen = torch.tensor([7, 7, 999] * n)
    z = fsq_preimage(levels, chosen)
    out = q(z)
    assert torch.equal(out.indices, chosen)
    assert out.metrics["usage"].item() == pytest.approx(2 / 1000)
    p = torch.tensor([2 / 3, 1 / 3], dtype=torch.float64)
    assert out.metrics["perplexity"].item() == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-5)


def test_metrics_single_code_batch() -> None:
    q = FSQ((5, 5))
    out = q(torch.zeros(10, 2))
    assert out.metrics["perplexity"].item() == pytest.approx(1.0)
    assert out.metrics["usage"].item() == pytest.approx(1 / 25)


def test_metrics_are_computed_when_first_read(any_name: str) -> None:
    """forward returns the metrics unevaluated; the first read computes them all, exactly as
    code_metrics does, and later reads return the same tensors."""
    q = make(any_name)
    out = q(z_for(q))
    m = out.metrics
    assert isinstance(m, CodeMetrics) and not m.computed
    eager = q.code_metrics(out.indices)
    assert m["usage"] is m["usage"] and m.computed  # computed once, then kept
    assert list(m) == list(eager) and len(m) == len(eager) and "perplexity" in m
    for key, value in eager.items():
        assert torch.equal(m[key], value), key
    assert dict(m) == {**m} and repr(m).startswith("CodeMetrics(")


def test_metrics_refuse_indices_modified_before_reading() -> None:
    q = FSQ((8, 5, 5, 5))
    z = torch.randn(64, 4)
    out = q(z)
    out.indices.zero_()  # read now, the metrics would describe other indices
    with pytest.raises(RuntimeError, match="modified in place before the metrics were read"):
        out.metrics["usage"]
    out = q(z)
    usage = out.metrics["usage"].clone()  # read first: kept, whatever happens to the indices later
    out.indices.zero_()
    assert torch.equal(out.metrics["usage"], usage)


def test_metrics_read_later_outside_inference_mode_and_under_autocast() -> None:
    q = make("rfsq_scale")
    z = z_for(q)
    with torch.inference_mode():
        out = q(z)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        m = dict(out.metrics)
    for key, value in q.code_metrics(out.indices.clone()).items():
        assert m[key].dtype == torch.float32 and torch.equal(m[key], value), key


_SYNCS = ("__bool__", "__float__", "__int__", "__index__", "item", "tolist")


@pytest.fixture
def host_syncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every conversion of a tensor to a Python value (a host sync on an accelerator)."""
    calls: list[str] = []
    for name in _SYNCS:
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *args: object, _original=original, _name=name, **kwargs: object):  # type: ignore[no-untyped-def]
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


@pytest.mark.parametrize(("name", "syncs"), [("fsq", 1), ("fsq_sym", 1), ("fsq_proj", 2), ("lfq", 1),
                                             ("bsq", 1), ("bsq_proj", 2),
                                             ("rfsq_none", 2), ("rfsq_scale", 2), ("rfsq_scale_softplus", 2)])
def test_forward_host_syncs(name: str, syncs: int, host_syncs: list[str]) -> None:
    """One host sync per finiteness check (the input; a projection; all residual stages together) and none
    for the metrics until they are read; check_finite=False: none at all."""
    q = make(name).train()
    z = z_for(q, "big").requires_grad_()
    host_syncs.clear()
    out = q(z)
    assert len(host_syncs) == syncs, host_syncs
    (out.quantized.square().mean() + out.loss).backward()
    assert len(host_syncs) == syncs, host_syncs  # nor in the backward
    float(out.metrics["usage"])
    assert len(host_syncs) > syncs  # reading the metrics converts one
    q.check_finite = False
    host_syncs.clear()
    q(z)
    assert host_syncs == []


def test_all_finite_is_exact() -> None:
    """One sum decides; finite values whose sum overflows float32 are still finite."""
    big = torch.full((64, 4), 3e38)
    assert not math.isfinite(float(big.sum())) and all_finite(big)
    assert all_finite(torch.randn(5, 3)) and all_finite(-big)
    for bad in (float("nan"), float("inf"), -float("inf")):
        for base in (big, torch.randn(64, 4)):
            x = base.clone()
            x[7, 2] = bad
            assert not all_finite(x)
    assert not all_finite(torch.tensor([float("inf"), -float("inf")]))  # the sum is NaN, not inf
    q = FSQ((8, 5, 5, 5))
    out = q(big)  # not refused: the top code of every channel, the last index
    assert torch.equal(out.indices, torch.full((64,), q.codebook_size - 1))
    assert torch.equal(out.quantized, torch.tensor([0.75, 1.0, 1.0, 1.0]).expand(64, 4))


# -- bad inputs ------------------------------------------------------------------------------
def _calls(q: torch.nn.Module) -> list:
    return [q, q.encode]


def test_wrong_last_dim(any_name: str) -> None:
    q = make(any_name)
    z = torch.randn(2, 6, 6, q.dim + 1)
    for f in _calls(q):
        with pytest.raises(ValueError, match=rf"(?s)shape.*\b{q.dim}\b"):
            f(z)
    with pytest.raises(ValueError, match="shape"):
        q(torch.tensor(1.0))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_non_floating_dtype(any_name: str, dtype: torch.dtype) -> None:
    q = make(any_name)
    z = torch.ones(2, 6, 6, q.dim, dtype=dtype)
    for f in _calls(q):
        with pytest.raises(ValueError, match=r"(?i)float"):
            f(z)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input(any_name: str, bad: float) -> None:
    q = make(any_name)
    z = z_for(q)
    z[0, 1, 2, 0] = bad
    word = "NaN" if math.isnan(bad) else "Inf"
    for f in _calls(q):
        with pytest.raises(ValueError, match=word):
            f(z)
    with pytest.raises(ValueError, match=word):
        q(z.to(torch.bfloat16))


@pytest.mark.parametrize("big", [1e300, -1e39])
def test_float64_beyond_float32_range_is_refused(any_name: str, big: float) -> None:
    """Finite in float64, ±inf once cast to the float32 the math runs in: refused by name, not quantized."""
    q = make(any_name)
    z = z_for(q).double()
    z[0, 1, 2, 0] = big
    for training in (True, False):
        q.train(training)
        state = {k: v.clone() for k, v in q.state_dict().items()}
        for f in _calls(q):
            with pytest.raises(ValueError, match=r"beyond float32 range \(max \|z\| = " + re.escape(f"{abs(big):.4g}")):
                f(z)
        if is_instance_ln(q):
            with pytest.raises(ValueError, match="beyond float32 range"):
                q.encode_with_side_info(z)
        for k, v in q.state_dict().items():
            assert torch.equal(v, state[k]), k
    z[0, 1, 2, 0] = float("nan")  # a NaN keeps its own message
    with pytest.raises(ValueError, match="NaN or Inf"):
        q(z)
    q.eval()
    ok = z_for(q).double() * 1e30  # float64 within float32's range: the float32 computation
    assert torch.equal(q.encode(ok), q.encode(ok.float()))


@pytest.mark.parametrize("exponent", [64, 100, 124])
def test_large_finite_inputs_are_quantized_exactly(any_name: str, exponent: int) -> None:
    """|z| up to 2^126: squares and projections overflow float32 on the way; the codes must not. The
    forward output is exactly the decoded code (a straight-through z + sg(q - z) returned 0 there),
    and the loss may be inf (a squared error beyond float32) but never NaN."""
    q = make(any_name).eval()
    z = z_for(q) * 2.0**exponent
    assert torch.isfinite(z).all()
    out = q(z)
    assert torch.isfinite(out.quantized).all()
    assert not torch.isnan(out.loss)
    assert torch.equal(q.encode(z), out.indices)
    torch.testing.assert_close(roundtrip(q, z), out.quantized, rtol=1e-6, atol=0)
    if any_name in ("vq", "emavq", "simvq", "vq_l2"):  # the nearest code, checked in float64
        codes = (q.codes() if any_name == "simvq" else q.codebook).detach().double()
        x = z.double()
        if any_name == "vq_l2":
            codes, x = torch.nn.functional.normalize(codes, dim=-1), torch.nn.functional.normalize(x, dim=-1)
        flat = x.reshape(-1, q.dim)
        dist = codes.pow(2).sum(-1) - 2 * flat @ codes.t()  # ||x - c||² - ||x||², exact enough in float64
        assert torch.equal(out.indices.reshape(-1), dist.argmin(dim=1))
    q.train()
    z.requires_grad_()
    out = q(z)
    assert not torch.isnan(out.loss)
    (grad,) = torch.autograd.grad(out.quantized.sum() + out.loss, z)
    assert torch.isfinite(grad).all()
    for k, v in q.state_dict().items():  # no statistic took an inf or NaN from the batch
        assert not v.is_floating_point() or torch.isfinite(v).all(), k


@pytest.mark.parametrize("kind", ["bhwd", "big"])  # 32 and 512 tokens
@pytest.mark.parametrize("training", [False, True])
def test_check_finite_false_lets_nan_through(any_name: str, kind: str, training: bool) -> None:
    q = make(any_name, check_finite=False)
    assert q.check_finite is False
    z = z_for(q, kind)
    z[0, 1, 2, 0] = float("nan")
    q.train(training)
    out = q(z)  # must not raise
    assert out.quantized.shape == z.shape
    assert out.indices.dtype == torch.int64
    q.encode(z)


def test_decode_index_out_of_range(any_name: str) -> None:
    q = make(any_name).eval()
    z = z_for(q)
    idx = q.encode(z)
    stage_last = q.codebook_sizes[-1]
    side = q.encode_with_side_info(z)[1] if is_instance_ln(q) else None
    for value in (-1, stage_last, stage_last + 7):
        bad = idx.clone()
        bad[0, 0, 0, ...] = 0
        bad.view(-1)[-1] = value  # last stage (or the only one)
        with pytest.raises(ValueError, match="out of range"):
            q.decode(bad) if side is None else q.decode(bad, side_info=side)
    edge = idx.clone()
    edge.view(-1)[-1] = stage_last - 1  # the largest valid index decodes
    decoded = q.decode(edge) if side is None else q.decode(edge, side_info=side)
    assert decoded.shape == z.shape


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.bool])
def test_decode_non_integer_indices(any_name: str, dtype: torch.dtype) -> None:
    q = make(any_name).eval()
    idx = q.encode(z_for(q))
    with pytest.raises(ValueError, match="integer"):
        q.decode(idx.to(dtype))


def test_decode_accepts_int32_indices(any_name: str) -> None:
    q = make(any_name).eval()
    z = z_for(q)
    if is_instance_ln(q):
        idx, side = q.encode_with_side_info(z)
        torch.testing.assert_close(q.decode(idx.int(), side_info=side), q.decode(idx, side_info=side))
    else:
        idx = q.encode(z)
        torch.testing.assert_close(q.decode(idx.int()), q.decode(idx))


def test_residual_decode_too_many_stages(residual_name: str) -> None:
    q = make(residual_name).eval()
    z = z_for(q)
    idx = q.encode(z)
    extra = torch.cat([idx, idx[..., :1]], dim=-1)
    side = {"side_info": q.encode_with_side_info(z)[1]} if is_instance_ln(q) else {}
    with pytest.raises(ValueError, match="stages"):
        q.decode(extra, **side)
    with pytest.raises(ValueError, match="stages"):
        q.decode(torch.tensor(0), **side)


def test_instance_layernorm_decode_needs_side_info() -> None:
    q = make("rfsq_ln_instance").eval()
    z = z_for(q)
    idx, side = q.encode_with_side_info(z)
    with pytest.raises(ValueError, match="side_info"):
        q.decode(idx)
    with pytest.raises(ValueError, match="side_info"):
        q.decode(idx, side_info=side[:, :, :1])
    with pytest.raises(ValueError, match="side_info"):
        q.decode(idx, side_info=side[:1])


def test_instance_layernorm_needs_positions() -> None:
    q = make("rfsq_ln_instance")
    with pytest.raises(ValueError, match=r"(?i)instance"):
        q(torch.randn(16, q.dim))


def test_side_info_only_for_instance_layernorm() -> None:
    for name in ("rfsq_none", "rfsq_scale", "rfsq_ln_running"):
        q = make(name)
        with pytest.raises(ValueError, match="instance"):
            q.encode_with_side_info(z_for(q))


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="level"):
        FSQ((8, 1, 5))
    with pytest.raises(ValueError, match="level"):
        FSQ((0,))
    with pytest.raises(ValueError, match=r"(?i)symmetric"):
        FSQ((2, 5))
    with pytest.raises(ValueError, match="conditioning"):
        ResidualQuantizer([FSQ((5, 5))], "bogus")
    with pytest.raises(ValueError, match="scale_param"):
        ResidualQuantizer([FSQ((5, 5))], "scale", scale_param="bogus")
    with pytest.raises(ValueError, match="layernorm_stats"):
        ResidualQuantizer([FSQ((5, 5))], "layernorm", layernorm_stats="bogus")
    with pytest.raises(ValueError, match="dim"):
        ResidualQuantizer([FSQ((5, 5)), FSQ((5, 5, 5))])


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: VQ(0, 8), r"VQ: dim must be >= 1, got 0"),
        (lambda: VQ(4, 1), r"VQ: codebook_size must be >= 2, got 1"),
        (lambda: VQ(4, 2**63), r"VQ: invalid codebook_size = 9223372036854775808 .*less than 9223372036854775808"),
        (lambda: VQ(4, 2**62), r"VQ: codebook_size × dim = 4611686018427387904 × 4 = .* over the limit of "
                                r"1099511627776 \(2\^40"),
        (lambda: VQ(4, 8, search_bytes=3), r"VQ: search_bytes must be an integer >= 4 .*got 3"),
        (lambda: Q.EMAVQ(-3, 8), r"EMAVQ: dim must be >= 1, got -3"),
        (lambda: Q.EMAVQ(2**16, 2**25), r"EMAVQ: codebook_size × dim = 33554432 × 65536 .* over the limit"),
        (lambda: Q.EMAVQ(2**20, 8), r"EMAVQ: invalid dim = 1048576 .*less than or equal to 65536"),
        (lambda: Q.EMAVQ(4, 8, eps=0.0), r"EMAVQ: eps .* must be > 0, got 0.0"),
        (lambda: Q.EMAVQ(4, 8, kmeans_iters=-1), r"EMAVQ: kmeans_iters must be >= 0, got -1"),
        (lambda: Q.SimVQ(8, 2**40), r"SimVQ: codebook_size × dim = 1099511627776 × 8 .* over the limit"),
        (lambda: Q.SimVQ(0, 16), r"SimVQ: dim must be >= 1, got 0"),
        (lambda: Q.FactorizedVQ(8, 16, code_dim=0), r"FactorizedVQ: code_dim must be >= 1, got 0"),
        (lambda: Q.FactorizedVQ(8, 2**39, code_dim=4), r"FactorizedVQ: codebook_size × dim = 549755813888 × 4"),
        (lambda: Q.FactorizedVQ(8, 1), r"FactorizedVQ: codebook_size must be >= 2, got 1"),
        (lambda: Q.LFQ(8, bits=63), r"LFQ: bits must be in \[1, 62\] .*got 63"),
        (lambda: Q.BSQ(8, bits=63), r"BSQ: bits must be in \[1, 62\] .*got 63"),
        (lambda: FSQ((2**21,) * 3), r"FSQ: .*over the int64 index limit of 9223372036854775807"),
        (lambda: Q.ResidualFSQ((8, 5), 0), r"ResidualFSQ: num_stages must be >= 1, got 0"),
        (lambda: Q.ResidualVQ(8, 16, 0), r"ResidualVQ: num_stages must be >= 1, got 0"),
        (lambda: Q.ResidualSimVQ(8, 16, 0), r"ResidualSimVQ: num_stages must be >= 1, got 0"),
    ],
)
def test_sizes_that_cannot_be_indexed_are_refused(build, match: str) -> None:  # type: ignore[no-untyped-def]
    """Every size is refused at construction with the argument, its value and the limit: nothing is
    allocated first (a 2^63-code VQ would otherwise fail deep inside torch, or wrap its indices)."""
    with pytest.raises(ValueError, match=match):
        build()


def test_catalogue_is_complete() -> None:
    kinds = {type(make(n)).__name__ for n in ALL}
    assert {"FSQ", "LFQ", "BSQ", "IBQ", "VQ", "EMAVQ", "FactorizedVQ", "SimVQ", "ResidualQuantizer"} <= kinds
    assert "GroupedQuantizer" in kinds
