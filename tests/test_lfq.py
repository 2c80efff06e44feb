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


def test_indices_and_codes() -> None:
    q = LFQ(4)
    assert q.codebook_size == 16
    z = torch.tensor([[0.3, -0.2, 0.1, -5.0], [-1.0, -1.0, -1.0, -1.0], [2.0, 2.0, 2.0, 2.0], [-0.1, 0.5, -0.1, 0.5]])
    out = q(z)
    assert out.indices.tolist() == [1 + 4, 0, 15, 2 + 8]
    expected = torch.where(z > 0, 1.0, -1.0)
    assert torch.equal(out.quantized, expected)
    assert torch.equal(q.decode(out.indices), expected)
    assert torch.equal(q.decode(torch.arange(16)), all_codes(4).float())


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
