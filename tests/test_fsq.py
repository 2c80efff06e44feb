"""FSQ: grid, mixed-radix indices, bijection, reachability, precision, projection."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from conftest import fsq_digits, fsq_preimage
from vqkit.quantizers import FSQ
from vqkit.quantizers.fsq import _float_mixed_radix


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """The step-by-step straight-through rounding FSQ's fused bound+round must reproduce."""
    return x + (x.round() - x).detach()


def floor_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (x.floor() - x).detach()

CASES = [
    ((8,), False),
    ((8, 6), False),  # even
    ((5, 5, 3), False),  # odd
    ((8, 5, 5, 5), False),  # mixed
    ((7, 4, 3, 6), False),
    ((2, 4, 5), True),  # symmetric, with a level of 2
    ((2, 2, 3), True),
    ((8, 5, 5, 5), True),
    ((3, 6), True),
]
IDS = [f"{'sym' if s else 'asym'}-{'x'.join(map(str, lv))}" for lv, s in CASES]


def grid_values(level: int, symmetric: bool) -> torch.Tensor:
    """The grid of one channel, written out independently of vqkit."""
    k = torch.arange(level, dtype=torch.float64)
    if symmetric:
        return -1 + 2 * k / (level - 1)
    half_width = level // 2
    return (k - half_width) / half_width


def reference_codes(z: torch.Tensor, levels: tuple[int, ...], symmetric: bool) -> torch.Tensor:
    """FSQ of the papers (atanh shift, even-level offset, float64), no projection."""
    z = z.double()
    lv = torch.tensor(levels, dtype=torch.float64)
    if symmetric:
        steps = lv - 1
        return torch.floor(steps * (torch.tanh(z) + 1) / 2 + 0.5) * 2 / steps - 1
    half = (lv - 1) * (1 + 1e-3) / 2
    offset = torch.where(lv % 2 == 0, 0.5, 0.0)
    bounded = torch.tanh(z + torch.atanh(offset / half)) * half - offset
    return torch.round(bounded) / torch.div(lv, 2, rounding_mode="floor")


@pytest.mark.parametrize(("levels", "symmetric"), CASES, ids=IDS)
def test_index_code_bijection(levels: tuple[int, ...], symmetric: bool) -> None:
    q = FSQ(levels, symmetric=symmetric)
    k = math.prod(levels)
    assert q.codebook_size == k
    idx = torch.arange(k)
    codes = q.indices_to_codes(idx)
    assert codes.shape == (k, len(levels))
    assert torch.unique(codes, dim=0).shape[0] == k  # injective
    assert torch.equal(q.codes_to_indices(codes), idx)  # inverse
    # decode without projection gives the same codes
    torch.testing.assert_close(q.decode(idx), codes.float())
    # the code of index i is the grid value of i's mixed-radix digits (channel 0 least significant)
    digits = fsq_digits(levels, idx)
    for c, level in enumerate(levels):
        grid = grid_values(level, symmetric)
        torch.testing.assert_close(codes[:, c].double(), grid[digits[:, c]])


@pytest.mark.parametrize(("levels", "symmetric"), CASES, ids=IDS)
def test_every_index_reachable_from_preimages(levels: tuple[int, ...], symmetric: bool) -> None:
    q = FSQ(levels, symmetric=symmetric)
    idx = torch.arange(q.codebook_size)
    z = fsq_preimage(levels, idx, symmetric)
    codes = q.quantize_codes(z)
    assert torch.equal(q.codes_to_indices(codes), idx)
    assert torch.equal(q.encode(z), idx)
    out = q(z)
    assert torch.equal(out.indices, idx)
    assert out.metrics["usage"].item() == 1.0
    torch.testing.assert_close(out.quantized, q.indices_to_codes(idx).float())


@pytest.mark.parametrize(("levels", "symmetric"), CASES, ids=IDS)
def test_dense_grid_reaches_every_digit(levels: tuple[int, ...], symmetric: bool) -> None:
    """A dense scan of each channel hits every grid value, in order, and nothing else."""
    q = FSQ(levels, symmetric=symmetric)
    t = torch.linspace(-8, 8, 8001)
    z = t.unsqueeze(1).expand(-1, len(levels))
    codes = q.quantize_codes(z)
    for c, level in enumerate(levels):
        values = torch.unique(codes[:, c]).double()
        torch.testing.assert_close(values, grid_values(level, symmetric))
        assert (codes[1:, c] >= codes[:-1, c]).all()  # monotone in z
    # a dense 2-D scan over the first two channels hits every pair of digits
    if len(levels) >= 2:
        a, b = torch.meshgrid(torch.linspace(-5, 5, 161), torch.linspace(-5, 5, 161), indexing="ij")
        z2 = torch.zeros(a.numel(), len(levels))
        z2[:, 0], z2[:, 1] = a.reshape(-1), b.reshape(-1)
        digits = fsq_digits(levels, q.encode(z2))[:, :2]
        assert torch.unique(digits, dim=0).shape[0] == levels[0] * levels[1]


@pytest.mark.parametrize(("levels", "symmetric"), CASES, ids=IDS)
def test_codes_on_grid_and_match_reference(levels: tuple[int, ...], symmetric: bool) -> None:
    torch.manual_seed(0)
    q = FSQ(levels, symmetric=symmetric)
    z = torch.cat([torch.randn(2000, len(levels)) * 2, torch.randn(100, len(levels)) * 50])
    out = q(z)
    for c, level in enumerate(levels):
        grid = grid_values(level, symmetric)
        on_grid = ((out.quantized[:, c : c + 1].double() - grid).abs() < 1e-6).any(dim=1)
        assert on_grid.all(), f"channel {c} off the grid"
    torch.testing.assert_close(out.quantized.double(), reference_codes(z, levels, symmetric))
    assert torch.equal(q.indices_to_codes(out.indices), out.quantized)
    if symmetric:  # symmetric grid: negating z negates the code
        torch.testing.assert_close(q(-z).quantized, -out.quantized)


def test_asymmetric_even_grid_values() -> None:
    q = FSQ((8,))
    codes = q.indices_to_codes(torch.arange(8)).reshape(-1)
    expected = torch.tensor([-1, -0.75, -0.5, -0.25, 0, 0.25, 0.5, 0.75])
    assert torch.equal(codes, expected)
    z = torch.linspace(-10, 10, 10001).unsqueeze(1)
    assert torch.equal(torch.unique(q(z).quantized), expected)
    assert q(torch.zeros(1, 1)).quantized.item() == 0.0  # the offset keeps 0 on the grid


def test_odd_and_symmetric_grid_values() -> None:
    z = torch.linspace(-10, 10, 10001).unsqueeze(1)
    assert torch.equal(torch.unique(FSQ((5,))(z).quantized), torch.tensor([-1, -0.5, 0, 0.5, 1]))
    assert torch.equal(torch.unique(FSQ((2,), symmetric=True)(z).quantized), torch.tensor([-1.0, 1.0]))
    sym4 = torch.unique(FSQ((4,), symmetric=True)(z).quantized)
    torch.testing.assert_close(sym4, torch.tensor([-1, -1 / 3, 1 / 3, 1]))


def test_level_two_requires_symmetric() -> None:
    with pytest.raises(ValueError, match="level"):
        FSQ((2, 5))
    with pytest.raises(ValueError, match="level"):
        FSQ((1, 5), symmetric=True)
    with pytest.raises(ValueError, match="level"):
        FSQ((8, 0))
    FSQ((2, 5), symmetric=True)


@pytest.mark.parametrize(("levels", "symmetric"), CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_indices(levels: tuple[int, ...], symmetric: bool, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    q = FSQ(levels, symmetric=symmetric)
    # include exact preimages (cell centres) and cell boundaries, where precision matters most
    z = torch.cat([torch.randn(4000, len(levels)) * 2, fsq_preimage(levels, torch.arange(q.codebook_size), symmetric)])
    zh = z.to(dtype)
    out = q(zh)
    assert out.quantized.dtype == dtype
    assert torch.equal(out.indices, q(zh.float()).indices)
    assert torch.equal(q.encode(zh), q.encode(zh.float()))


def test_projection() -> None:
    torch.manual_seed(0)
    q = FSQ((8, 5, 5, 5), dim=16)
    assert q.dim == 16 and q.codebook_size == 1000
    assert isinstance(q.project_in, torch.nn.Linear) and isinstance(q.project_out, torch.nn.Linear)
    z = torch.randn(2, 5, 5, 16, requires_grad=True)
    out = q(z)
    assert out.quantized.shape == z.shape and out.indices.shape == (2, 5, 5)
    codes = q.quantize_codes(q.project_in(z))
    torch.testing.assert_close(out.quantized, q.project_out(codes))
    assert torch.equal(out.indices, q.codes_to_indices(codes))
    torch.testing.assert_close(q.decode(out.indices), out.quantized.detach())
    out.quantized.sum().backward()
    assert q.project_in.weight.grad is not None and q.project_in.weight.grad.abs().sum() > 0
    assert q.project_out.weight.grad is not None
    assert z.grad is not None and torch.isfinite(z.grad).all()
    # without projection: identity modules, no parameters
    assert list(FSQ((8, 5, 5, 5)).parameters()) == []
    assert list(FSQ((8, 5, 5, 5), dim=4).parameters()) == []


@pytest.mark.parametrize(("levels", "symmetric"), CASES, ids=IDS)
def test_bits_per_token(levels: tuple[int, ...], symmetric: bool) -> None:
    q = FSQ(levels, symmetric=symmetric)
    assert q.bits_per_token == sum(math.log2(v) for v in levels)
    assert q.bits_per_token == pytest.approx(math.log2(math.prod(levels)), rel=1e-12)
    assert q.num_stages == 1


def test_straight_through_gradient_of_rounding() -> None:
    """Rounding is straight-through: the gradient is that of the tanh bound, nonzero everywhere."""
    q = FSQ((8, 5))
    z = torch.randn(64, 2, requires_grad=True)
    q(z).quantized.sum().backward()
    assert z.grad is not None and (z.grad > 0).all()
    lv = torch.tensor([8.0, 5.0])
    half = (lv - 1) * (1 + 1e-3) / 2
    shift = torch.atanh(torch.tensor([0.5, 0.0]) / half)
    expected = (1 - torch.tanh(z.detach() + shift) ** 2) * half / torch.tensor([4.0, 2.0])
    torch.testing.assert_close(z.grad, expected)


def test_mixed_radix_order() -> None:
    q = FSQ((3, 4))
    for d0, d1 in itertools.product(range(3), range(4)):
        idx = torch.tensor([d0 + 3 * d1])
        code = q.indices_to_codes(idx)[0]
        torch.testing.assert_close(code.double(), torch.stack([grid_values(3, False)[d0], grid_values(4, False)[d1]]))


@pytest.mark.parametrize(("level", "symmetric"), [(4, False), (6, False), (8, False), (5, False), (2, True), (4, True)])
def test_cell_boundaries(level: int, symmetric: bool) -> None:
    """Just either side of every cell boundary (float64 reference), the digit steps by one.

    Pins the atanh shift: the papers' printed ``tan`` moves the boundaries of L=4 by ~3e-4.
    """
    q = FSQ((level,), symmetric=symmetric)
    lv = float(level)
    if symmetric:  # y = (L-1)(tanh z + 1)/2 + 1/2 crosses the integer d at the boundary
        d = torch.arange(1, level, dtype=torch.float64)
        boundary = torch.atanh(2 * (d - 0.5) / (lv - 1) - 1)
    else:  # b = tanh(z + shift)·half - offset crosses m + 1/2
        half = (lv - 1) * (1 + 1e-3) / 2
        offset = 0.5 if level % 2 == 0 else 0.0
        m = torch.arange(level - 1, dtype=torch.float64) - level // 2
        boundary = torch.atanh((m + 0.5 + offset) / half) - math.atanh(offset / half)
    delta = 1e-5
    below = q.encode((boundary - delta).float().unsqueeze(1))
    above = q.encode((boundary + delta).float().unsqueeze(1))
    assert torch.equal(below, torch.arange(level - 1)), (below, boundary)
    assert torch.equal(above, torch.arange(1, level)), (above, boundary)


# -- sizes that cannot be indexed, and the largest that can ------------------------------------------
def test_level_products_beyond_int64_are_refused() -> None:
    with pytest.raises(ValueError, match=r"∏levels = 9223372036854775808 codes, over the int64 index limit of "
                                         r"9223372036854775807 \(2\^63 - 1\)"):
        FSQ((2**21, 2**21, 2**21))  # 2^63: its last index would wrap to a negative int64
    with pytest.raises(ValueError, match="int64"):
        FSQ((5,) * 28)  # 5^28 ≈ 3.7e19
    with pytest.raises(ValueError, match=r"FSQ: dim must be >= 1, got 0"):
        FSQ((8, 5), dim=0)


def test_largest_indexable_codebook_roundtrips() -> None:
    levels = (2**21, 2**21, 2**21 - 1)  # ∏ = 2^63 - 2^42 < 2^63 - 1
    q = FSQ(levels)
    size = math.prod(levels)
    assert q.codebook_size == size and size < 2**63
    idx = torch.tensor([0, 1, size - 1, size - 2, size // 2 + 12345, 2**62, 2**42 - 1, 2**42 * 3 + 7])
    z = fsq_preimage(levels, idx)
    got = q.encode(z)
    assert (got >= 0).all()
    assert torch.equal(got, idx)
    half = torch.tensor([lv // 2 for lv in levels], dtype=torch.float64)
    expected = (fsq_digits(levels, idx).double() - half) / half  # the grid, written out independently
    assert torch.equal(q.decode(idx).double(), expected.float().double())


@pytest.mark.parametrize("symmetric", [False, True], ids=["asym", "sym"])
def test_largest_level_reaches_its_digits(symmetric: bool) -> None:
    """A level of 2^22 (MAX_LEVEL) still reaches every digit in float32 (checked on all of them once;
    here the ends and a stride); 2^23 would not, and anything above 2^22 is refused."""
    from vqkit.quantizers.fsq import MAX_LEVEL

    assert MAX_LEVEL == 2**22
    level = MAX_LEVEL
    q = FSQ((level,), symmetric=symmetric)
    idx = torch.cat([torch.arange(2048), torch.arange(level - 2048, level), torch.arange(0, level, 997)])
    assert torch.equal(q.encode(fsq_preimage((level,), idx, symmetric=symmetric)), idx)
    with pytest.raises(ValueError, match=r"level must be <= 4194304 .*got 4194305"):
        FSQ((5, level + 1), symmetric=symmetric)


def test_projection_overflow_is_refused() -> None:
    q = FSQ((8, 5, 5, 5), dim=6)
    with torch.no_grad():
        q.project_in.weight.fill_(1.0)  # 6 · 3e38 overflows
    z = torch.full((3, 6), 3e38)
    for f in (q, q.encode):
        with pytest.raises(ValueError, match=r"project_in\(z\) is NaN or Inf although z is finite"):
            f(z)
    q.check_finite = False
    q.encode(z)  # unchecked: no error


# -- the fused bound-and-round: same codes, indices and gradient as the step-by-step formulas ---------
def _step_by_step(q: FSQ, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (straight-through, autograd of the plain formulas) and int64 indices, as FSQ computed them
    before the bound and rounding became one autograd node."""
    if q.symmetric:
        steps = q._levels - 1
        codes = floor_ste(steps * (torch.tanh(z) + 1) / 2 + 0.5) * (2 / steps) - 1
        digits = (codes.detach() + 1) * steps / 2
    else:
        codes = round_ste(torch.tanh(z + q._shift) * q._half - q._offset) / q._half_width
        digits = codes.detach() * q._half_width + q._half_width
    return codes, (digits.round().long() * q._basis).sum(-1)


@pytest.mark.parametrize(("levels", "symmetric"), CASES, ids=IDS)
@pytest.mark.parametrize("layout", ["rows-of-8", "odd-count", "strided"])
def test_fused_bound_round_matches_step_by_step(levels: tuple[int, ...], symmetric: bool, layout: str) -> None:
    """Bit-identical codes and identical indices in every layout (tiled rows of 8 tokens, a token count
    that is no multiple of 8, a non-contiguous input), and the same straight-through gradient."""
    q = FSQ(levels, symmetric=symmetric)
    g = torch.Generator().manual_seed(len(levels) + symmetric)
    n = len(levels)
    raw = torch.randn(*((2, 40, n) if layout != "strided" else (2, n, 40)), generator=g) * 2
    raw = raw[:, :37].contiguous() if layout == "odd-count" else raw  # 74 tokens
    z = (raw.transpose(1, 2) if layout == "strided" else raw).requires_grad_()
    assert z.is_contiguous() == (layout != "strided" or n == 1)
    ref = z.detach().clone().requires_grad_()
    out = q(z)
    codes, indices = _step_by_step(q, ref)
    assert torch.equal(out.quantized, codes) and torch.equal(out.indices, indices)
    assert torch.equal(q.encode(z), indices)
    assert torch.equal(q.quantize_codes(z.detach()), codes.detach())
    weights = torch.rand(z.shape, generator=g)
    (out.quantized * weights).sum().backward()
    (codes * weights).sum().backward()
    assert z.grad is not None and ref.grad is not None
    torch.testing.assert_close(z.grad, ref.grad, rtol=1e-6, atol=0)  # a few ulps: other rounding order


def test_symmetric_gradient_is_exactly_that_of_tanh() -> None:
    q = FSQ((2, 4, 5), symmetric=True)
    z = torch.randn(64, 3, requires_grad=True)
    q(z).quantized.sum().backward()
    assert z.grad is not None
    torch.testing.assert_close(z.grad, 1 - torch.tanh(z.detach()) ** 2, rtol=1e-6, atol=1e-7)


def test_fused_node_is_not_twice_differentiable() -> None:
    q = FSQ((8, 5))
    z = torch.randn(16, 2, requires_grad=True)
    (grad,) = torch.autograd.grad(q(z).quantized.square().sum(), z, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()


@pytest.mark.parametrize("levels", [(8, 8, 8, 5, 5, 5), (2**12, 2**12), (2**12, 2**12 + 1), (7, 4, 3, 6)])
def test_float32_and_int64_index_sums_agree(levels: tuple[int, ...]) -> None:
    """Up to 2^24 codes the mixed-radix sum runs in float32 (exact there), beyond in int64: the same indices,
    the largest included; NaN digits (check_finite=False only) count as digit 0 either way."""
    q = FSQ(levels)
    assert q._float_index == (q.codebook_size <= 2**24)
    lv = torch.tensor(levels)
    random = torch.stack([torch.randint(0, int(v), (500,)) for v in levels], -1)
    digits = torch.cat([random, (lv - 1)[None], 0 * lv[None]])  # and the largest and smallest index
    expected = (digits * q._basis).sum(-1)
    assert int(expected[-2]) == q.codebook_size - 1
    got = q._digits_to_indices(digits.float())
    assert got.dtype == torch.int64 and torch.equal(got, expected)
    if q._float_index:  # both float32 forms: the CPU's matrix-vector product and the accelerators' sum
        for matvec in (True, False):
            assert torch.equal(_float_mixed_radix(digits.float(), q._basis_float, matvec), expected)
    with_nan = digits.float()
    with_nan[:, 0] = float("nan")
    assert torch.equal(q._digits_to_indices(with_nan), expected - digits[:, 0])
