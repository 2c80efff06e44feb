"""Multi-scale residual quantization (VAR): the algorithm against an independent re-implementation of VAR's
``VectorQuantizer2``, prefix decoding, gradients, the token pyramid through the ``.vqt`` container and
coders, and the errors on bad input. The generic contract tests (tests/test_contract.py) feed inputs of
any leading shape ((N, dim), (B, T, dim)) and expect indices of shape ``z.shape[:-1]``: a pyramid takes
one square (B, h, w, dim) map and gives (B, Σ s_k²) tokens, so the parts of that contract that apply are
checked here instead."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vqkit.codec import PriorTables, StageSpec, TokenFile, coders
from vqkit.codec.priors import prior_of
from vqkit.models import Tokenizer, TokenizerConfig
from vqkit.models.registry import DEFAULT_QUANTIZER_ARGS, build_quantizer
from vqkit.quantizers import MultiScaleRQ
from vqkit.quantizers.multiscale import VAR_PATCH_NUMS, phi_assignment

SCALES = (1, 2, 3, 4, 6, 8)  # 3 and 6 do not divide 8: area/bicubic resampling of uneven cells
DIM, K = 4, 32


def make(seed: int = 0, **kw: object) -> MultiScaleRQ:
    torch.manual_seed(seed)
    options: dict = {"patch_nums": SCALES, **kw}
    return MultiScaleRQ(DIM, K, **options)


def latents(n: int = 3, seed: int = 1, kind: str = "random", side: int = 8) -> torch.Tensor:
    """(n, side, side, DIM): i.i.d. normal, or smooth fields (bilinear 2×2 upsampled) plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.randn(n, side, side, DIM, generator=g)
    low = torch.randn(n, DIM, 2, 2, generator=g)
    x = F.interpolate(low, size=(side, side), mode="bilinear", align_corners=False)
    return (x + 0.1 * torch.randn(n, DIM, side, side, generator=g)).permute(0, 2, 3, 1).contiguous()


def reference(q: MultiScaleRQ, z: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """VAR's algorithm written out on (B, C, H, W) with a float64 brute-force argmin: (f̂_k channels-last for
    every k, indices (B, L), loss) with the autograd graph of the loss to the codebook, φ and z."""
    f = z.permute(0, 3, 1, 2)
    b, c, h, w = f.shape
    rest, f_hat, loss, idx_all, partial = f.detach().clone(), torch.zeros_like(f), 0.0, [], []
    n = len(q.patch_nums)
    for k, s in enumerate(q.patch_nums):
        x = F.interpolate(rest, size=(s, s), mode="area") if k < n - 1 else rest
        flat = x.permute(0, 2, 3, 1).reshape(-1, c).double()
        idx = ((flat[:, None, :] - q.codebook.detach().double()[None]) ** 2).sum(-1).argmin(1)
        code = q.codebook[idx].reshape(b, s, s, c).permute(0, 3, 1, 2)
        up = F.interpolate(code, size=(h, w), mode="bicubic") if k < n - 1 else code
        phi = q.phi[q.phi_of_scale[k]]
        h_k = up * (1 - q.phi_ratio) + phi.conv(up) * q.phi_ratio
        f_hat = f_hat + h_k
        rest = rest - h_k.detach()
        idx_all.append(idx.reshape(b, -1))
        partial.append(f_hat.permute(0, 2, 3, 1))
        loss = loss + q.beta * F.mse_loss(f_hat.detach(), f) + F.mse_loss(f_hat, f.detach())
    return partial, torch.cat(idx_all, 1), loss / n


# -- the algorithm ------------------------------------------------------------------------------------
def test_matches_var_reference_and_prefix_decode() -> None:
    q = make().eval()
    with torch.no_grad():  # non-trivial φ convs and codebook (the init codes are all within ±1/K)
        q.codebook.normal_()
    z = latents()
    out = q(z)
    partial, idx, loss = reference(q, z)
    assert torch.equal(out.indices, idx)
    assert out.indices.shape == (3, sum(s * s for s in SCALES))
    torch.testing.assert_close(out.quantized, partial[-1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, loss, atol=1e-6, rtol=1e-5)
    for k, end in enumerate(np.cumsum([s * s for s in SCALES])):  # decoding the first k+1 scales gives f̂_{k+1}
        torch.testing.assert_close(q.decode(out.indices[:, :end]), partial[k], atol=1e-5, rtol=1e-5)


def test_decode_encode_equals_forward_in_eval_mode() -> None:
    q = make()
    z = latents()
    opt = torch.optim.Adam(q.parameters(), lr=1e-2)
    for fresh in (True, False):
        q.eval()
        with torch.no_grad():
            out = q(z)
        assert torch.equal(q.encode(z), out.indices)
        assert torch.equal(q.decode(q.encode(z)), out.quantized)
        q.train()  # a few steps, then again
        for step in range(3):
            o = q(latents(seed=10 + step))
            opt.zero_grad()
            (o.loss + o.quantized.square().mean()).backward()
            opt.step()
        assert fresh or not torch.equal(q.decode(q.encode(z)), out.quantized)  # training changed the model


@pytest.mark.parametrize("kind", ["random", "smooth"])
def test_error_after_k_scales_is_non_increasing(kind: str) -> None:
    """Trained on latents of one kind, held-out latents of that kind are reconstructed better by every
    further scale (VAR's loss trains every prefix), and the full pyramid removes most of the energy."""
    q = make(phi_ratio=0.5)
    opt = torch.optim.Adam(q.parameters(), lr=3e-2)
    for step in range(60):
        out = q(latents(16, seed=step, kind=kind))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    q.eval()
    z = latents(32, seed=1000, kind=kind)
    idx = q.encode(z)
    errors = [float((q.decode(idx[:, :end]) - z).pow(2).mean()) for end in np.cumsum([s * s for s in SCALES])]
    assert all(b <= a for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] < 0.4 * float(z.pow(2).mean()), errors


def test_phi_sharing_follows_var() -> None:
    assert phi_assignment(10, 4) == (0, 0, 1, 1, 1, 2, 2, 3, 3, 3)  # VAR's default: 4 partially shared convs
    assert phi_assignment(10, 1) == (0,) * 10
    assert phi_assignment(6, 6) == tuple(range(6))  # one conv per scale
    q = make()
    assert q.num_phi == 4 and len(q.phi) == 4 and q.phi_of_scale == phi_assignment(6, 4)
    assert len(make(phi_ratio=0.0).phi) == 0  # ratio 0: φ is the identity, no conv


def test_phi_ratio_zero_is_plain_multiscale_residual() -> None:
    q = make(phi_ratio=0.0)
    with torch.no_grad():
        q.codebook.normal_()
    idx = q.encode(latents())
    expected = sum(F.interpolate(q.codebook.detach()[g].permute(0, 3, 1, 2), size=(8, 8), mode="bicubic")
                   if g.shape[-1] < 8 else q.codebook.detach()[g].permute(0, 3, 1, 2) for g in q.split_scales(idx))
    torch.testing.assert_close(q.decode(idx), expected.permute(0, 2, 3, 1))


# -- gradients -------------------------------------------------------------------------------------
def test_gradients_match_reference_autograd() -> None:
    """Straight-through identity to z from the output; the loss's gradient to z, the codebook and every φ
    conv equal autograd through the written-out reference; the commitment gradient to z is the hand
    formula (β/K) Σ_k 2(z - f̂_k)/numel."""
    q = make()
    with torch.no_grad():
        q.codebook.normal_()
    z = latents().requires_grad_()
    out = q(z)
    (g_out,) = torch.autograd.grad(out.quantized.sum(), z)
    assert torch.equal(g_out, torch.ones_like(z))
    params = [q.codebook, *(p for phi in q.phi for p in phi.parameters())]
    ours = torch.autograd.grad(out.loss, [z, *params])
    partial, _, loss = reference(q, z)
    theirs = torch.autograd.grad(loss, [z, *params])
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-5)
    hand = sum(2 * (z.detach() - p.detach()) for p in partial) * q.beta / (len(SCALES) * z.numel())
    torch.testing.assert_close(ours[0], hand, atol=1e-7, rtol=1e-5)
    assert ours[1].abs().sum() > 0
    for phi, (w_grad, b_grad) in zip(q.phi, zip(ours[2::2], ours[3::2], strict=True), strict=True):
        assert w_grad.abs().sum() > 0 and b_grad.abs().sum() > 0, phi  # every conv is used by some scale


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_and_autocast(dtype: torch.dtype) -> None:
    q = make().eval()
    z16 = latents().to(dtype)
    out16, out32 = q(z16), q(z16.float())
    assert out16.quantized.dtype == dtype and torch.equal(out16.indices, out32.indices)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        auto = q(z16.float())
    assert torch.equal(auto.indices, out32.indices) and auto.quantized.dtype == torch.float32
    z = latents().to(dtype).requires_grad_()
    (grad,) = torch.autograd.grad(q.train()(z).quantized.float().sum(), z)
    assert grad.dtype == dtype and torch.isfinite(grad.float()).all()


# -- state -----------------------------------------------------------------------------------------
def test_encode_and_eval_forward_are_pure_and_decode_needs_only_state() -> None:
    q = make()
    before = {k: v.clone() for k, v in q.state_dict().items()}
    z = latents() * 3 + 5
    assert torch.equal(q.encode(z), q.encode(z))
    q.eval()(z)
    for k, v in q.state_dict().items():
        assert torch.equal(before[k], v), k
    other = make(seed=123)
    other.load_state_dict(q.state_dict())
    idx = q.encode(z)
    assert torch.equal(other.eval().decode(idx), q.decode(idx))
    assert torch.equal(q.decode(idx.int()), q.decode(idx))


def test_metrics_usage_and_perplexity() -> None:
    q = make()
    out = q(latents())
    flat = out.indices.reshape(-1)
    counts = torch.bincount(flat, minlength=K).double()
    p = counts[counts > 0] / counts.sum()
    assert out.metrics["usage"].item() == pytest.approx(flat.unique().numel() / K, rel=1e-6)
    assert out.metrics["perplexity"].item() == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-4)
    assert q.bits_per_token == 5.0 and q.bits_per_sample == 5.0 * q.num_tokens


# -- the token pyramid through the codec -------------------------------------------------------------
def test_pyramid_round_trips_through_vqt() -> None:
    """Each pyramid is a one-stage, one-dimensional token grid (1, L) of the quantizer's symbol layout:
    coded with every prior (tables fitted on pyramids), written as a ``.vqt`` file, read back, decoded."""
    q = make().eval()
    with torch.no_grad():
        q.codebook.normal_()
    z = latents(4, kind="smooth")
    idx = q.encode(z)
    specs = [StageSpec.from_layout(layout) for layout in q.symbol_layout()]
    grids = [row[None].numpy() for row in idx]
    tables = PriorTables.fit(specs, grids, [q.code_vectors(0).numpy()])
    for name in ("uniform", "static", "context"):
        prior = prior_of(name, specs, tables)
        for b, grid in enumerate(grids):
            payload, _ = coders.encode(prior, grid)
            file = TokenFile("image", name, bytes(16), (DIM, 8, 8), grid.shape, (K,), payload)
            back = TokenFile.from_bytes(file.to_bytes())
            tokens = coders.decode(prior_of(back.prior, specs, tables), back.payload, back.grid)
            assert np.array_equal(tokens, grid), name
            decoded = q.decode(torch.from_numpy(tokens))
            assert torch.equal(decoded, q.decode(idx[b : b + 1])), name
            coarse = q.decode(torch.from_numpy(tokens[:, : 1 + 4 + 9]))  # a prefix of the decoded file
            assert coarse.shape == (1, 8, 8, DIM)


def test_split_scales_layout() -> None:
    q = make()
    idx = q.encode(latents(2))
    grids = q.split_scales(idx)
    assert [tuple(g.shape) for g in grids] == [(2, s, s) for s in SCALES]
    assert torch.equal(torch.cat([g.reshape(2, -1) for g in grids], 1), idx)
    assert [g.shape[-1] for g in q.split_scales(idx[:, :5])] == [1, 2]
    assert [sl.stop - sl.start for sl in q.scale_slices()] == [s * s for s in SCALES]


# -- registry ------------------------------------------------------------------------------------------
def test_registry_builds_var_defaults() -> None:
    q = build_quantizer("msrq", DEFAULT_QUANTIZER_ARGS["msrq"])
    assert isinstance(q, MultiScaleRQ)
    assert q.patch_nums == VAR_PATCH_NUMS and q.num_tokens == 680 and q.codebook_size == 4096 and q.dim == 32
    small = build_quantizer("msrq", {"dim": 4, "codebook_size": 16, "patch_nums": [1, 2, 4]})
    assert small.num_phi == 3 and small(torch.randn(1, 4, 4, 4)).indices.shape == (1, 21)


def test_tokenizer_decodes_pyramid_prefixes_and_gives_the_codec_one_pyramid_a_map() -> None:
    torch.manual_seed(0)
    args = {"dim": 8, "codebook_size": 32, "patch_nums": [1, 2, 4, 8]}
    model = Tokenizer(TokenizerConfig(arch="rfsq_conv", conv_channels=(16, 32), quantizer="msrq",
                                      quantizer_args=args)).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    idx = model.encode(x)
    assert idx.shape == (2, 1 + 4 + 16 + 64)
    # the same codes through the same decoder; its convolutions may block differently across calls and
    # thread counts (the quantizer-level identity is exact: test_decode_encode_equals_forward_in_eval_mode)
    torch.testing.assert_close(model.decode(idx), model(x)[0], rtol=1e-5, atol=1e-6)
    assert model.decode(idx[:, :5]).shape == (2, 3, 32, 32)  # the first two scales
    with pytest.raises(ValueError, match=r"\(B, L\) \(a token pyramid\)"):
        model.decode(idx.reshape(2, 5, 17))
    assert model.pyramid == (1, 2, 4, 8)
    tokens, side = model.encode_tokens(x)
    assert side is None and torch.equal(tokens, idx[..., None])  # positions: the pyramid's slots, one stage
    assert torch.equal(model.decode_tokens(tokens[:, :5]), model.decode(idx[:, :5]))
    with pytest.raises(ValueError, match=r"\(B, 8, 8, 8\)"):  # a map of another size than the last scale
        model.encode_tokens(torch.zeros(1, 3, 64, 32))


# -- bad input --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 8, 6, DIM), (2, 6, 6, DIM), (8, 8, DIM), (2, 1, 8, 8, DIM)])
def test_latent_map_of_the_wrong_shape(shape: tuple[int, ...]) -> None:
    q = make()
    for f in (q, q.encode):
        with pytest.raises(ValueError, match=r"expected z of shape \(B, 8, 8, 4\).*patch_nums \(1, 2, 3, 4, 6, 8\)"):
            f(torch.randn(shape))


def test_wrong_dim_dtype_and_non_finite() -> None:
    q = make()
    for f in (q, q.encode):
        with pytest.raises(ValueError, match=r"shape \(\.\.\., 4\)"):
            f(torch.randn(2, 8, 8, DIM + 1))
        with pytest.raises(ValueError, match="floating point"):
            f(torch.ones(2, 8, 8, DIM, dtype=torch.long))
        for bad, word in ((float("nan"), "NaN"), (float("inf"), "Inf")):
            z = latents()
            z[0, 1, 2, 0] = bad
            with pytest.raises(ValueError, match=word):
                f(z)
        z = latents().double()
        z[0, 0, 0, 0] = 1e300
        with pytest.raises(ValueError, match="beyond float32 range"):
            f(z)
    q.check_finite = False
    z = latents()
    z[0, 1, 2, 0] = float("nan")
    assert q(z).indices.shape == (3, q.num_tokens)  # let through on request


def test_overflow_inside_is_refused() -> None:
    """Finite z whose reconstruction overflows float32 (huge codes through φ) is refused by name."""
    q = make()
    with torch.no_grad():
        q.codebook.fill_(3e38)
    with pytest.raises(ValueError, match="residual or the reconstruction"):
        q.encode(latents())


def test_bad_indices() -> None:
    q = make().eval()
    idx = q.encode(latents())
    with pytest.raises(ValueError, match=r"\(B, L\).*one of \(1, 5, 14, 30, 66, 130\)"):
        q.decode(idx[:, :7])  # not a whole number of scales
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        q.decode(idx.reshape(3, 10, 13))
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        q.decode(torch.cat([idx, idx[:, :1]], 1))
    bad = idx.clone()
    bad[0, -1] = K
    with pytest.raises(ValueError, match="out of range"):
        q.decode(bad)
    with pytest.raises(ValueError, match="integer"):
        q.decode(idx.float())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"patch_nums": (1, 4, 2, 8)}, r"strictly increasing"),
        ({"patch_nums": (1, 2, 2)}, r"strictly increasing"),
        ({"patch_nums": ()}, r"patch_nums"),
        ({"patch_nums": (0, 8)}, r"patch_nums"),
        ({"patch_nums": "128"}, r"patch_nums"),
        ({"phi_ratio": 1.5}, r"phi_ratio must be in \[0, 1\]"),
        ({"num_phi": 7}, r"num_phi must be in \[1, 6\]"),
        ({"num_phi": 0}, r"num_phi must be in \[1, 6\]"),
        ({"beta": -1.0}, r"beta"),
    ],
)
def test_constructor_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(**kwargs)
    with pytest.raises(ValueError, match="codebook_size must be >= 2"):
        MultiScaleRQ(DIM, 1)
