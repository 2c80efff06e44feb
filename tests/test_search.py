"""nearest_code: blocked search with a running argmin equals brute force; the bf16 search equals the float32 one."""

from __future__ import annotations

import pytest
import torch

from vqkit.quantizers import search, search_bf16
from vqkit.quantizers.search import DEFAULT_MAX_BYTES, SearchStats, nearest_code, reduced_precision_available

N, K, D = 300, 200, 16
PRECISIONS = ["fp32", "bf16"]  # the same indices, ties included, in both


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


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("max_bytes", TIE_BUDGETS.values(), ids=TIE_BUDGETS.keys())
def test_ties_resolve_to_the_lowest_index(max_bytes: int, precision: str) -> None:
    z, codes = _integer_data(0, n=150, k=40)  # 27 distinct codes among 40: many duplicates and ties
    ref, ties = _first_argmin(z, codes)
    assert (ties > 1).sum() > 100  # the test is about ties: most tokens have several nearest codes
    assert (ties > 2).sum() > 20
    idx = nearest_code(z, codes, max_bytes=max_bytes, precision=precision)
    assert torch.equal(idx, ref)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("max_bytes", TIE_BUDGETS.values(), ids=TIE_BUDGETS.keys())
def test_duplicate_codes_in_other_blocks_never_win(max_bytes: int, precision: str) -> None:
    """Copies of a code within its block, on a block's first or last column and in the last block:
    a token sitting on the code picks the original, the lowest index, in every chunking."""
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(-20, 21, (40, 4), generator=g).float()
    codes[[3, 10, 39]] = codes[2].clone()  # next to the original, first column of the second 10-block, last code
    codes[[9, 30, 31]] = codes[8].clone()  # last column of the first 10-block; two in a later block
    codes[[21, 35]] = codes[20].clone()  # the original opens a block (10 wide) ...
    codes[19] = codes[20] + 1  # ... right after a block that ends with a near miss
    assert len({tuple(c) for c in codes[[0, 2, 8, 20]].tolist()}) == 4
    z = codes[[2, 3, 10, 39, 8, 9, 30, 31, 20, 21, 35] * 2].clone()  # 22 tokens: the bf16 search needs >= 16
    expect = torch.tensor([2, 2, 2, 2, 8, 8, 8, 8, 20, 20, 20] * 2)
    ref, ties = _first_argmin(z, codes)
    assert torch.equal(ref, expect) and (ties >= 3).all()
    assert torch.equal(nearest_code(z, codes, max_bytes=max_bytes, precision=precision), expect)
    # the copies moved ahead of the original: now the copy at the lowest index wins
    perm = torch.arange(39, -1, -1)
    got = nearest_code(z, codes[perm], max_bytes=max_bytes, precision=precision)
    assert torch.equal(got, _first_argmin(z, codes[perm])[0])
    assert nearest_code(z[:1], codes[perm], max_bytes=max_bytes).item() == 0  # code 39 reversed


@pytest.mark.parametrize("precision", PRECISIONS)
def test_midpoint_ties_across_blocks(precision: str) -> None:
    """z = 0 is exactly 1 away from each of ±e_i: all ten codes tie, the first one wins in every chunking."""
    eye = torch.eye(5)
    codes = torch.cat([torch.full((7, 5), 3.0), eye, -eye])  # codes 0..6 are far; 7..16 all tie
    z = torch.zeros(20, 5)  # 20 tokens: enough for the bf16 search (row blocks of >= 16)
    for max_bytes in TIE_BUDGETS.values():
        assert nearest_code(z, codes, max_bytes=max_bytes, precision=precision).tolist() == [7] * 20
    codes = codes.flip(0)  # now the tied codes are 0..9: still the lowest
    for max_bytes in TIE_BUDGETS.values():
        assert nearest_code(z, codes, max_bytes=max_bytes, precision=precision).tolist() == [0] * 20


# -- the bf16 search: exactly the float32 search's indices ------------------------------------------
needs_bf16 = pytest.mark.skipif(not reduced_precision_available(), reason="no exact bf16 search on this platform")


def _both(z: torch.Tensor, codes: torch.Tensor, **kw: object) -> tuple[torch.Tensor, SearchStats]:
    """Asserts the bf16 and float32 searches agree; returns the indices and the bf16 call's stats."""
    stats = SearchStats()
    fp32 = nearest_code(z, codes, precision="fp32", **kw)  # type: ignore[arg-type]
    bf16 = nearest_code(z, codes, precision="bf16", stats=stats, **kw)  # type: ignore[arg-type]
    assert torch.equal(bf16, fp32), f"{int((bf16 != fp32).sum())} of {bf16.numel()} indices differ"
    assert stats.bf16_tokens + stats.fp32_tokens == fp32.numel()
    return fp32, stats


# (K, tokens, D): K from 2 to 2^18; few tokens for the big ones
SIZES = [(2, 64, 8), (16, 64, 8), (17, 50, 8), (100, 300, 16), (1000, 200, 32), (4096, 64, 128),
         (65536, 32, 16), (2**18, 16, 8)]
BUDGETS = {"default": DEFAULT_MAX_BYTES, "rows-of-64": None, "column-chunks": 4 * 64 * 1000}


@needs_bf16
@pytest.mark.parametrize("budget", BUDGETS.keys())
@pytest.mark.parametrize(("k", "n", "d"), SIZES, ids=[f"K{k}" for k, _, _ in SIZES])
def test_bf16_equals_fp32_random(k: int, n: int, d: int, budget: str) -> None:
    z, codes = _data(10 + k % 97, n=n, k=k, d=d)
    max_bytes = BUDGETS[budget] or 4 * 64 * k  # rows of 64 tokens by all codes
    idx, stats = _both(z, codes, max_bytes=max_bytes)
    _check_against_brute_force(z, codes, idx)
    # blocks of < 16 tokens or codes use BLAS small-matrix kernels: left to the float32 search
    rows, cols = search._block_shape(n, k, max_bytes)
    if rows < 16 or cols < 16 or 0 < k % cols < 16:
        assert stats.fallback_tokens == n
    else:
        tail = n % rows if n % rows < 16 else 0
        assert (stats.bf16_tokens, stats.fallback_tokens) == (n - tail, tail)
        assert 1 <= stats.mean_candidates <= stats.max_candidates <= k


@needs_bf16
def test_bf16_near_ties_below_bf16_resolution() -> None:
    """Clusters of codes 1e-3 apart (bf16 resolves 4e-3): bf16 cannot tell them apart, the rerank does."""
    g = torch.Generator().manual_seed(11)
    centres = torch.randn(40, 32, generator=g)
    codes = (centres.repeat_interleave(12, 0) * (1 + 1e-3 * torch.randn(480, 32, generator=g)))
    codes = codes[torch.randperm(480, generator=g)]  # cluster members spread over groups and blocks
    z = centres[torch.randint(40, (256,), generator=g)] + 1e-3 * torch.randn(256, 32, generator=g)
    for max_bytes in (DEFAULT_MAX_BYTES, 4 * 64 * 100, 4 * 16 * 480):
        _, stats = _both(z, codes, max_bytes=max_bytes)
        assert stats.bf16_tokens == 256 and stats.mean_candidates > 5 and stats.reranked_tokens > 200


@needs_bf16
def test_bf16_follows_float32_rounding_not_exact_arithmetic() -> None:
    """Codes 1e-7 apart relative (below float32's resolution of the distance): float32's own rounding
    picks the winner, sometimes not the exact nearest; the bf16 search must pick the same one."""
    g = torch.Generator().manual_seed(12)
    centres = torch.randn(8, 64, generator=g) * 4
    codes = centres.repeat_interleave(16, 0) * (1 + 1e-7 * torch.randn(128, 64, generator=g))
    z = centres[torch.randint(8, (512,), generator=g)] + 0.5 * torch.randn(512, 64, generator=g)
    idx, stats = _both(z, codes)
    exact = torch.cdist(z.double(), codes.double()).argmin(dim=1)
    assert (idx != exact).sum() > 20  # float32 disagrees with exact arithmetic for these tokens ...
    assert stats.reranked_tokens > 400  # ... and bf16 leaves them to the float32 rerank


@needs_bf16
def test_bf16_duplicates_and_exact_ties_across_groups_and_blocks() -> None:
    """Exact copies of a code at positions in different candidate groups and code blocks: lowest index."""
    g = torch.Generator().manual_seed(13)
    codes = torch.randn(5000, 16, generator=g)
    for original, copies in ((7, [8, 23, 1000, 4999]), (300, [301, 317, 2500, 3000]), (4000, [4001, 4015])):
        codes[copies] = codes[original].clone()
    z = codes[[7, 8, 23, 1000, 4999, 300, 317, 3000, 4000, 4015] * 4].clone()
    z[20:] += 1e-6 * torch.randn(20, 16, generator=g)  # near, not on, the copies
    for max_bytes in (DEFAULT_MAX_BYTES, 4 * 40 * 1024, 4 * 20 * 5000):
        idx, _ = _both(z, codes, max_bytes=max_bytes)
        assert idx[:20].tolist() == [7, 7, 7, 7, 7, 300, 300, 300, 4000, 4000] * 2


@needs_bf16
@pytest.mark.parametrize("shift", [1e3, -3e4])
def test_bf16_offset_data_falls_back(shift: float) -> None:
    """Everything offset far from the origin: bf16 cannot resolve the distances, the search says so and
    runs float32 (still the same indices)."""
    z, codes = _data(14, n=200, k=4096, d=16)
    _, stats = _both(z + shift, codes + shift)
    assert stats.fallback_tokens == 200


@needs_bf16
@pytest.mark.parametrize("exponent", [-60, -20, 20, 40, 100])
def test_bf16_scaled_data(exponent: int) -> None:
    """Tiny and huge (rescaled inside) values: the same indices as float32."""
    z, codes = _data(15, n=100, k=500, d=16)
    s = 2.0**exponent
    idx, stats = _both(z * s, codes * s)
    assert torch.equal(idx, nearest_code(z, codes))
    if abs(exponent) <= 40:
        assert stats.bf16_tokens == 100


def _bound_check(z: torch.Tensor, codes: torch.Tensor) -> float:
    """Largest |s - y| / (A_t + rho·|s|) over every pair, for y = -d32/2 (the float32 search's value)
    and for y in float64; the bound holds where it is <= 1."""
    sq = search.squared_norms(codes)
    k = codes.shape[0]
    bf = search_bf16.Bf16Search(codes, sq, z.shape[0], z.shape[0], k, 2**30, None)
    z_hat = z.to(torch.bfloat16)
    s = torch.mm(bf.augmented(z_hat), bf.aug.t()).double()[:, :k]  # the search's bf16 scores
    bound = bf.slack(z, z_hat)[0].double()[:, None] + search_bf16._RHO * s.abs()
    y32 = -torch.addmm(sq, z, codes.t(), alpha=-2.0).double() / 2  # the float32 search's values
    y64 = z.double() @ codes.double().t() - sq.double() / 2
    return float(torch.maximum((s - y32).abs(), (s - y64).abs()).div(bound).max())


def test_bound_holds_against_brute_force() -> None:
    g = torch.Generator().manual_seed(16)
    cases = {
        "gaussian": (torch.randn(200, 128, generator=g), torch.randn(2000, 128, generator=g)),
        "small-dim": (torch.randn(300, 8, generator=g), torch.randn(2000, 8, generator=g)),
        "wide-range": (torch.randn(100, 64, generator=g) * torch.exp2(torch.randint(-20, 20, (100, 64), generator=g)),
                       torch.randn(400, 64, generator=g) * torch.exp2(torch.randint(-20, 20, (400, 64), generator=g))),
        "offset": (torch.randn(100, 16, generator=g) + 1000, torch.randn(400, 16, generator=g) + 1000),
        "underflow": (torch.randn(100, 16, generator=g) * 2.0**-70, torch.randn(400, 16, generator=g) * 2.0**-70),
        "long": (torch.randn(40, 2048, generator=g), torch.randn(100, 2048, generator=g)),
    }
    for name, (z, codes) in cases.items():
        assert _bound_check(z, codes) <= 1.0, name
    # the worst case of the input rounding: every component just above a bf16 midpoint, all rounding
    # up, so the errors add up coherently; the bound must hold and be nearly reached (it is tight)
    base = 1 + 2.0**-8 + 2.0**-16
    z = torch.full((40, 128), base) * torch.randint(1, 4, (40, 1), generator=g)
    codes = torch.full((200, 128), base) * torch.randint(1, 4, (200, 1), generator=g)
    worst = _bound_check(z, -codes)
    assert 0.8 < worst <= 1.0


@needs_bf16
@pytest.mark.parametrize("d", [8, 37, 128, 200, 512])
def test_float32_entries_do_not_depend_on_the_number_of_columns(d: int) -> None:
    """What the rerank rests on: the float32 ``addmm`` of a row block (>= 16 rows) gives each entry the
    same value whether the block meets all the codes or a gathered few (>= 16, here >= 64), up to the
    bf16 search's largest D (512; MKL blocks the depth from 192 on, alike in both calls up to 768)."""
    g = torch.Generator().manual_seed(21)
    z, codes = torch.randn(300, d, generator=g), torch.randn(3000, d, generator=g)
    sq = search.squared_norms(codes)
    for rows in (16, 17, 64, 128, 130, 300):
        full = torch.addmm(sq, z[:rows], codes.t(), alpha=-2.0)
        for width in (64, 80, 1000):
            pick = torch.randperm(3000, generator=g)[:width].sort().values
            part = torch.addmm(sq[pick], z[:rows], codes[pick].t(), alpha=-2.0)
            assert torch.equal(part, full[:, pick]), (rows, width)


@needs_bf16
def test_forced_fallbacks_give_the_same_indices(monkeypatch: pytest.MonkeyPatch) -> None:
    z, codes = _data(17, n=300, k=700, d=16)
    ref = nearest_code(z, codes, precision="fp32")
    # a tail row block of fewer than 16 tokens runs float32, the others bf16: 268 = 4 x 64 + 12
    stats = SearchStats()
    got = nearest_code(z[:268], codes, max_bytes=4 * 64 * 700, precision="bf16", stats=stats)
    assert torch.equal(got, ref[:268])
    assert (stats.bf16_tokens, stats.fallback_tokens) == (256, 12)
    # too many candidates (limit forced to 0): every block falls back
    monkeypatch.setattr(search_bf16, "_MAX_GROUPS_PER_TOKEN", 0)
    stats = SearchStats()
    assert torch.equal(nearest_code(z, codes, precision="bf16", stats=stats), ref)
    assert stats.fallback_tokens == 300
    monkeypatch.undo()
    # the rerank as dear as the blocks (limits forced to 0; duplicated codes: every token has a tie to
    # rerank): the float32 blocks instead
    twins = codes.clone()
    twins[1::2] = twins[::2].clone()
    ref = nearest_code(z, twins, precision="fp32")
    stats = SearchStats()
    assert torch.equal(nearest_code(z, twins, precision="bf16", stats=stats), ref)
    assert stats.reranked_tokens == 300 and (ref % 2 == 0).all()
    monkeypatch.setattr(search_bf16.Bf16Search, "rerank_limit", 0.0)
    monkeypatch.setattr(search_bf16.Bf16Search, "rerank_floor", 0)
    stats = SearchStats()
    assert torch.equal(nearest_code(z, twins, precision="bf16", stats=stats), ref)
    assert stats.fallback_tokens == 300
    monkeypatch.undo()
    # a platform that fails the checks: float32
    ref = nearest_code(z, codes, precision="fp32")
    monkeypatch.setitem(search_bf16._AVAILABLE, "cpu", False)
    stats = SearchStats()
    assert torch.equal(nearest_code(z, codes, precision="bf16", stats=stats), ref)
    assert stats.fallback_tokens == 300
    assert torch.equal(nearest_code(z, codes, precision="auto", stats=stats), ref)


@needs_bf16
def test_non_finite_data_run_float32() -> None:
    z, codes = _data(18, n=64, k=100, d=8)
    z[3, 2] = float("nan")
    z[9, 0] = float("inf")
    stats = SearchStats()
    got = nearest_code(z, codes, precision="bf16", stats=stats)
    assert torch.equal(got, nearest_code(z, codes, precision="fp32"))
    assert stats.fallback_tokens == 64
    codes[5, 1] = float("inf")
    assert torch.equal(nearest_code(z[10:], codes, precision="bf16"), nearest_code(z[10:], codes, precision="fp32"))


def test_no_exact_bf16_search_off_cpu() -> None:
    assert not reduced_precision_available("meta")


def test_auto_and_autocast() -> None:
    z, codes = _data(19, n=600, k=4096, d=32)
    ref = nearest_code(z, codes, precision="fp32")
    stats = SearchStats()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):  # ignored: the search runs its own precisions
        for precision in ("auto", "bf16", "fp32"):
            assert torch.equal(nearest_code(z, codes, precision=precision), ref)  # type: ignore[arg-type]
        assert torch.equal(nearest_code(z, codes, stats=stats), ref)
    if reduced_precision_available() and search_bf16._cpu_has_bf16_units():
        assert stats.bf16_tokens == 600  # auto: a CPU with bf16 units, K >= 4096, >= 256 tokens
    small = SearchStats()
    nearest_code(z[:100], codes[:1000], stats=small)
    assert small.fp32_tokens == 100  # auto: too small to win
    with pytest.raises(ValueError, match="precision"):
        nearest_code(z, codes, precision="fp16")  # type: ignore[arg-type]


# -- every codebook quantizer and its residual forms ------------------------------------------------
def _quantizers(precision: str) -> dict[str, torch.nn.Module]:
    from vqkit.quantizers import EMAVQ, VQ, FactorizedVQ, ResidualSimVQ, ResidualVQ, SimVQ

    opts = {"search_precision": precision}
    builders = {
        "vq": lambda: VQ(16, 64, **opts),
        "vq_l2": lambda: VQ(16, 64, l2_normalize=True, **opts),
        "emavq": lambda: EMAVQ(16, 64, **opts),
        "factorized": lambda: FactorizedVQ(16, 64, code_dim=8, **opts),
        "simvq": lambda: SimVQ(16, 64, **opts),
        "rvq": lambda: ResidualVQ(16, 64, 3, **opts),
        "rsimvq": lambda: ResidualSimVQ(16, 64, 2, **opts),
    }
    out = {}
    for name, build in builders.items():
        torch.manual_seed(0)
        out[name] = build()
    return out


class _Counted(search_bf16.Bf16Search):
    """Proves the bf16 search ran: each run is recorded in ``ran``."""

    ran: list[int] = []  # noqa: RUF012

    def run(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        _Counted.ran.append(1)
        return super().run(*args, **kwargs)


def test_quantizers_same_indices_in_every_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forced bf16 at K = 64 (auto stays float32 there: compared in the next test)."""
    monkeypatch.setattr(search, "Bf16Search", _Counted)
    monkeypatch.setattr(_Counted, "ran", [])
    z = torch.randn(4, 40, 16, generator=torch.Generator().manual_seed(20))
    runs = {p: _quantizers(p) for p in ("fp32", "bf16")}
    for name in runs["fp32"]:
        for step in range(2):  # training steps: EMA updates, codebook moves
            outs = {p: runs[p][name].train()(z) for p in runs}
            assert torch.equal(outs["bf16"].indices, outs["fp32"].indices), (name, step)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            enc = {p: runs[p][name].eval().encode(z) for p in runs}
        assert torch.equal(enc["bf16"], enc["fp32"]), name
    assert bool(_Counted.ran) == reduced_precision_available(), "forced bf16 must run the bf16 search where it exists"


def test_quantizers_auto_runs_bf16_and_gives_the_same_indices(monkeypatch: pytest.MonkeyPatch) -> None:
    """"auto" at K = 4096 and 320 tokens: the bf16 search on a CPU with bf16 units, float32's indices."""
    from vqkit.quantizers import EMAVQ, VQ, ResidualVQ, SimVQ

    monkeypatch.setattr(search, "Bf16Search", _Counted)
    monkeypatch.setattr(_Counted, "ran", [])
    z = torch.randn(4, 80, 16, generator=torch.Generator().manual_seed(23))
    builders = {"vq": VQ, "emavq": EMAVQ, "simvq": SimVQ}
    for name, cls in builders.items():
        mods = {}
        for p in ("fp32", "auto"):
            torch.manual_seed(0)
            mods[p] = cls(16, 4096, search_precision=p)
        for step in range(2):
            outs = {p: m.train()(z) for p, m in mods.items()}
            assert torch.equal(outs["auto"].indices, outs["fp32"].indices), (name, step)
    torch.manual_seed(0)
    rvq = {p: ResidualVQ(16, 4096, 2, search_precision=p) for p in ("fp32", "auto")}
    rvq["auto"].load_state_dict(rvq["fp32"].state_dict())
    assert torch.equal(rvq["auto"].eval().encode(z), rvq["fp32"].eval().encode(z))
    expected = reduced_precision_available() and search_bf16._cpu_has_bf16_units()
    assert (len(_Counted.ran) >= 2 * len(builders) + 2) == expected, len(_Counted.ran)


def test_quantizers_refuse_an_unknown_precision() -> None:
    from vqkit.quantizers import VQ, SimVQ

    with pytest.raises(ValueError, match="search_precision"):
        VQ(4, 8, search_precision="fp16")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="search_precision"):
        SimVQ(4, 8, search_precision="half")  # type: ignore[arg-type]
