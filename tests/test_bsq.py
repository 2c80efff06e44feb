"""BSQ: sphere corners, LSB-first indices, and the entropy terms against a brute-force (N, 2^bits) softmax."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vqkit.codec import TokenFile
from vqkit.modalities import codec_for
from vqkit.models import Tokenizer, TokenizerConfig, build_quantizer
from vqkit.quantizers import BSQ, SymbolLayout


def corners(bits: int) -> torch.Tensor:
    """(2^bits, bits) float64 sphere corners; row c has +1/√bits at channel i iff bit i of c is set
    (written independently of vqkit)."""
    rows = [[1.0 if (c >> i) & 1 else -1.0 for i in range(bits)] for c in range(2**bits)]
    return torch.tensor(rows, dtype=torch.float64) / math.sqrt(bits)


def brute_force_entropies(u: torch.Tensor, temperature: float, groups: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean per-sample entropy, Σ_g H(mean_n p_g)) from the softmax of -||u - c||²/τ over all 2^bits corners;
    p_g is the marginal of p over the bits of group g (consecutive bits, group 0 from bit 0)."""
    bits = u.shape[-1]
    codes = corners(bits).to(u.dtype)
    log_p = F.log_softmax(-(u.unsqueeze(1) - codes.unsqueeze(0)).pow(2).sum(-1) / temperature, dim=1)  # (N, 2^bits)
    p = log_p.exp()
    per_sample = -(p * log_p).sum(dim=1).mean()
    index = torch.arange(2**bits)
    codebook, start = u.new_zeros(()), 0
    for g in groups:
        pattern = (index >> start) & (2**g - 1)  # the group's bits of each code
        marginal = torch.zeros(u.shape[0], 2**g, dtype=u.dtype).index_add_(1, pattern, p)
        avg = marginal.mean(dim=0)
        codebook = codebook - torch.special.xlogy(avg, avg).sum()
        start += g
    return per_sample, codebook


def _u(n: int, bits: int, temperature: float, seed: int) -> torch.Tensor:
    """Points on the sphere whose bit logits 4u/(τ√bits) are neither all saturated nor all near 0."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, bits, generator=g, dtype=torch.float64)
    x[:, 0] += 0.5  # a skewed bit, so that the codebook entropy is not at its maximum
    return F.normalize(x, dim=-1)


# -- codes and indices ----------------------------------------------------------------------------
@pytest.mark.parametrize("bit_order", ["lsb", "msb"])
@pytest.mark.parametrize("bits", [1, 2, 5, 8])
def test_codes_are_the_sphere_corners_in_bit_order(bits: int, bit_order: str) -> None:
    q = BSQ(bits, bit_order=bit_order)  # type: ignore[arg-type]
    codes = q.decode(torch.arange(2**bits))
    assert codes.dtype == torch.float32
    expected = corners(bits) if bit_order == "lsb" else corners(bits).flip(-1)  # msb: channel 0 the top bit
    torch.testing.assert_close(codes.double(), expected, rtol=0, atol=1e-7)
    torch.testing.assert_close(codes.norm(dim=-1), torch.ones(2**bits), rtol=0, atol=1e-6)
    assert torch.equal(q.encode(codes), torch.arange(2**bits))  # index -> code -> index: a bijection


def test_bit_j_is_channel_j() -> None:
    z = -torch.ones(6, 6) + 2 * torch.eye(6)  # row j: only channel j positive
    assert BSQ(6, bit_order="lsb").encode(z).tolist() == [1, 2, 4, 8, 16, 32]
    assert BSQ(6).encode(z).tolist() == [32, 16, 8, 4, 2, 1]  # msb, the default: channel 0 is the top bit
    assert BSQ(6).encode(torch.zeros(1, 6)).item() == 0  # sign(0) = -1: bit clear


@pytest.mark.parametrize("bits", [1, 3, 6])
def test_nearest_corner_against_brute_force(bits: int) -> None:
    q = BSQ(bits, bit_order="lsb").eval()  # corners() is in LSB order
    z = torch.randn(500, bits, generator=torch.Generator().manual_seed(bits)) * 3
    u = F.normalize(z.double(), dim=-1)
    dist = (u.unsqueeze(1) - corners(bits).unsqueeze(0)).pow(2).sum(-1)  # (N, 2^bits)
    nearest = dist.argmin(dim=1)
    out = q(z)
    assert torch.equal(out.indices, nearest)
    torch.testing.assert_close(out.quantized.double(), corners(bits)[nearest], rtol=0, atol=1e-7)


@pytest.mark.parametrize(("dim", "bits"), [(8, 8), (12, 8), (5, 9)])
def test_decode_of_encode_is_the_eval_forward(dim: int, bits: int) -> None:
    torch.manual_seed(0)
    q = BSQ(dim, bits=bits).eval()
    z = torch.randn(2, 7, 5, dim) * 4
    out = q(z)
    assert out.indices.shape == (2, 7, 5) and out.indices.dtype == torch.int64
    assert torch.equal(q.encode(z), out.indices)
    assert torch.equal(q.decode(out.indices), out.quantized)
    if dim == bits:
        torch.testing.assert_close(out.quantized.norm(dim=-1), torch.ones(2, 7, 5), rtol=0, atol=1e-6)


def test_straight_through_gradient_is_that_of_the_normalisation() -> None:
    """d quantized / d z = d (z/||z||) / d z: the straight-through estimator of the sphere point u."""
    q = BSQ(6).train()
    z = torch.randn(40, 6, generator=torch.Generator().manual_seed(3)).requires_grad_()
    w = torch.randn(40, 6, generator=torch.Generator().manual_seed(4))
    out = q(z)
    (grad,) = torch.autograd.grad((out.quantized * w).sum(), z)
    zr = z.detach().double().requires_grad_()
    (ref,) = torch.autograd.grad((F.normalize(zr, dim=-1) * w.double()).sum(), zr)
    torch.testing.assert_close(grad.double(), ref, rtol=1e-5, atol=1e-6)
    assert not torch.equal(grad, torch.ones_like(grad))


# -- losses ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("bits", "group_size"), [(4, 1), (6, 2), (6, 3), (8, 8), (8, 3), (9, 4), (10, 10)])
@pytest.mark.parametrize("temperature", [0.01, 0.1, 1.0])
def test_entropy_terms_match_brute_force(bits: int, group_size: int, temperature: float) -> None:
    q = BSQ(bits, group_size=group_size, temperature=temperature)
    assert sum(q.groups) == bits and all(g <= group_size for g in q.groups)
    u = _u(128, bits, temperature, seed=bits + group_size)
    per_sample, codebook = q.entropy_terms(u.float())
    ref_ps, ref_cb = brute_force_entropies(u, temperature, list(q.groups))
    assert per_sample.ndim == 0 and codebook.ndim == 0
    torch.testing.assert_close(per_sample.double(), ref_ps, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(codebook.double(), ref_cb, rtol=1e-4, atol=1e-5)
    assert 0 <= codebook.item() <= bits * math.log(2) + 1e-4


def test_default_groups_are_the_papers_nine_bits() -> None:
    assert BSQ(18).groups == (9, 9)
    assert BSQ(20).groups == (9, 9, 2)
    assert BSQ(5).groups == (5,)
    assert BSQ(62).groups == (9,) * 6 + (8,)


@pytest.mark.parametrize(("dim", "bits"), [(6, 6), (10, 6)])
def test_loss_and_its_gradient_match_brute_force(dim: int, bits: int) -> None:
    """Training loss = cw·mean((u - q)²) + ew·(H_sample - γ·H_codebook), value and gradient; eval: commitment."""
    torch.manual_seed(0)
    cw, ew, gamma, tau = 0.3, 0.2, 0.7, 0.1
    q = BSQ(dim, bits=bits, group_size=4, commitment_weight=cw, entropy_weight=ew, gamma=gamma, temperature=tau)
    z = (torch.randn(64, dim, generator=torch.Generator().manual_seed(5)) * 2).requires_grad_()
    out = q.train()(z)
    (grad,) = torch.autograd.grad(out.loss, z)

    zr = z.detach().double().requires_grad_()
    x = q.project_in.double()(zr) if dim != bits else zr
    u = F.normalize(x, dim=-1)
    codes = torch.where(x > 0, 1.0, -1.0).double() / math.sqrt(bits)
    per_sample, codebook = brute_force_entropies(u, tau, [4, bits - 4])
    ref = cw * (u - codes).pow(2).mean() + ew * (per_sample - gamma * codebook)
    (ref_grad,) = torch.autograd.grad(ref, zr)
    q.float()
    torch.testing.assert_close(out.loss.double(), ref.detach(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-3, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(q.eval()(z).loss, cw * F.mse_loss(u.float(), codes.float()))


def test_entropy_terms_only_in_training() -> None:
    q = BSQ(8, commitment_weight=0.0)
    z = torch.randn(32, 8)
    assert q.eval()(z).loss.item() == 0.0
    assert q.train()(z).loss.item() != 0.0
    assert BSQ(8, entropy_weight=0.0, commitment_weight=0.0).train()(z).loss.item() == 0.0


# -- sizes, layout, arguments ----------------------------------------------------------------------------
def test_62_bits_accepted_63_refused() -> None:
    torch.manual_seed(0)
    q = BSQ(62)
    assert q.codebook_size == 2**62 and q.bits_per_token == 62.0
    assert q.symbol_layout() == (SymbolLayout.digits((2,) * 62),)
    z = torch.randn(4, 9, 62)
    out = q.train()(z)
    assert torch.isfinite(out.loss)
    expected = [sum(1 << (61 - j) for j in range(62) if v[j] > 0) for v in z.reshape(-1, 62).tolist()]  # MSB first
    assert out.indices.reshape(-1).tolist() == expected
    assert torch.equal(q.eval()(z).quantized, q.decode(q.encode(z)))
    top = q.decode(torch.tensor([2**62 - 1]))
    torch.testing.assert_close(top, torch.full((1, 62), 1 / math.sqrt(62)))
    for build in (lambda: BSQ(63), lambda: BSQ(8, bits=63)):
        with pytest.raises(ValueError, match=r"BSQ: bits must be in \[1, 62\] .*got 63"):
            build()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 0}, r"BSQ: dim must be >= 1, got 0"),
        ({"dim": 8, "bits": 0}, r"BSQ: bits must be in \[1, 62\]"),
        ({"dim": 8, "bits": "8"}, r"BSQ: invalid bits = '8'"),
        ({"dim": 8, "group_size": 0}, r"BSQ: group_size must be in \[1, min\(bits, 24\)\] = \[1, 8\] .*got 0"),
        ({"dim": 8, "group_size": 9}, r"BSQ: group_size .* got 9"),
        ({"dim": 30, "group_size": 25}, r"BSQ: group_size must be in \[1, min\(bits, 24\)\] = \[1, 24\] .*got 25"),
        ({"dim": 8, "group_size": 2.5}, r"BSQ: invalid group_size = 2.5"),
        ({"dim": 8, "temperature": 0.0}, r"BSQ: invalid temperature = 0.0"),
        ({"dim": 8, "temperature": float("nan")}, r"BSQ: invalid temperature = nan"),
        ({"dim": 8, "entropy_weight": -1.0}, r"BSQ: invalid entropy_weight = -1.0"),
        ({"dim": 8, "commitment_weight": float("inf")}, r"BSQ: invalid commitment_weight = inf"),
        ({"dim": 8, "gamma": "1"}, r"BSQ: invalid gamma = '1'"),
        ({"dim": 8, "check_finite": 1}, r"BSQ: invalid check_finite = 1"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BSQ(**kwargs)


def test_registry_builds_bsq() -> None:
    q = build_quantizer("bsq", {"dim": 12, "bits": 10, "group_size": 5})
    assert isinstance(q, BSQ) and (q.dim, q.bits, q.groups) == (12, 10, (5, 5))
    with pytest.raises(ValueError, match="group_size"):
        build_quantizer("bsq", {"dim": 12, "group_size": 0})


# -- the codec -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [{"dim": 10, "group_size": 4}, {"dim": 8, "bits": 20}])
def test_vqt_round_trip(args: dict) -> None:
    torch.manual_seed(0)
    config = TokenizerConfig(arch="rfsq_conv", quantizer="bsq", quantizer_args=args, conv_channels=(8, 16))
    model = Tokenizer(config).eval()
    codec = codec_for(model)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:20, 0:28]
    image = np.clip(np.stack([x * 9, y * 7, (x + y) * 4], axis=-1) + rng.normal(0, 10, (20, 28, 3)), 0, 255)
    image = image.astype(np.uint8)
    grid, side, shape = codec.tokens(image)
    assert side is None and grid.shape[0] == 1 and int(grid.max()) < 2 ** model.quantizer.bits
    expected = codec.render(grid, side, shape)
    codec.tables = codec.fit_prior([image])
    for prior in ("uniform", "static", "context"):
        data = codec.encode(image, prior).data
        assert TokenFile.from_bytes(data).grid == grid.shape
        assert np.array_equal(codec.decode(data), expected), prior
    with torch.no_grad():  # what the file decodes to is the tokenizer's own reconstruction
        recon = model.decode(model.encode(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1))
    pixels = recon[0].add(1).mul(127.5).round().clamp(0, 255).permute(1, 2, 0).numpy().astype(np.uint8)
    assert np.array_equal(expected, pixels)
