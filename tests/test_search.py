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
