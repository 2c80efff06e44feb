"""Grouped (multi-head) quantization: channel groups, group-major indices, summed losses, the codec, vqp parity."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from conftest import fsq_preimage
from vqkit.codec import TokenFile
from vqkit.modalities import codec_for
from vqkit.models import Tokenizer, TokenizerConfig, build_quantizer
from vqkit.quantizers import FSQ, LFQ, VQ, GroupedQuantizer, ResidualQuantizer, SimVQ, SymbolLayout
from vqkit.train.sections import QuantizerConfig
from vqkit.validation import ConfigError

INNER = {
    "fsq": lambda: FSQ((8, 5, 5)),
    "fsq_proj": lambda: FSQ((5, 4), dim=3),
    "lfq": lambda: LFQ(3),
    "vq": lambda: VQ(3, 16),
    "vq_rot": lambda: VQ(3, 16, gradient="rotation"),
    "simvq": lambda: SimVQ(3, 16),
    "rfsq": lambda: ResidualQuantizer([FSQ((5, 5, 5)), FSQ((5, 5, 5))], "scale"),
    "rvq_ln": lambda: ResidualQuantizer([VQ(3, 8), VQ(3, 8)], "layernorm"),
}


def _z(groups: int, seed: int = 0, lead: tuple[int, ...] = (2, 5, 4)) -> torch.Tensor:
    return torch.randn(*lead, 3 * groups, generator=torch.Generator().manual_seed(seed)) * 1.5


@pytest.mark.parametrize("name", sorted(INNER))
def test_separate_groups_are_the_inner_quantizers_on_their_channels(name: str) -> None:
    """Output = concatenation of each group's quantizer on its 3 channels; indices group-major (..., G·S); loss
    = sum over groups; gradient = each group's own."""
    torch.manual_seed(0)
    groups = 3
    q = GroupedQuantizer(INNER[name], groups).train()
    inner = [copy.deepcopy(m) for m in q.inner]  # the same modules, run one by one
    s = inner[0].num_stages
    assert (q.dim, q.num_stages, q.groups, q.inner_stages) == (3 * groups, groups * s, groups, s)
    z = _z(groups).requires_grad_()
    w = torch.randn(z.shape, generator=torch.Generator().manual_seed(9))
    out = q(z)
    (grad,) = torch.autograd.grad((out.quantized * w).sum() + out.loss, z)
    chunks = z.detach().split(3, dim=-1)
    refs, grads = [], []
    for m, chunk, wc in zip(inner, chunks, w.split(3, dim=-1), strict=True):
        c = chunk.clone().requires_grad_()
        o = m.train()(c)
        grads.append(torch.autograd.grad((o.quantized * wc).sum() + o.loss, c)[0])
        refs.append(o)
    assert out.indices.shape == (*z.shape[:-1], groups * s)
    per_group = out.indices.unflatten(-1, (groups, s))
    for g, ref in enumerate(refs):
        expected = ref.indices if s > 1 else ref.indices.unsqueeze(-1)
        assert torch.equal(per_group[..., g, :], expected), g
    torch.testing.assert_close(out.quantized, torch.cat([r.quantized for r in refs], dim=-1), rtol=0, atol=0)
    torch.testing.assert_close(out.loss, sum(r.loss for r in refs), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(grad, torch.cat(grads, dim=-1), rtol=1e-5, atol=1e-6)
    q.eval()
    with torch.no_grad():
        assert torch.equal(q.decode(q.encode(z)), q(z).quantized)


@pytest.mark.parametrize("name", ["fsq", "vq", "simvq", "rfsq"])
def test_shared_is_one_quantizer_on_every_group(name: str) -> None:
    """shared=True: one module (one codebook) for all groups; loss = G × its loss on all groups' tokens, which is
    the sum of its per-group losses for these mean-squared losses."""
    torch.manual_seed(0)
    q = GroupedQuantizer(INNER[name], 4, shared=True).train()
    assert len(q.inner) == 1
    single = copy.deepcopy(q.inner[0]).train()
    z = _z(4, seed=3)
    out = q(z)
    s = single.num_stages
    per = [single(chunk) for chunk in z.split(3, dim=-1)]
    torch.testing.assert_close(out.quantized, torch.cat([p.quantized for p in per], dim=-1))
    expected = torch.stack([p.indices if s > 1 else p.indices.unsqueeze(-1) for p in per], dim=-2).flatten(-2)
    assert torch.equal(out.indices, expected)
    if name != "rfsq":  # LayerNorm-free, statistics-free: the pooled mean is the per-group mean
        torch.testing.assert_close(out.loss, sum(p.loss for p in per), rtol=1e-5, atol=1e-7)
    n_params = sum(p.numel() for p in q.parameters())
    assert n_params == sum(p.numel() for p in single.parameters())


def test_indices_bijection_and_layout() -> None:
    q = GroupedQuantizer(lambda: FSQ((4, 3)), 2)
    assert q.codebook_sizes == (12, 12) and q.bits_per_token == pytest.approx(2 * math.log2(12))
    assert q.symbol_layout() == (SymbolLayout.digits((4, 3)),) * 2
    every = torch.cartesian_prod(torch.arange(12), torch.arange(12))  # (144, 2): all index pairs
    codes = q.decode(every)
    assert codes.shape == (144, 4)
    preimage = torch.cat([fsq_preimage((4, 3), every[:, 0]), fsq_preimage((4, 3), every[:, 1])], dim=-1)
    assert torch.equal(q.encode(preimage), every)  # index -> code -> index: a bijection
    assert torch.equal(codes[:, :2], FSQ((4, 3)).decode(every[:, 0]))
    assert torch.equal(codes[:, 2:], FSQ((4, 3)).decode(every[:, 1]))
    r = GroupedQuantizer(INNER["rfsq"], 3)
    assert r.symbol_layout() == (SymbolLayout.digits((5, 5, 5)),) * 6
    assert r.code_vectors(3) is None and r.num_stages == 6
    v = GroupedQuantizer(lambda: VQ(3, 16), 2)
    torch.testing.assert_close(v.code_vectors(1), v.inner[1].codebook.detach())
    with pytest.raises(ValueError, match=r"stage 2 out of range \(2 = 2 groups × 1 stages\)"):
        v.code_vectors(2)


def test_decode_needs_every_column() -> None:
    q = GroupedQuantizer(INNER["rfsq"], 3).eval()
    idx = q.encode(_z(3))
    for bad in (idx[..., :4], idx[..., :1], torch.cat([idx, idx[..., :1]], -1)):
        with pytest.raises(ValueError, match=r"expected indices of shape \(\.\.\., 6\) \(3 groups × 2 stages"):
            q.decode(bad)
    bad = idx.clone()
    bad[0, 0, 0, 5] = 125
    with pytest.raises(ValueError, match=r"out of range at stage 5"):
        q.decode(bad)


def test_usage_per_group() -> None:
    q = GroupedQuantizer(lambda: FSQ((5, 5, 5)), 2)
    z = torch.cat([torch.zeros(100, 3), torch.randn(100, 3, generator=torch.Generator().manual_seed(0)) * 3], -1)
    m = q(z).metrics
    assert m["usage_0"].item() == pytest.approx(1 / 125)
    used = q.encode(z)[:, 1].unique().numel()
    assert used > 10 and m["usage_1"].item() == pytest.approx(used / 125)
    assert m["usage"].item() == pytest.approx((1 + used) / 250)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: GroupedQuantizer(lambda: FSQ((5, 5)), 1), r"groups must be >= 2, got 1"),
        (lambda: GroupedQuantizer(lambda: FSQ((5, 5)), 2.5), r"invalid groups = 2.5"),
        (lambda: GroupedQuantizer(lambda: FSQ((5, 5)), 4096), r"groups must be <= 1024, got 4096"),
        (lambda: GroupedQuantizer(lambda: FSQ((5, 5)), 2, shared="yes"), r"shared and check_finite must be"),
        (lambda: GroupedQuantizer(lambda: torch.nn.Linear(2, 2), 2), r"returned a Linear, not a vqkit quantizer"),
        (lambda: GroupedQuantizer(lambda: ResidualQuantizer([FSQ((5, 5))], "layernorm", layernorm_stats="instance"),
                                  2), r"side information"),
    ],
)
def test_bad_arguments_are_refused(build, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        build()


def test_mixed_inner_dims_are_refused() -> None:
    dims = iter([3, 4])
    with pytest.raises(ValueError, match=r"same dim and stages"):
        GroupedQuantizer(lambda: VQ(next(dims), 8), 2)


def test_registry_and_config() -> None:
    q = build_quantizer("grouped", {"inner": "fsq", "groups": 4, "levels": [8, 5, 5]})
    assert isinstance(q, GroupedQuantizer) and (q.dim, q.num_stages, q.shared) == (12, 4, False)
    q = build_quantizer("grouped", {"inner": "vq", "groups": 2, "shared": True, "dim": 4, "codebook_size": 8,
                                    "gradient": "rotation"})
    assert q.shared and q.inner[0].gradient == "rotation" and q.dim == 8
    q = build_quantizer("grouped", {"inner": "rfsq", "groups": 2, "levels": [5, 5], "num_stages": 3})
    assert q.num_stages == 6
    QuantizerConfig("grouped", {"inner": "lfq", "groups": 2, "dim": 4})
    with pytest.raises(ConfigError, match=r"args.groups = '2'"):
        QuantizerConfig("grouped", {"inner": "lfq", "groups": "2", "dim": 4})
    with pytest.raises(ValueError, match=r"unknown inner quantizer 'fsqq'"):
        build_quantizer("grouped", {"inner": "fsqq", "groups": 2})
    with pytest.raises(ValueError, match=r"VQ: invalid gradient = 'x'"):
        build_quantizer("grouped", {"inner": "vq", "groups": 2, "dim": 4, "codebook_size": 8, "gradient": "x"})
    with pytest.raises(ValueError, match=r"groups must be >= 2"):
        build_quantizer("grouped", {"inner": "lfq", "groups": 1, "dim": 4})


# -- the codec -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [{"inner": "fsq", "groups": 2, "levels": [8, 5, 5]},
                                  {"inner": "vq", "groups": 3, "shared": True, "dim": 2, "codebook_size": 16},
                                  {"inner": "rfsq", "groups": 2, "levels": [5, 5, 3], "num_stages": 2,
                                   "conditioning": "scale"}])
def test_vqt_round_trip(args: dict) -> None:
    torch.manual_seed(0)
    config = TokenizerConfig(arch="rfsq_conv", quantizer="grouped", quantizer_args=args, conv_channels=(8, 16))
    model = Tokenizer(config).eval()
    codec = codec_for(model)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:20, 0:28]
    image = np.clip(np.stack([x * 9, y * 7, (x + y) * 4], axis=-1) + rng.normal(0, 10, (20, 28, 3)), 0, 255)
    image = image.astype(np.uint8)
    grid, side, shape = codec.tokens(image)
    assert side is None and grid.shape[0] == model.quantizer.num_stages
    expected = codec.render(grid, side, shape)
    codec.tables = codec.fit_prior([image])
    for prior in ("uniform", "static", "context"):
        data = codec.encode(image, prior).data
        assert TokenFile.from_bytes(data).grid == grid.shape
        assert np.array_equal(codec.decode(data), expected), prior
    with torch.no_grad():
        recon = model.decode(model.encode(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1))
    pixels = recon[0].add(1).mul(127.5).round().clamp(0, 255).permute(1, 2, 0).numpy().astype(np.uint8)
    assert np.array_equal(expected, pixels)


# -- parity with vector-quantize-pytorch ---------------------------------------------------------------
vqp = pytest.importorskip("vector_quantize_pytorch", reason="vector-quantize-pytorch (vqp) is not installed")


@pytest.mark.parametrize("levels", [(8, 5, 5), (4, 4, 4, 4), (2, 3, 7)])
def test_vqp_grouped_residual_fsq_parity(levels: tuple[int, ...]) -> None:
    """vqp's GroupedResidualFSQ(num_quantizers=1) against GroupedQuantizer of symmetric FSQs.

    vqp's ResidualFSQ uses FSQ's symmetric grid (``preserve_symmetry=True``) behind a soft clamp
    b = clamp(c·tanh(x/c), -1, 1), c = 1 + 1/(L-1); vqkit's symmetric FSQ bounds with tanh(x). The grids (code
    values), digits and mixed-radix indices agree: every index decodes to the same code, and inputs that both
    bound to the same value b (x for vqp, atanh(b) for vqkit) get the same indices and codes. With
    num_quantizers > 1 vqp divides stage k's residual by the fixed L^-k and clamps; vqkit's scale conditioning
    learns α_k and bounds by tanh, so only the first stage's grid is shared.
    """
    groups, n = 3, len(levels)
    ref = vqp.GroupedResidualFSQ(dim=groups * n, groups=groups, levels=list(levels), num_quantizers=1)
    ours = GroupedQuantizer(lambda: FSQ(levels, symmetric=True), groups)
    lv = torch.tensor(levels, dtype=torch.float64)
    size = math.prod(levels)
    # every index: the same code (vqp's implicit codebook = its decode of indices)
    every = torch.arange(size)
    idx = every[:, None].expand(size, groups)
    vqp_codes = ref.get_output_from_indices(idx.permute(1, 0)[:, None, :, None])  # (1, size, G·n)
    torch.testing.assert_close(ours.decode(idx), vqp_codes[0], rtol=0, atol=1e-7)
    # the same bounded value b in each cell (cell centre pulled 0.1 of a cell toward 0: never on a boundary)
    g = torch.Generator().manual_seed(0)
    digits = (torch.rand(2, 400, groups, n, generator=g, dtype=torch.float64) * lv).floor()
    b = digits * (2 / (lv - 1)) - 1
    b = b - 0.2 / (lv - 1) * torch.sign(b)
    c = 1 + 1 / (lv - 1)
    x_vqp = (c * torch.atanh(b / c)).flatten(-2).float()
    x_ours = torch.atanh(b).flatten(-2).float()
    quantized, indices = ref(x_vqp)  # indices (G, B, N, 1)
    out = ours(x_ours)
    assert torch.equal(out.indices, indices[..., 0].permute(1, 2, 0).long())
    torch.testing.assert_close(out.quantized, quantized, rtol=0, atol=1e-7)
    expected = (digits * lv.cumprod(-1).div(lv).long()).sum(-1).long()  # independent mixed radix, digit 0 lowest
    assert torch.equal(out.indices, expected)
