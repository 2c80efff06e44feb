"""Benchmark vqkit's quantizers against vector-quantize-pytorch ("vqp") — a benchmark, not a test.

Method
------
* One step is a training step: forward + backward in train mode on ``z = randn(tokens, d)``
  (``requires_grad``, same seed, the very same tensor for both libraries; vqp sees the view
  ``(1, tokens, d)``), ``loss = quantized.square().mean() + aux_loss``; grads are cleared first.
* Per config both modules get ``--warmup`` untimed steps, then one untimed memory step each,
  then ``--repeats`` rounds that time vqkit, vqp, vqkit, vqp, ... alternately in this process.
  The median step time is reported; tokens/s = tokens / median.
* Peak extra memory of a step. CUDA: ``max_memory_allocated`` minus ``memory_allocated`` before
  the step. CPU: tracemalloc does not see torch's allocator, so we measure resident memory (RSS):
  after ``gc.collect()`` and glibc ``malloc_trim(0)`` (freed heap goes back to the OS, so cached
  blocks from earlier steps cannot hide the step's demand) the baseline is VmRSS; the kernel's
  high-water mark VmHWM is reset by writing 5 to /proc/self/clear_refs and read after the step
  (exact, it misses no spike), and a thread samples /proc/self/statm every 2 ms as a fallback
  where the reset is not allowed. Peak = max(VmHWM, samples) - baseline. Module state (codebooks,
  EMA buffers) exists before the baseline and is not counted; z's gradient is.
* Matmul floor (configs with a nearest-code search): the bare product ``z @ codes.T``,
  (tokens x d)(d x K), median over the same repeats, computed in column blocks of at most 256 MiB
  into a reused, pre-touched buffer so that it times arithmetic rather than page faults.
  "x floor" = vqkit's median step time / floor time; the reference for LFQ and FSQ is vqp only.
* vqp options are set to vqkit's semantics (see each config's note): no k-means init, no dead-code
  restart, plain straight-through (vqp enables the rotation trick by default in VectorQuantize and
  SimVQ), the same loss weights, decay, temperature and bias.
* vqkit's codebook quantizers search with ``search_precision="auto"``: the exact bf16 search
  (:mod:`vqkit.quantizers.search`) on a CPU with bf16 units, float32 elsewhere; the ``-fp32`` configs
  force the float32 search. Each row says which search ran and, for the bf16 one, how many codes per
  token its error bound kept (mean / max), from one extra search on the step's tokens and codes.
* Search configs (``search-K``): the nearest-code search alone, no gradient, on ``z = randn(tokens,
  128)`` and ``randn(K, 128)`` codes: the bare float32 product (the floor above), ``nearest_code`` in
  float32 and in exact bf16, timed alternately in this process (median of the repeats); "÷ floor" is
  the search's median over the product's, and the candidate counts are the price of exactness.
* IBQ configs (``ibq-K``): vqkit's blocked IBQ (K codes, d = 256) for one training step (forward +
  backward, the step above) on ``--tokens`` tokens against (a) the straightforward implementation, the
  official form with its (N, K) logits, softmax and one-hots and autograd's backward, and (b) the bare
  float32 product ``z @ codes.T`` (the floor above), timed alternately with IBQ. Memory is the RSS peak
  above (the codebook exists before the baseline; its gradient is counted). The straightforward step
  needs ~5 (N, K) float32 tensors (20 GiB at 4096 x 262144), so it is measured at
  ``--ibq-dense-tokens`` (default 512) and half that, and its peak at ``--tokens`` is the straight line
  through the two (its (N, K) tensors grow linearly in N); IBQ is measured at both sizes, so the
  ratio at ``--ibq-dense-tokens`` is measured, not extrapolated. ``--ibq-dense-tokens`` equal to
  ``--tokens`` measures it at full size (a machine with the memory).

Run: ``python benchmarks/quantizers.py [--device cuda] [--configs fsq,emavq-65536] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from _common import check_device, fmt, load_vqp
from vqkit.quantizers import (
    BSQ,
    EMAVQ,
    FSQ,
    IBQ,
    LFQ,
    VQ,
    GroupedQuantizer,
    MultiScaleRQ,
    Quantizer,
    QuantizerOutput,
    ResidualFSQ,
    ResidualSimVQ,
    ResidualVQ,
    SimVQ,
)
from vqkit.quantizers import search as vqsearch
from vqkit.quantizers import search_bf16 as vqsearch_bf16
from vqkit.quantizers.multiscale import VAR_PATCH_NUMS

MIB = 2**20


@dataclass(frozen=True)
class Config:
    name: str
    dim: int
    search_size: int  # K of the nearest-code search (0: none, no matmul floor)
    vqkit: Callable[[], nn.Module]
    vqp: Callable[[ModuleType], nn.Module]
    note: str


@dataclass(frozen=True)
class SearchConfig:
    name: str
    dim: int
    codes: int


class LatentMap(nn.Module):
    """Feeds a multi-scale quantizer the benchmark's (tokens, d) as (tokens / 256, 16, 16, d) maps: VAR's grid.
    ``tokens`` counts latent positions here (a map of 256 positions gives VAR's 680 pyramid tokens)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, z: Tensor) -> Any:
        return self.inner(z.reshape(-1, 16, 16, z.shape[-1]))


SEARCH_CONFIGS = {c.name: c for c in (SearchConfig("search-65536", 128, 65536),
                                      SearchConfig("search-262144", 128, 262144))}


@dataclass(frozen=True)
class IBQConfig:
    name: str
    dim: int
    codes: int


IBQ_CONFIGS = {c.name: c for c in (IBQConfig("ibq-262144", 256, 262144),)}
EXTRA_CONFIGS = [*SEARCH_CONFIGS, *IBQ_CONFIGS]


def make_configs() -> dict[str, Config]:
    """The benchmark's configs; each vqp module is built with options matching vqkit's semantics."""

    def ema(k: int, precision: vqsearch.SearchPrecision = "auto") -> Config:
        opts = dict(decay=0.99, eps=1e-5, commitment_weight=0.25, kmeans_init=False, threshold_ema_dead_code=0,
                    rotation_trick=False)
        suffix = "" if precision == "auto" else f"-{precision}"
        return Config(f"emavq-{k}{suffix}", 128, k,
                      lambda: EMAVQ(128, k, decay=0.99, beta=0.25, search_precision=precision),
                      lambda v: v.VectorQuantize(dim=128, codebook_size=k, **opts),
                      "vqp VectorQuantize(" + ", ".join(f"{a}={b}" for a, b in opts.items()) + ")")

    def sim(k: int, precision: vqsearch.SearchPrecision = "auto") -> Config:
        suffix = "" if precision == "auto" else f"-{precision}"
        return Config(f"simvq-{k}{suffix}", 128, k,
                      lambda: SimVQ(128, k, beta=0.25, search_precision=precision),
                      lambda v: v.SimVQ(dim=128, codebook_size=k, codebook_transform=nn.Linear(128, 128, bias=True),
                                        rotation_trick=False, input_to_quantize_commit_loss_weight=0.25,
                                        commitment_weight=1.0),
                      "vqp SimVQ(rotation_trick=False, codebook_transform=Linear(128, 128, bias=True), "
                      "input_to_quantize_commit_loss_weight=0.25, commitment_weight=1.0)")

    def rotation(k: int, d: int) -> Config:
        opts = dict(decay=0.99, eps=1e-5, commitment_weight=0.25, kmeans_init=False, threshold_ema_dead_code=0,
                    rotation_trick=True)
        return Config(f"emavq-rot-{k}-d{d}", d, k, lambda: EMAVQ(d, k, decay=0.99, beta=0.25, gradient="rotation"),
                      lambda v: v.VectorQuantize(dim=d, codebook_size=k, **opts),
                      "rotation trick; vqp VectorQuantize(" + ", ".join(f"{a}={b}" for a, b in opts.items()) + ")")

    def grouped(groups: int, group_levels: list[int], stages: int) -> Config:
        n = len(group_levels)

        def inner() -> Quantizer:
            return FSQ(group_levels, symmetric=True) if stages == 1 else \
                ResidualFSQ(group_levels, stages, "scale", symmetric=True)

        return Config(f"grouped-{'fsq' if stages == 1 else f'rfsq{stages}'}-g{groups}", groups * n, 0,
                      lambda: GroupedQuantizer(inner, groups),
                      lambda v: v.GroupedResidualFSQ(dim=groups * n, groups=groups, levels=group_levels,
                                                     num_quantizers=stages),
                      f"vqp GroupedResidualFSQ(groups={groups}, levels={group_levels}, num_quantizers={stages}); "
                      f"vqkit GroupedQuantizer of {'FSQ(symmetric=True)' if stages == 1 else 'ResidualFSQ(scale)'}")

    levels = [8, 8, 8, 5, 5, 5]
    configs = [
        Config("fsq", 6, 0, lambda: FSQ(levels), lambda v: v.FSQ(levels=levels), "vqp FSQ(levels) defaults"),
        Config("rfsq", 5, 0, lambda: ResidualFSQ([4] * 5, 4, "scale", symmetric=True),
               lambda v: v.ResidualFSQ(dim=5, levels=[4] * 5, num_quantizers=4),
               "vqp ResidualFSQ defaults (symmetric grid, fixed per-stage scales, input clamp); "
               "vqkit ResidualFSQ(conditioning='scale', symmetric=True)"),
        Config("lfq-65536", 16, 0, lambda: LFQ(16, entropy_weight=0.1, commitment_weight=0.25, temperature=0.01),
               lambda v: v.LFQ(dim=16, codebook_size=2**16, entropy_loss_weight=0.1, commitment_loss_weight=0.25,
                               diversity_gamma=1.0),
               "vqp LFQ(entropy_loss_weight=0.1, commitment_loss_weight=0.25 (default 0), diversity_gamma=1.0), "
               "inv_temperature 100 = vqkit temperature 0.01"),
        # BSQ = vqp's LFQ(spherical=True); vqp's codebook entropy is over all 2^18 codes at once (an (N, 2^18)
        # tensor), vqkit's BSQ with one group of 18 bits computes the same exact entropy by the two-halves identity
        Config("bsq-262144", 18, 0, lambda: BSQ(18, group_size=18, entropy_weight=0.1, commitment_weight=0.25,
                                                temperature=0.01),
               lambda v: v.LFQ(dim=18, codebook_size=2**18, spherical=True, entropy_loss_weight=0.1,
                               commitment_loss_weight=0.25, diversity_gamma=1.0),
               "vqp LFQ(spherical=True, entropy_loss_weight=0.1, commitment_loss_weight=0.25, diversity_gamma=1.0) "
               "= vqkit BSQ(18, group_size=18): the exact entropy of all 2^18 codes on both sides"),
        ema(4096), ema(65536), ema(65536, "fp32"), sim(4096), sim(65536), sim(65536, "fp32"), sim(262144),
        # VAR's tokenizer quantizer. vqp's HierarchicalVQ is the closest module, not the same algorithm
        # (bilinear, not bicubic, upsampling; an EMA codebook; commitment per level on the pooled residual,
        # not VAR's loss on each partial reconstruction; another phi choice rule): a reference for cost only.
        Config("msrq-4096", 32, 4096,
               lambda: LatentMap(MultiScaleRQ(32, 4096, VAR_PATCH_NUMS)),
               lambda v: LatentMap(v.HierarchicalVQ(dim=32, codebook_size=4096, scales=VAR_PATCH_NUMS,
                                                    accept_image_fmap=True, channel_first=False, kmeans_init=False,
                                                    threshold_ema_dead_code=0, commitment_weight=0.25,
                                                    rotation_trick=False, quant_resi=0.5, share_quant_resi=4)),
               "tokens = latent positions, 16x16 maps, VAR's 10 scales (680 pyramid tokens a map); vqp "
               "HierarchicalVQ(scales=VAR's, kmeans_init=False, threshold_ema_dead_code=0, commitment_weight=0.25, "
               "rotation_trick=False, quant_resi=0.5, share_quant_resi=4): the closest vqp module, another algorithm"),
        # the same total tokens as msrq-4096 within 13% (3 x 256 = 768 a map vs 680): vqkit's own residual VQ
        Config("rvq3-4096", 32, 4096, lambda: ResidualVQ(32, 4096, 3, ema=True, decay=0.99, beta=0.25),
               lambda v: v.ResidualVQ(dim=32, codebook_size=4096, num_quantizers=3, decay=0.99, commitment_weight=0.25,
                                      kmeans_init=False, threshold_ema_dead_code=0, rotation_trick=False),
               "3-stage residual EMA VQ on the same positions (768 tokens a 16x16 map); vqp ResidualVQ(kmeans_init="
               "False, threshold_ema_dead_code=0, rotation_trick=False, commitment_weight=0.25)"),
        rotation(4096, 128), rotation(512, 32), grouped(4, [8, 5, 5, 5], 1), grouped(2, [4] * 5, 4),
        # the vqp modules vqkit.interop converts exactly (from_vqp gives these very vqkit modules)
        Config("vq-4096", 128, 4096, lambda: VQ(128, 4096, beta=1.0),
               lambda v: v.VectorQuantize(dim=128, codebook_size=4096, ema_update=False, learnable_codebook=True,
                                          commitment_weight=1.0, rotation_trick=False),
               "vqp VectorQuantize(ema_update=False, learnable_codebook=True, commitment_weight=1.0, "
               "rotation_trick=False) = vqkit VQ(beta=1)"),
        Config("rvq-8x1024", 128, 0, lambda: ResidualVQ(128, 1024, 8, detach_residual=True, decay=0.99, beta=0.25),
               lambda v: v.ResidualVQ(dim=128, num_quantizers=8, codebook_size=1024, decay=0.99,
                                      commitment_weight=0.25, rotation_trick=False),
               "vqp ResidualVQ(8 EMA stages, decay=0.99, commitment_weight=0.25, rotation_trick=False) = vqkit "
               "ResidualVQ(detach_residual=True)"),
        Config("rsimvq-4x4096", 128, 0, lambda: ResidualSimVQ(128, 4096, 4, detach_residual=True),
               lambda v: v.ResidualSimVQ(dim=128, num_quantizers=4, codebook_size=4096, rotation_trick=False),
               "vqp ResidualSimVQ(rotation_trick=False; bias-free transforms) = vqkit ResidualSimVQ("
               "detach_residual=True) (with a bias)"),
    ]
    return {c.name: c for c in configs}


def parse_args(argv: list[str] | None, names: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    default = ",".join([*names, *EXTRA_CONFIGS])
    p.add_argument("--configs", default=default, help=f"comma list of: {default}")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "results" / "bench")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    p.add_argument("--skip-vqp", action="store_true", help="run vqkit only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ibq-dense-tokens", type=int, default=512,
                   help="tokens of the straightforward (N, K) IBQ step (memory grows as N x K)")
    args = p.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    names = names + EXTRA_CONFIGS
    if unknown := [c for c in args.configs if c not in names]:
        p.error(f"unknown config(s) {unknown}; choose from {names}")
    check_device(p, args.device)
    return args


def machine_info(device: str, vqp: ModuleType | None) -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    return {"torch": torch.__version__, "python": platform.python_version(), "cpu_model": cpu,
            "threads": torch.get_num_threads(), "device": device,
            "device_name": torch.cuda.get_device_name() if device == "cuda" else cpu,
            "vqp": importlib.metadata.version("vector-quantize-pytorch") if vqp else None,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "exact_bf16_search": vqsearch.reduced_precision_available(device)
            and (device != "cpu" or vqsearch_bf16._cpu_has_bf16_units())}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(module: nn.Module, z: Tensor, batched: bool) -> None:
    """Forward + backward of one training step; vqp modules take (1, tokens, d)."""
    module.zero_grad(set_to_none=True)
    z.grad = None
    out = module(z.unsqueeze(0) if batched else z)
    if isinstance(out, QuantizerOutput):
        quantized, aux = out.quantized, out.loss
    else:  # vqp: (quantized, indices[, aux_loss])
        quantized, aux = out[0], out[2] if len(out) > 2 else None
    loss = quantized.square().mean()
    (loss if aux is None else loss + aux.sum()).backward()


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def _status_kib(key: str) -> int:
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith(key))
    return int(line.split()[1])


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Peak extra memory of one call of ``fn`` in MiB (method: module docstring)."""
    gc.collect()
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / MIB
    with contextlib.suppress(OSError, AttributeError):  # glibc only
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    page, statm = os.sysconf("SC_PAGE_SIZE"), Path("/proc/self/statm")
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.002):
            samples.append(int(statm.read_text().split()[1]) * page)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()  # before the baseline, so that its own stack is not counted
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        hwm_ok = True
    except OSError:
        hwm_ok = False
    base = int(statm.read_text().split()[1]) * page
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    peak = max([base, *samples, _status_kib("VmHWM") * 1024 if hwm_ok else 0])
    return (peak - base) / MIB


def matmul_floor(tokens: int, dim: int, k: int, device: torch.device, repeats: int, warmup: int) -> list[float]:
    """Times of the bare distance product z @ codes.T, blocked into a reused buffer of <= 256 MiB."""
    z, codes = torch.randn(tokens, dim, device=device), torch.randn(k, dim, device=device)
    cols = max(1, min(k, 256 * MIB // (4 * tokens)))
    buf = torch.zeros(tokens * cols, device=device)

    def product() -> None:
        for j in range(0, k, cols):
            w = min(cols, k - j)
            torch.mm(z, codes[j : j + w].t(), out=buf[: tokens * w].view(tokens, w))

    for _ in range(warmup):
        product()
    return [time_call(product, device) for _ in range(repeats)]


def search_record(z: Tensor, codes: Tensor, precision: vqsearch.SearchPrecision) -> dict[str, Any]:
    """Which search ``precision`` runs on (z, codes) and the candidate counts of its bf16 search."""
    stats = vqsearch.SearchStats()
    vqsearch.nearest_code(z.detach(), codes, precision=precision, stats=stats)
    ran = "bf16" if stats.bf16_tokens else "fp32"
    return {"search": ran, "candidates_mean": stats.mean_candidates if stats.bf16_tokens else None,
            "candidates_max": stats.max_candidates if stats.bf16_tokens else None,
            "reranked_fraction": stats.reranked_tokens / stats.bf16_tokens if stats.bf16_tokens else None,
            "fallback_tokens": stats.fallback_tokens}


def module_codes(module: nn.Module) -> Tensor | None:
    """The effective codebook a vqkit quantizer searches (EMAVQ: ``codebook``; SimVQ: ``codes()``), else None."""
    with torch.no_grad():
        if isinstance(module, SimVQ):
            return module.codes()
        if isinstance(module, EMAVQ):
            return module.codebook.float()
    return None


def bench_search(cfg: SearchConfig, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The nearest-code search alone: bare float32 product, float32 search, exact bf16 search."""
    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    z = torch.randn(args.tokens, cfg.dim, generator=gen).to(device)
    codes = torch.randn(cfg.codes, cfg.dim, generator=gen).to(device)
    cols = max(1, min(cfg.codes, 256 * MIB // (4 * args.tokens)))
    buf = torch.zeros(args.tokens * cols, device=device)

    def product() -> None:
        for j in range(0, cfg.codes, cols):
            w = min(cols, cfg.codes - j)
            torch.mm(z, codes[j : j + w].t(), out=buf[: args.tokens * w].view(args.tokens, w))

    fns: dict[str, Callable[[], object]] = {
        "floor": product,
        "fp32": lambda: vqsearch.nearest_code(z, codes, precision="fp32"),
        "bf16": lambda: vqsearch.nearest_code(z, codes, precision="bf16"),
    }
    same = bool(torch.equal(vqsearch.nearest_code(z, codes, precision="fp32"),
                            vqsearch.nearest_code(z, codes, precision="bf16")))
    for fn in fns.values():
        for _ in range(args.warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.repeats):
        for name, fn in fns.items():  # alternate: floor, fp32, bf16, floor, ...
            times[name].append(time_call(fn, device))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"config": cfg.name, "tokens": args.tokens, "dim": cfg.dim, "codes": cfg.codes, "times_s": times,
            "floor_s": med["floor"], "fp32_s": med["fp32"], "bf16_s": med["bf16"],
            "fp32_over_floor": med["fp32"] / med["floor"], "bf16_over_floor": med["bf16"] / med["floor"],
            "identical_indices": same, **search_record(z, codes, "bf16")}


def bench_config(cfg: Config, args: argparse.Namespace, vqp: ModuleType | None, device: torch.device) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    z = torch.randn(args.tokens, cfg.dim, device=device, requires_grad=True)
    builders: dict[str, tuple[Callable[[], nn.Module], bool]] = {"vqkit": (cfg.vqkit, False)}
    if vqp is not None:
        builders["vqp"] = (lambda: cfg.vqp(vqp), True)
    steps: dict[str, Callable[[], None]] = {}
    searched: dict[str, Any] = {}
    for lib, (build, batched) in builders.items():
        torch.manual_seed(args.seed)
        module = build().to(device).train()
        steps[lib] = lambda m=module, b=batched: train_step(m, z, b)
        codes = module_codes(module) if lib == "vqkit" else None
        if codes is not None:
            searched = search_record(z, codes, getattr(module, "search_precision", "fp32"))
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    peaks = {lib: peak_memory_mb(step, device) for lib, step in steps.items()}
    times: dict[str, list[float]] = {lib: [] for lib in steps}
    for _ in range(args.repeats):
        for lib, step in steps.items():  # alternate: vqkit, vqp, vqkit, vqp, ...
            times[lib].append(time_call(step, device))
    floor = matmul_floor(args.tokens, cfg.dim, cfg.search_size, device, args.repeats, args.warmup) \
        if cfg.search_size else None
    steps.clear()
    gc.collect()
    rec: dict[str, Any] = {"config": cfg.name, "tokens": args.tokens, "dim": cfg.dim, "note": cfg.note, **searched}
    for lib in ("vqkit", "vqp"):
        med = statistics.median(times[lib]) if lib in times else None
        rec[lib] = None if med is None else {"times_s": times[lib], "median_s": med, "tokens_per_s": args.tokens / med,
                                             "peak_mb": peaks[lib]}
    both = rec["vqp"] is not None
    rec["speed_ratio"] = rec["vqp"]["median_s"] / rec["vqkit"]["median_s"] if both else None
    rec["memory_ratio"] = rec["vqp"]["peak_mb"] / rec["vqkit"]["peak_mb"] if both and rec["vqkit"]["peak_mb"] > 0 \
        else None
    rec["floor_times_s"] = floor
    rec["floor_s"] = statistics.median(floor) if floor else None
    rec["vqkit_over_floor"] = rec["vqkit"]["median_s"] / rec["floor_s"] if floor else None
    return rec


def dense_ibq_step(z: Tensor, codes: Tensor, beta: float = 0.25) -> None:
    """The straightforward IBQ training step: the official form with its (N, K) tensors, autograd backward."""
    codes.grad, z.grad = None, None
    logits = z @ codes.t()
    soft = logits.softmax(dim=-1)
    idx = soft.argmax(dim=-1)
    hard = torch.zeros_like(logits).scatter_(1, idx[:, None], 1.0)
    y = (hard - soft.detach() + soft) @ codes
    q = codes[idx]
    aux = (y - z).pow(2).mean() + (q.detach() - z).pow(2).mean() + beta * (q - z.detach()).pow(2).mean()
    (y.square().mean() + aux).backward()


def bench_ibq(cfg: IBQConfig, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Blocked IBQ vs the straightforward (N, K) step (memory) and vs the bare product (time)."""
    torch.manual_seed(args.seed)
    module = IBQ(cfg.dim, cfg.codes).to(device).train()
    tokens, small = args.tokens, min(args.tokens, args.ibq_dense_tokens)
    z = torch.randn(tokens, cfg.dim, device=device, requires_grad=True)
    part = {n: z.detach()[:n].clone().requires_grad_() for n in (small, small // 2)}
    ibq_step = lambda: train_step(module, z, False)  # noqa: E731
    peaks = {"ibq": peak_memory_mb(ibq_step, device),
             "ibq_small": peak_memory_mb(lambda: train_step(module, part[small], False), device),
             "dense_small": peak_memory_mb(lambda: dense_ibq_step(part[small], module.codebook), device)}
    if small < tokens:
        peaks["dense_half"] = peak_memory_mb(lambda: dense_ibq_step(part[small // 2], module.codebook), device)
        slope = (peaks["dense_small"] - peaks["dense_half"]) / (small - small // 2)
        dense_full, how = peaks["dense_small"] + slope * (tokens - small), "extrapolated"
    else:
        dense_full, how = peaks["dense_small"], "measured"
    module.zero_grad(set_to_none=True)
    gc.collect()
    codes = torch.randn(cfg.codes, cfg.dim, device=device)
    cols = max(1, min(cfg.codes, 256 * MIB // (4 * tokens)))
    buf = torch.zeros(tokens * cols, device=device)

    def product() -> None:
        for j in range(0, cfg.codes, cols):
            w = min(cols, cfg.codes - j)
            torch.mm(z.detach(), codes[j : j + w].t(), out=buf[: tokens * w].view(tokens, w))

    fns: dict[str, Callable[[], object]] = {"floor": product, "ibq": ibq_step}
    for fn in fns.values():
        for _ in range(args.warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.repeats):
        for name, fn in fns.items():  # alternate: floor, ibq, floor, ...
            times[name].append(time_call(fn, device))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"config": cfg.name, "tokens": tokens, "dim": cfg.dim, "codes": cfg.codes, "times_s": times,
            "floor_s": med["floor"], "ibq_s": med["ibq"], "ibq_over_floor": med["ibq"] / med["floor"],
            "peaks_mb": peaks, "dense_tokens": small, "dense_full_mb": dense_full, "dense_full_is": how,
            "memory_ratio_same_tokens": peaks["dense_small"] / peaks["ibq_small"],
            "memory_ratio": dense_full / peaks["ibq"]}


def format_ibq_table(records: list[dict[str, Any]]) -> str:
    head = ["config", "tokens x codes x d", "floor ms", "IBQ step ms", "IBQ ÷ floor", "IBQ peak MB",
            "dense peak MB (at tokens)", "dense ÷ IBQ memory", "at dense tokens: IBQ / dense MB, ratio"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        p = r["peaks_mb"]
        cells = [r["config"], f"{r['tokens']} x {r['codes']} x {r['dim']}", f"{r['floor_s'] * 1e3:.0f}",
                 f"{r['ibq_s'] * 1e3:.0f}", f"{r['ibq_over_floor']:.2f}", f"{p['ibq']:.0f}",
                 f"{r['dense_full_mb']:.0f} ({r['dense_full_is']})", f"{r['memory_ratio']:.1f}",
                 f"{r['dense_tokens']}: {p['ibq_small']:.0f} / {p['dense_small']:.0f}, "
                 f"{r['memory_ratio_same_tokens']:.1f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _candidates(r: dict[str, Any]) -> str:
    if r.get("search") != "bf16":
        return r.get("search", "") or ""
    return f"bf16, {r['candidates_mean']:.2f} / {r['candidates_max']}"


def format_table(records: list[dict[str, Any]]) -> str:
    head = ["config", "tokens", "vqkit tok/s", "vqp tok/s", "speed vqkit/vqp", "vqkit peak MB", "vqp peak MB",
            "memory vqp/vqkit", "floor ms", "vqkit ÷ floor", "search, codes kept mean / max"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        kit, ref = r["vqkit"], r["vqp"] or {}
        cells = [r["config"], str(r["tokens"]), fmt(kit["tokens_per_s"], ",.0f"),
                 fmt(ref.get("tokens_per_s"), ",.0f"),
                 fmt(r["speed_ratio"], ".2f"), fmt(kit["peak_mb"], ".1f"), fmt(ref.get("peak_mb"), ".1f"),
                 fmt(r["memory_ratio"], ".2f"), fmt(r["floor_s"] and r["floor_s"] * 1e3, ".1f"),
                 fmt(r["vqkit_over_floor"], ".2f"), _candidates(r)]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def format_search_table(records: list[dict[str, Any]]) -> str:
    head = ["config", "tokens x codes x d", "floor ms", "fp32 search ms", "bf16 search ms", "fp32 ÷ floor",
            "bf16 ÷ floor", "codes kept mean / max", "reranked", "same indices"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        kept = "n/a" if r["candidates_mean"] is None else f"{r['candidates_mean']:.2f} / {r['candidates_max']}"
        cells = [r["config"], f"{r['tokens']} x {r['codes']} x {r['dim']}", f"{r['floor_s'] * 1e3:.1f}",
                 f"{r['fp32_s'] * 1e3:.1f}", f"{r['bf16_s'] * 1e3:.1f}", f"{r['fp32_over_floor']:.2f}",
                 f"{r['bf16_over_floor']:.2f}", kept, fmt(r["reranked_fraction"], ".2%"),
                 "yes" if r["identical_indices"] else "NO"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def check_targets(records: list[dict[str, Any]]) -> list[str]:
    """One MET / MISSED line per target whose config ran (speed and memory need vqp)."""
    targets = [("emavq-65536", "speed_ratio", ">=", 10.0), ("emavq-65536", "memory_ratio", ">=", 5.0),
               ("simvq-65536", "speed_ratio", ">=", 3.0), ("lfq-65536", "speed_ratio", ">=", 20.0),
               ("fsq", "speed_ratio", ">=", 1.0), ("rfsq", "speed_ratio", ">=", 1.0),
               ("emavq-65536", "vqkit_over_floor", "<=", 1.5), ("simvq-65536", "vqkit_over_floor", "<=", 1.5),
               ("simvq-262144", "vqkit_over_floor", "<=", 1.5), ("search-65536", "bf16_over_floor", "<=", 0.6),
               ("emavq-rot-4096-d128", "speed_ratio", ">=", 1.0), ("emavq-rot-512-d32", "speed_ratio", ">=", 1.0),
               ("grouped-fsq-g4", "speed_ratio", ">=", 1.0), ("grouped-rfsq4-g2", "speed_ratio", ">=", 1.0),
               ("emavq-rot-4096-d128", "memory_ratio", ">=", 1.0), ("grouped-fsq-g4", "memory_ratio", ">=", 1.0),
               ("ibq-262144", "memory_ratio", ">=", 8.0), ("ibq-262144", "ibq_over_floor", "<=", 4.0),
               ("bsq-262144", "speed_ratio", ">=", 20.0), ("bsq-262144", "memory_ratio", ">=", 1.0)]
    by_name, lines = {r["config"]: r for r in records}, []
    for name, key, op, bound in targets:
        if name not in by_name:
            continue
        value = by_name[name][key]
        verdict = "n/a" if value is None else "MET" if (value >= bound if op == ">=" else value <= bound) else "MISSED"
        lines.append(f"- {name}: {key} {op} {bound:g}: {verdict} (measured {fmt(value, '.2f')})")
    return lines


def write_results(out: Path, device: str, report: dict[str, Any], markdown: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"quantizers-{device}.md").write_text(markdown + "\n")
    (out / f"quantizers-{device}.json").write_text(json.dumps(report, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    configs = make_configs()
    args = parse_args(argv, list(configs))
    if args.threads:
        torch.set_num_threads(args.threads)
    vqp, device = load_vqp(args.skip_vqp), torch.device(args.device)
    info = machine_info(args.device, vqp)
    records, searches, ibqs = [], [], []
    for name in args.configs:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        if name in SEARCH_CONFIGS:
            searches.append(bench_search(SEARCH_CONFIGS[name], args, device))
        elif name in IBQ_CONFIGS:
            ibqs.append(bench_ibq(IBQ_CONFIGS[name], args, device))
        else:
            records.append(bench_config(configs[name], args, vqp, device))
    notes = "\n".join(f"- {r['config']}: {r['note']}" for r in records)
    search_md = (f"\n\nNearest-code search alone (no gradient; exact bf16 search: "
                 f"{'available' if info['exact_bf16_search'] else 'not available, float32 ran'}):\n\n"
                 f"{format_search_table(searches)}") if searches else ""
    ibq_md = (f"\n\nIBQ, one training step (forward + backward) vs the straightforward (N, K) implementation "
              f"(memory) and the bare product (time):\n\n{format_ibq_table(ibqs)}") if ibqs else ""
    markdown = (f"# vqkit vs vqp, {info['device_name']}, torch {info['torch']}, {info['threads']} threads, "
                f"vqp {info['vqp'] or 'not run'}\n\n{format_table(records)}{search_md}{ibq_md}\n\nTargets:\n"
                + "\n".join(check_targets(records + searches + ibqs))
                + f"\n\nNotes (median of {args.repeats} alternating repeats; forward+backward, train mode):\n{notes}")
    by_name = {r["config"]: r for r in records}
    if {"msrq-4096", "rvq3-4096"} <= set(by_name):  # VAR's pyramid against residual VQ at ~ the same tokens
        ms, rq = by_name["msrq-4096"]["vqkit"]["median_s"], by_name["rvq3-4096"]["vqkit"]["median_s"]
        markdown += (f"\n- msrq-4096 (680 tokens a map) vs vqkit rvq3-4096 (768): step time msrq/rvq3 = {ms / rq:.2f}, "
                     f"time per output token msrq/rvq3 = {(ms / 680) / (rq / 768):.2f}")
    print(markdown)
    report = {"machine": info, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "records": records, "search": searches, "ibq": ibqs}
    write_results(args.out, args.device, report, markdown)
    print(f"\nwrote {args.out}/quantizers-{args.device}.{{md,json}}", file=sys.stderr)


if __name__ == "__main__":
    main()
