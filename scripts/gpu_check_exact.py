"""Phase 3 of ``scripts/gpu_check.py``: is the exact bf16 nearest-code search exact on this device?

The search (``vqkit.quantizers.search_bf16``) returns the float32 search's very indices provided
(1) a bf16 matrix product accumulates in float32 and (2) a float32 ``addmm`` gives an entry the same
value whatever the number of columns of the call (its rerank recomputes a few columns and compares
them with the float32 search's full blocks). vqkit checks both once per process on CPU
(``reduced_precision_available``) and refuses CUDA outright, because cuBLAS picks kernels (split-K
among them) by shape. This module checks both on the device, on the shapes the search uses, checks
the search's error bound against float64 on its own scores, and then compares and times the bf16
search against the float32 one at K = 65,536 and 262,144: the evidence that would justify enabling
it on CUDA. ``nearest_code`` refuses bf16 off-CPU, so the search class is called directly, as
``nearest_code`` and the tests do.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor

from vqkit.quantizers.search import DEFAULT_MAX_BYTES, SearchStats, nearest_code, squared_norms
from vqkit.quantizers.search_bf16 import Bf16Search

_MIN_ROWS = 64  # as vqkit.quantizers.search: below this many tokens per block a product loses efficiency
_RHO = 2.0**-8 / (1 - 2.0**-8)  # rounding a float32 score to bf16: |s - S| <= rho·|s|


@dataclass(frozen=True)
class Case:
    """One search shape: tokens per call, codes, code dimension (and which preset it stands for)."""

    label: str
    tokens: int
    codes: int
    dim: int


FULL_CASES = (Case("simvq-paper 65k (256 img x 16x16 tokens)", 65536, 65536, 128),
              Case("simvq 262k, paper tokens", 65536, 262144, 128),
              Case("speech-paper SimVQ-4096 (40 x 50 tokens)", 2048, 4096, 512))
SMALL_CASES = (Case("dry run", 512, 4096, 32), Case("dry run, column blocks", 512, 16384, 16))


def block_shape(n: int, k: int, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[int, int]:
    """(rows, cols) of the float32 search's blocks: the rule of ``vqkit.quantizers.search`` (not exported)."""
    budget = max(1, max_bytes // 4)
    if budget >= k * min(n, _MIN_ROWS):
        return max(1, min(n, budget // k)), k
    rows = min(n, _MIN_ROWS)
    return rows, max(1, budget // rows)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


# -- the two facts --------------------------------------------------------------------------------
def bf16_accumulation(device: torch.device, rows: int, cols: int, depth: int) -> dict[str, Any]:
    """A bf16 product accumulated in float32? Two rows that a bf16 accumulator (or a bf16 split-K
    reduction) gets wrong: 1 + m·2^-9 (CPU probe's) and 1 + m·2^-9 - 1 = m·2^-9 (cancellation)."""
    m = min(127, depth - 2)
    a = torch.zeros(rows, depth, dtype=torch.bfloat16, device=device)
    a[:, 0], a[:, 1 : 1 + m] = 1.0, 2.0**-9
    b = a.clone()
    b[:, depth - 1] = -1.0
    ones = torch.ones(cols, depth, dtype=torch.bfloat16, device=device).t()
    plain = float(torch.tensor(1 + m * 2.0**-9, dtype=torch.float64).to(torch.bfloat16))
    got_plain, got_cancel = torch.mm(a, ones).float(), torch.mm(b, ones).float()
    ok_plain = bool((got_plain == plain).all())
    ok_cancel = bool((got_cancel == m * 2.0**-9).all())
    return {"shape": f"({rows} x {depth}) @ ({depth} x {cols})", "holds": ok_plain and ok_cancel,
            "plain": ok_plain, "cancellation": ok_cancel,
            "cancellation_got": sorted({float(v) for v in got_cancel.flatten()[:4096].tolist()})[:4]}


def column_independence(device: torch.device, case: Case, gen: torch.Generator) -> dict[str, Any]:
    """Float32 ``addmm`` entries of a search block against the same entries from calls of fewer columns.

    Widths of 64 and more in steps of 16 are what the rerank uses (required); 16 and 77 are the CPU
    probe's (reported). Also: the first rows of a block from a call of fewer rows (reported only)."""
    rows, cols = block_shape(case.tokens, case.codes)
    z = torch.randn(rows, case.dim, generator=gen).to(device)
    codes = torch.randn(cols, case.dim, generator=gen).to(device)
    sq = squared_norms(codes)
    full = torch.empty(rows, cols, device=device)
    torch.addmm(sq, z, codes.t(), alpha=-2.0, out=full)  # as fp32_rows: a transposed view, out=
    widths = [w for w in (16, 64, 77, 80, 128, 1024, 4096) if w <= cols]
    required, failed, informational = True, [], {}
    for w in widths:
        pick = torch.randperm(cols, generator=gen)[:w].sort().values.to(device)
        part = torch.addmm(sq[pick], z, codes.index_select(0, pick).t(), alpha=-2.0)
        equal = bool(torch.equal(part, full[:, pick]))
        if w >= 64 and w % 16 == 0:
            required &= equal
        else:
            informational[f"width {w}"] = equal
        if not equal:
            diff = (part - full[:, pick]).abs().max()
            failed.append(f"{w} cols: {int((part != full[:, pick]).sum())} entries differ, max {float(diff):.3g}")
    for r in (16, rows // 2):
        if 0 < r < rows:
            part = torch.addmm(sq, z[:r], codes.t(), alpha=-2.0)
            informational[f"first {r} rows"] = bool(torch.equal(part, full[:r]))
    return {"case": case.label, "block": f"{rows} x {cols} (d = {case.dim})", "holds": required,
            "widths": widths, "failures": failed, "informational": informational}


def bound_check(device: torch.device, case: Case, gen: torch.Generator, tokens: int = 256) -> dict[str, Any]:
    """Largest |s - y| / (A_t + rho·|s|) over all pairs of ``tokens`` tokens and the case's codebook, for
    the bf16 scores s this device computes and y the float32 search's value -d32/2 and the float64 one:
    the search's error bound holds on this device where it is <= 1."""
    z = torch.randn(tokens, case.dim, generator=gen).to(device)
    codes = torch.randn(case.codes, case.dim, generator=gen).to(device)
    sq = squared_norms(codes)
    rows, cols = block_shape(tokens, case.codes)
    bf = Bf16Search(codes, sq, tokens, rows, cols, DEFAULT_MAX_BYTES, None)
    z_hat = z.to(torch.bfloat16)
    s = torch.mm(bf.augmented(z_hat), bf.aug.t()).double()[:, : case.codes]
    bound = bf.slack(z, z_hat)[0].double()[:, None] + _RHO * s.abs()
    y32 = -torch.addmm(sq, z, codes.t(), alpha=-2.0).double() / 2
    y64 = z.double() @ codes.double().t() - sq.double() / 2
    ratio = float(torch.maximum((s - y32).abs(), (s - y64).abs()).div(bound).max())
    return {"case": case.label, "tokens": tokens, "max_error_over_bound": ratio, "holds": ratio <= 1.0}


# -- the search itself ------------------------------------------------------------------------------
def compare_search(device: torch.device, case: Case, gen: torch.Generator, repeats: int) -> dict[str, Any]:
    """Indices of the bf16-exact search against the float32 search on the device, and both timed."""
    z = torch.randn(case.tokens, case.dim, generator=gen).to(device)
    codes = torch.randn(case.codes, case.dim, generator=gen).to(device)
    sq = squared_norms(codes)
    rows, cols = block_shape(case.tokens, case.codes)
    one = torch.ones((), device=device)

    def bf16(stats: SearchStats | None = None) -> Tensor:
        return Bf16Search(codes, sq, case.tokens, rows, cols, DEFAULT_MAX_BYTES, stats).run(z, one)

    stats, refused = SearchStats(), SearchStats()
    idx32 = nearest_code(z, codes, precision="fp32")
    idx16 = bf16(stats)
    nearest_code(z, codes, precision="bf16", stats=refused)  # what vqkit does today when bf16 is asked for
    differ = int((idx32 != idx16).sum())
    floor_cols = max(1, min(case.codes, 256 * 2**20 // (4 * case.tokens)))
    buf = torch.empty(case.tokens * floor_cols, device=device)

    def floor() -> None:
        for j in range(0, case.codes, floor_cols):
            w = min(floor_cols, case.codes - j)
            torch.mm(z, codes[j : j + w].t(), out=buf[: case.tokens * w].view(case.tokens, w))

    times = {"floor": timed(floor, device, repeats),
             "fp32": timed(lambda: nearest_code(z, codes, precision="fp32"), device, repeats),
             "bf16": timed(bf16, device, repeats)}
    med = {k: statistics.median(v) for k, v in times.items()}
    return {**asdict(case), "block": f"{rows} x {cols}", "identical": differ == 0, "differing_indices": differ,
            "bf16_tokens": stats.bf16_tokens, "fallback_tokens": stats.fallback_tokens,
            "candidates_mean": stats.mean_candidates, "candidates_max": stats.max_candidates,
            "reranked_tokens": stats.reranked_tokens,
            "nearest_code_bf16_ran": "bf16" if refused.bf16_tokens else "fp32 (refused off-CPU)",
            "times_s": times, "floor_ms": 1e3 * med["floor"], "fp32_ms": 1e3 * med["fp32"],
            "bf16_ms": 1e3 * med["bf16"], "bf16_speedup": med["fp32"] / med["bf16"]}


def _attempt(label: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fn()``, or a record of why it raised (an op missing on this device): the check then does not hold."""
    try:
        return fn()
    except (RuntimeError, NotImplementedError, ValueError, torch.cuda.OutOfMemoryError) as err:
        return {"case": label, "shape": label, "holds": False, "error": f"{type(err).__name__}: {err}"[:400]}


def run_exactness(device_name: str, small: bool, budget: float, save: Callable[[dict[str, Any]], None]) -> None:
    """Every check in turn, ``save``-d after each one; search timings that would pass ``budget`` are skipped."""
    start = time.perf_counter()
    device = torch.device(device_name)
    gen = torch.Generator().manual_seed(0)
    cases = SMALL_CASES if small else FULL_CASES
    search_cases = cases if small else tuple(c for c in cases if c.codes in (65536, 262144))
    repeats = 1 if small else 3
    result: dict[str, Any] = {"device": device_name, "accumulation": [], "columns": [], "bound": [], "search": [],
                              "skipped": [], "repeats": repeats}
    with torch.no_grad():
        shapes = {(16, 64, 132), (128, 1024, 132)}
        for case in cases:
            rows, cols = block_shape(case.tokens, case.codes)
            bf = Bf16Search(torch.zeros(case.codes, case.dim, device=device), torch.zeros(case.codes, device=device),
                            case.tokens, rows, cols, DEFAULT_MAX_BYTES, None)
            shapes.add((bf.chunk, bf.span, bf.width))  # the search's own product: (chunk, width) @ (width, span)
        for rows, cols, depth in sorted(shapes):
            result["accumulation"].append(_attempt(f"({rows} x {depth}) @ ({depth} x {cols})",
                                                   partial(bf16_accumulation, device, rows, cols, depth)))
            save(result)
        for case in cases:
            result["columns"].append(_attempt(case.label, partial(column_independence, device, case, gen)))
            save(result)
        for case in cases:
            result["bound"].append(_attempt(case.label, partial(bound_check, device, case, gen)))
            save(result)
        result["property_holds"] = all(r["holds"] for key in ("accumulation", "columns", "bound")
                                       for r in result[key])
        save(result)
        for case in search_cases:
            spent = time.perf_counter() - start
            if result["search"] and spent > 0.6 * budget:
                result["skipped"].append(f"{case.label}: {spent:.0f} s of {budget:.0f} s spent")
                continue
            searched = _attempt(case.label, partial(compare_search, device, case, gen, repeats))
            if "error" in searched:
                result["skipped"].append(f"{case.label}: {searched['error']}")
            else:
                result["search"].append(searched)
            save(result)
    result["seconds"] = time.perf_counter() - start
    save(result)
