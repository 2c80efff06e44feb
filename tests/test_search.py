"""nearest_code: blocked search with a running argmin equals brute force."""

from __future__ import annotations

import pytest
import torch

from vqkit.quantizers.search import DEFAULT_MAX_BYTES, nearest_code

N, K, D = 300, 200, 16


def _data(seed: int = 0, n: int = N, k: int = K, d: int = D) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(k, d, generator=g)


def _check_against_brute_force(z: torch.Tensor, codes: torch.Tensor, idx: torch.Tensor) -> None:
    dist = torch.cdist(z.reshape(-1, z.shape[-1]).double(), codes.double())
    ref = dist.argmin(dim=1)
    got = idx.reshape(-1)
    assert got.dtype == torch.int64
    mismatch = got != ref
    # continuous random data: a mismatch can only be a float32 near-tie, never a wrong code
    rows = torch.arange(len(ref))
    gap = dist[rows, got] - dist[rows, ref]
    assert (gap[mismatch] < 1e-4).all(), f"wrong codes: gap {gap.max().item()}"
    assert int(mismatch.sum()) <= 1


# bytes for float32 entries: budget = max_bytes // 4 entries per block
CASES = {
    "no-chunking": DEFAULT_MAX_BYTES,  # one block of N x K
    "row-chunking": 4 * K * 100,  # rows of 100, all columns
    "row-chunking-uneven": 4 * K * 70,  # 70-row blocks, last one short
    "column-chunking": 4 * 64 * 50,  # 64 rows x 50 columns, running argmin over 4 column blocks
    "column-chunking-uneven": 4 * 64 * 37,  # last column block short
    "one-column": 4,  # one code per block
}


@pytest.mark.parametrize("max_bytes", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_brute_force(max_bytes: int, seed: int) -> None:
    z, codes = _data(seed)
    idx = nearest_code(z, codes, max_bytes=max_bytes)
    assert idx.shape == (N,)
    _check_against_brute_force(z, codes, idx)
    # every chunking gives the same answer
    assert torch.equal(idx, nearest_code(z, codes))


def test_running_argmin_prefers_later_block_when_closer() -> None:
    """The best code sits in the last column block, the runner-up in the first."""
    z, codes = _data(3, n=64, k=100)
    codes[5] = z[0] + 0.5
    codes[97] = z[0] + 0.01
    codes[50] = z[1] + 0.01
    codes[2] = z[1] + 0.3
    idx = nearest_code(z, codes, max_bytes=4 * 64 * 10)
    assert idx[0] == 97 and idx[1] == 50
    _check_against_brute_force(z, codes, idx)


def test_leading_dims_and_sqnorm_cache() -> None:
    z, codes = _data(4)
    z = z[:240].reshape(4, 6, 10, D)
    idx = nearest_code(z, codes, max_bytes=4 * 64 * 33)
    assert idx.shape == (4, 6, 10)
    _check_against_brute_force(z, codes, idx)
    cached = nearest_code(z, codes, codes_sqnorm=codes.pow(2).sum(-1))
    assert torch.equal(cached, idx)


def test_more_codes_than_tokens_and_tiny_batches() -> None:
    z, codes = _data(5, n=3, k=1000)
    for max_bytes in (DEFAULT_MAX_BYTES, 4 * 3 * 100, 4 * 64 * 7):
        _check_against_brute_force(z, codes, nearest_code(z, codes, max_bytes=max_bytes))
    z1 = z[:1]
    _check_against_brute_force(z1, codes, nearest_code(z1, codes, max_bytes=400))


def test_validation() -> None:
    z, codes = _data(6, n=4, k=8)
    with pytest.raises(ValueError):
        nearest_code(z, codes[:, :3])
    with pytest.raises(ValueError):
        nearest_code(z, codes.reshape(2, 4, D))
    with pytest.raises(ValueError, match="max_bytes"):
        nearest_code(z, codes, max_bytes=0)


# -- ties: the lowest index wins, within a block and across blocks ------------------------------
# Small integers make every product and sum exact in float32 whatever the summation order, so equal
# distances really are equal and the tie rule, not rounding, decides. The rule is torch.argmin's
# over the full distance matrix: the first (lowest) index of the minimum.
TIE_BUDGETS = {
    "one-block": DEFAULT_MAX_BYTES,
    "row-blocks": 4 * 40 * 30,  # 30 rows x all 40 codes
    "columns-of-10": 4 * 64 * 10,  # block edges at 10, 20, 30
    "columns-of-7": 4 * 64 * 7,  # uneven: the last block holds 5 codes
    "columns-of-3": 4 * 64 * 3,
    "one-column": 4,
}


def _integer_data(seed: int, n: int, k: int, d: int = 3, high: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randint(-high, high + 1, (n, d), generator=g).float()
    codes = torch.randint(-high, high + 1, (k, d), generator=g).float()
    return z, codes


def _first_argmin(z: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first index of the minimum, number of codes at the minimum) from exact float64 distances."""
    dist = (z.double().unsqueeze(1) - codes.double().unsqueeze(0)).pow(2).sum(-1)
    ties = (dist == dist.min(dim=1, keepdim=True).values).sum(dim=1)
    return dist.argmin(dim=1), ties


@pytest.mark.parametrize("max_bytes", TIE_BUDGETS.values(), ids=TIE_BUDGETS.keys())
def test_ties_resolve_to_the_lowest_index(max_bytes: int) -> None:
    z, codes = _integer_data(0, n=150, k=40)  # 27 distinct codes among 40: many duplicates and ties
    ref, ties = _first_argmin(z, codes)
    assert (ties > 1).sum() > 100  # the test is about ties: most tokens have several nearest codes
    assert (ties > 2).sum() > 20
    idx = nearest_code(z, codes, max_bytes=max_bytes)
    assert torch.equal(idx, ref)


@pytest.mark.parametrize("max_bytes", TIE_BUDGETS.values(), ids=TIE_BUDGETS.keys())
def test_duplicate_codes_in_other_blocks_never_win(max_bytes: int) -> None:
    """Copies of a code within its block, on a block's first or last column and in the last block:
    a token sitting on the code picks the original, the lowest index, in every chunking."""
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(-20, 21, (40, 4), generator=g).float()
    codes[[3, 10, 39]] = codes[2].clone()  # next to the original, first column of the second 10-block, last code
    codes[[9, 30, 31]] = codes[8].clone()  # last column of the first 10-block; two in a later block
    codes[[21, 35]] = codes[20].clone()  # the original opens a block (10 wide) ...
    codes[19] = codes[20] + 1  # ... right after a block that ends with a near miss
    assert len({tuple(c) for c in codes[[0, 2, 8, 20]].tolist()}) == 4
    z = codes[[2, 3, 10, 39, 8, 9, 30, 31, 20, 21, 35]].clone()
    expect = torch.tensor([2, 2, 2, 2, 8, 8, 8, 8, 20, 20, 20])
    ref, ties = _first_argmin(z, codes)
    assert torch.equal(ref, expect) and (ties >= 3).all()
    assert torch.equal(nearest_code(z, codes, max_bytes=max_bytes), expect)
    # the copies moved ahead of the original: now the copy at the lowest index wins
    perm = torch.arange(39, -1, -1)
    assert torch.equal(nearest_code(z, codes[perm], max_bytes=max_bytes), _first_argmin(z, codes[perm])[0])
    assert nearest_code(z[:1], codes[perm], max_bytes=max_bytes).item() == 0  # code 39 reversed


def test_midpoint_ties_across_blocks() -> None:
    """z = 0 is exactly 1 away from each of ±e_i: all ten codes tie, the first one wins in every chunking."""
    eye = torch.eye(5)
    codes = torch.cat([torch.full((7, 5), 3.0), eye, -eye])  # codes 0..6 are far; 7..16 all tie
    z = torch.zeros(3, 5)
    for max_bytes in TIE_BUDGETS.values():
        assert nearest_code(z, codes, max_bytes=max_bytes).tolist() == [7, 7, 7]
    codes = codes.flip(0)  # now the tied codes are 0..9: still the lowest
    for max_bytes in TIE_BUDGETS.values():
        assert nearest_code(z, codes, max_bytes=max_bytes).tolist() == [0, 0, 0]


# -- values too large for float32 distances ---------------------------------------------------------
@pytest.mark.parametrize("exponent", [40, 70, 100, 124])
@pytest.mark.parametrize("max_bytes", [DEFAULT_MAX_BYTES, 4 * 64 * 7], ids=["one-block", "columns-of-7"])
def test_large_values_give_the_same_codes_as_small_ones(exponent: int, max_bytes: int) -> None:
    """z and codes scaled by 2^e (exact): ||c||² would overflow float32 from 2^64 on, and 2z·c from
    about the same; the search rescales by a power of two, so the codes equal the unscaled ones."""
    z, codes = _data(7, n=100, k=50, d=8)
    s = 2.0**exponent
    assert torch.isfinite(z * s).all() and torch.isfinite(codes * s).all()
    idx = nearest_code(z * s, codes * s, max_bytes=max_bytes)
    assert torch.equal(idx, nearest_code(z, codes, max_bytes=max_bytes))
    # and a cache of squared norms that overflowed is not trusted
    cached = nearest_code(z * s, codes * s, codes_sqnorm=(codes * s).pow(2).sum(-1), max_bytes=max_bytes)
    assert torch.equal(cached, idx)


@pytest.mark.parametrize("exponent", [30, 70, 125])
def test_huge_tokens_against_ordinary_codes(exponent: int) -> None:
    """Only z is huge: the nearest code is the one of largest z·c - ||c||²/2, checked in float64."""
    z, codes = _data(8, n=200, k=60, d=8)
    z = z * 2.0**exponent
    assert torch.isfinite(z).all()
    # ||z - c||² - ||z||²: in float64 (cdist would lose the code-dependent part under ||z||²)
    dist = codes.double().pow(2).sum(-1) - 2 * z.double() @ codes.double().t()
    ref = dist.argmin(dim=1)
    rows = torch.arange(len(ref))
    for max_bytes in (DEFAULT_MAX_BYTES, 4 * 64 * 7):
        got = nearest_code(z, codes, max_bytes=max_bytes)
        gap = (dist[rows, got] - dist[rows, ref]) / dist.abs().amax(dim=1)
        assert (gap <= 1e-6).all()  # float32-close to the exact nearest code
        assert (got == ref).float().mean() > 0.99
