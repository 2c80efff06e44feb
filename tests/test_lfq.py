"""LFQ: sign codes, indices, and the entropy terms against a brute-force (N, 2^bits) softmax."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vqkit.quantizers import LFQ
from vqkit.quantizers.lfq import exact_codebook_entropy


def all_codes(bits: int) -> torch.Tensor:
    """(2^bits, bits) of ±1; row c has +1 at channel i iff bit i of c is set (written independently)."""
    rows = [[1.0 if (c >> i) & 1 else -1.0 for i in range(bits)] for c in range(2**bits)]
    return torch.tensor(rows, dtype=torch.float64)


def brute_force_entropies(z: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean per-sample entropy, codebook entropy) from the full softmax over all 2^bits codes."""
    codes = all_codes(z.shape[-1]).to(z.dtype)
    sq = (z.unsqueeze(1) - codes.unsqueeze(0)).pow(2).sum(-1)  # (N, 2^bits)
    logits = -sq / temperature
    log_p = F.log_softmax(logits, dim=1)
    p = log_p.exp()
    per_sample = -(p * log_p).sum(dim=1).mean()
    avg = p.mean(dim=0)
    codebook = -torch.special.xlogy(avg, avg).sum()
    return per_sample, codebook


TEMPERATURES = [0.01, 0.05, 0.3, 1.0, 3.0]


def _z(n: int, bits: int, temperature: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # keep logits 4z/τ in a range where the distribution is neither one-hot nor uniform
    return torch.randn(n, bits, generator=g) * max(0.1, temperature / 2)


@pytest.mark.parametrize("bits", [6, 8, 10])
@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_entropy_terms_match_brute_force(bits: int, temperature: float) -> None:
    q = LFQ(bits, temperature=temperature, codebook_entropy="exact")
    z = _z(96, bits, temperature, seed=bits)
    per_sample, codebook = q.entropy_terms(z)
    ref_ps, ref_cb = brute_force_entropies(z.double(), temperature)
    assert per_sample.ndim == 0 and codebook.ndim == 0
    torch.testing.assert_close(per_sample.double(), ref_ps, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(codebook.double(), ref_cb, rtol=1e-4, atol=1e-5)
    assert 0 <= codebook.item() <= bits * math.log(2) + 1e-4


def test_entropy_extremes() -> None:
    bits = 8
    q = LFQ(bits, temperature=1.0)
    # z = 0: every code equally likely -> both entropies are bits·log 2
    ps, cb = q.entropy_terms(torch.zeros(10, bits))
    assert ps.item() == pytest.approx(bits * math.log(2), rel=1e-5)
    assert cb.item() == pytest.approx(bits * math.log(2), rel=1e-5)
    # one confident token repeated: per-sample and codebook entropy both ~0
    z = torch.full((10, bits), 50.0)
    ps, cb = q.entropy_terms(z)
    assert ps.item() == pytest.approx(0.0, abs=1e-5) and cb.item() == pytest.approx(0.0, abs=1e-5)
    # 4 confident distinct codes, equally often -> codebook entropy log 4
    signs = all_codes(bits)[[0, 5, 77, 255]].float() * 50
    ps, cb = q.entropy_terms(signs.repeat(3, 1))
    assert cb.item() == pytest.approx(math.log(4), rel=1e-4)


@pytest.mark.parametrize("bits", [6, 9])
@pytest.mark.parametrize("temperature", [0.1, 1.0, 2.5])
def test_entropy_gradients_match_brute_force(bits: int, temperature: float) -> None:
    q = LFQ(bits, temperature=temperature, codebook_entropy="exact")
    z0 = _z(64, bits, temperature, seed=100 + bits)
    z32 = z0.clone().requires_grad_()
    z64 = z0.double().requires_grad_()
    ps, cb = q.entropy_terms(z32)
    ref_ps, ref_cb = brute_force_entropies(z64, temperature)
    for ours, ref in ((cb, ref_cb), (ps, ref_ps), (ps - 0.7 * cb, ref_ps - 0.7 * ref_cb)):
        (g,) = torch.autograd.grad(ours, z32, retain_graph=True)
        (g_ref,) = torch.autograd.grad(ref, z64, retain_graph=True)
        assert g_ref.abs().max() > 0
        scale = g_ref.abs().max().item()
        torch.testing.assert_close(g.double(), g_ref, rtol=1e-3, atol=1e-4 * scale)


def test_exact_codebook_entropy_function_on_logits() -> None:
    """exact_codebook_entropy(logits) with p(c|n) = Π σ(c_i·logit_i): brute force over all codes."""
    torch.manual_seed(0)
    for bits in (1, 2, 5, 7):
        logits = torch.randn(40, bits) * 3
        codes = all_codes(bits)
        log_p = F.logsigmoid(codes.unsqueeze(0) * logits.double().unsqueeze(1)).sum(-1)  # (N, 2^bits)
        avg = log_p.exp().mean(0)
        ref = -torch.special.xlogy(avg, avg).sum()
        torch.testing.assert_close(exact_codebook_entropy(logits).double(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("temperature", [0.3, 1.0])
def test_factorized_entropy_is_sum_of_bit_entropies_and_upper_bound(temperature: float) -> None:
    bits = 8
    z = _z(128, bits, temperature, seed=3)
    exact = LFQ(bits, temperature=temperature, codebook_entropy="exact")
    fact = LFQ(bits, temperature=temperature, codebook_entropy="factorized")
    ps_e, cb_e = exact.entropy_terms(z)
    ps_f, cb_f = fact.entropy_terms(z)
    torch.testing.assert_close(ps_e, ps_f)
    p = torch.sigmoid(4 * z.double() / temperature).mean(0)
    ref = -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p)).sum()
    torch.testing.assert_close(cb_f.double(), ref, rtol=1e-4, atol=1e-5)
    assert cb_f.item() >= cb_e.item() - 1e-5


def test_training_loss_matches_brute_force() -> None:
    bits, temperature = 8, 0.5
    q = LFQ(bits, entropy_weight=0.3, commitment_weight=0.25, gamma=0.8, temperature=temperature)
    z = _z(4 * 16, bits, temperature, seed=9).reshape(4, 16, bits)
    q.train()
    out = q(z)
    ps, cb = brute_force_entropies(z.reshape(-1, bits).double(), temperature)
    commit = (z - torch.where(z > 0, 1.0, -1.0)).pow(2).mean()
    expected = 0.25 * commit.double() + 0.3 * (ps - 0.8 * cb)
    torch.testing.assert_close(out.loss.double(), expected, rtol=1e-4, atol=1e-5)
    q.eval()  # entropy term only in training
    torch.testing.assert_close(q(z).loss, 0.25 * commit)


@pytest.mark.parametrize("bit_order", ["lsb", "msb"])
def test_indices_and_codes(bit_order: str) -> None:
    q = LFQ(4, bit_order=bit_order)  # type: ignore[arg-type]
    assert q.codebook_size == 16
    z = torch.tensor([[0.3, -0.2, 0.1, -5.0], [-1.0, -1.0, -1.0, -1.0], [2.0, 2.0, 2.0, 2.0], [-0.1, 0.5, -0.1, 0.5]])
    out = q(z)
    codes = all_codes(4).float()
    if bit_order == "lsb":
        assert out.indices.tolist() == [1 + 4, 0, 15, 2 + 8]
    else:  # channel 0 is the most significant bit
        assert out.indices.tolist() == [8 + 2, 0, 15, 4 + 1]
        codes = codes.flip(-1)
    expected = torch.where(z > 0, 1.0, -1.0)
    assert torch.equal(out.quantized, expected)
    assert torch.equal(q.decode(out.indices), expected)
    assert torch.equal(q.decode(torch.arange(16)), codes)


def test_projection_and_entropy_through_projection() -> None:
    torch.manual_seed(0)
    q = LFQ(16, bits=10, temperature=0.5)
    assert q.codebook_size == 1024 and q.dim == 16
    z = torch.randn(3, 7, 16)
    q.train()
    out = q(z)
    assert out.indices.shape == (3, 7)
    x = q.project_in(z)
    assert torch.equal(out.indices, q.encode(z))
    ps, cb = brute_force_entropies(x.detach().reshape(-1, 10).double(), 0.5)
    commit = (x - torch.where(x > 0, 1.0, -1.0)).pow(2).mean()
    expected = q.commitment_weight * commit + q.entropy_weight * (ps - q.gamma * cb)
    torch.testing.assert_close(out.loss.double(), expected.double(), rtol=1e-4, atol=1e-5)
    out.loss.backward()
    assert q.project_in.weight.grad is not None and q.project_in.weight.grad.abs().sum() > 0


def test_bad_configuration() -> None:
    with pytest.raises(ValueError, match="exact"):
        LFQ(30, codebook_entropy="exact")
    assert LFQ(30).codebook_entropy == "factorized"
    assert LFQ(10).codebook_entropy == "exact"
    with pytest.raises(ValueError, match="temperature"):
        LFQ(8, temperature=0.0)
    with pytest.raises(ValueError, match="bits"):
        LFQ(8, bits=0)
    assert LFQ(12, bits=10).bits_per_token == 10.0


# -- large logits -----------------------------------------------------------------------------
def _empirical_entropy(signs: torch.Tensor) -> float:
    """Entropy (nats) of the distribution of the rows' sign patterns: the saturated codebook entropy."""
    counts = torch.unique(signs, dim=0, return_counts=True)[1].double()
    p = counts / counts.sum()
    return float(-(p * p.log()).sum())


@pytest.mark.parametrize("bits", [6, 9])  # exact mode with even and uneven halves
@pytest.mark.parametrize("magnitude", [1e2, 1e5, 1e10, 1e30, 1e37])
def test_entropy_terms_stay_exact_for_large_logits(bits: int, magnitude: float) -> None:
    """|z| ≥ 1e2 at τ = 0.01 makes every logit ≥ 4e4: p(c|z) is one-hot, the per-sample entropy 0 and
    the codebook entropy that of the empirical sign patterns. The c·x/2 - log(2cosh(x/2)) form gave
    garbage from logits of ~1e7 and NaN from ~1e10; logits beyond float32 (|z| > 8.5e35) gave NaN."""
    g = torch.Generator().manual_seed(bits)
    signs = torch.randint(0, 2, (40, bits), generator=g).float() * 2 - 1
    signs[20:] = signs[:20]  # repeated patterns: the entropy is not simply log N
    z = signs * (1 + torch.rand(40, bits, generator=g)) * magnitude
    q = LFQ(bits, temperature=0.01)
    per_sample, codebook = q.entropy_terms(z)
    assert per_sample.item() == 0.0
    assert codebook.item() == pytest.approx(_empirical_entropy(signs), rel=1e-5)
    q.train()
    z.requires_grad_()
    out = q(z)
    assert not torch.isnan(out.loss)  # the commitment squares |z|: inf beyond ~1.8e19, never NaN
    (grad,) = torch.autograd.grad(out.loss, z)
    assert torch.isfinite(grad).all()


def test_projection_overflow_is_refused() -> None:
    q = LFQ(12, bits=8)
    with torch.no_grad():
        q.project_in.weight.fill_(1.0)  # 12 · 3e38 overflows
    z = torch.full((2, 5, 12), 3e38)
    for f in (q, q.encode):
        with pytest.raises(ValueError, match=r"project_in\(z\) is NaN or Inf although z is finite"):
            f(z)
    q.check_finite = False
    q.encode(z)  # unchecked: no error


def test_size_limits() -> None:
    assert LFQ(62, codebook_entropy="factorized").codebook_size == 2**62  # the largest: an int64 size
    with pytest.raises(ValueError, match=r"bits must be in \[1, 62\].*got 63"):
        LFQ(63)
    with pytest.raises(ValueError, match=r"LFQ: dim must be >= 1, got 0"):
        LFQ(0, bits=4)
    q = LFQ(62, codebook_entropy="factorized")
    z = torch.ones(3, 62)
    z[1] = -1
    z[2, :61] = -1
    assert q.encode(z).tolist() == [2**62 - 1, 0, 1]  # MSB first: the last channel is bit 0
    z[2] = -z[2]
    assert q.encode(z).tolist() == [2**62 - 1, 0, 2**62 - 2]
    lsb = LFQ(62, codebook_entropy="factorized", bit_order="lsb")
    assert lsb.encode(z).tolist() == [2**62 - 1, 0, 2**61 - 1]
