"""Training steps per second of whole vqkit tokenizers, and the quantizer's share of a step — a benchmark.

What users feel is the whole training step, not the quantizer alone. For each case (an arch of a CPU
preset with one quantizer) three models with the very same encoder and decoder weights are timed:

* ``vqkit``:    the tokenizer as ``TokenizerConfig`` builds it;
* ``identity``: the same model with the quantizer replaced by the identity (z passes through), so
  the quantizer's share of a step, ``1 - t_identity / t_model``, is a measured number;
* ``vqp``:      the same model with vector-quantize-pytorch's quantizer behind a thin adapter to the
  vqkit contract (channels-last ``(B, ..., D)`` in, :class:`QuantizerOutput` out; its ``metrics`` are
  a lazy :class:`CodeMetrics` over vqkit's ``code_statistics``, like vqkit's own: the timed step reads
  none, so neither side pays for them).
  vqp options are set to vqkit's semantics as in ``benchmarks/quantizers.py`` (no k-means init,
  no dead-code restart, no rotation trick, the same loss weights); vqp has no LayerNorm-conditioned
  RFSQ, so ``rfsq`` is compared with vqp's default ``ResidualFSQ`` (fixed per-stage scales).

One step = forward (bf16 autocast on CUDA, as ``vqkit train`` does by default), the preset's
reconstruction loss (images: L1; speech: 0.1·L1 + multi-resolution mel) + the quantizer's loss,
``zero_grad``, backward, gradient-norm clipping (the preset's value, else the norm only, as the
trainer does) and an Adam step, on one fixed random batch (no data loading, no weight EMA, no GAN).
Per case every model gets ``--warmup`` untimed steps, then ``--repeats`` rounds time the models
alternately (identity, vqkit, vqp, identity, ...) in this process; the median is reported.

Backbone modes (``--modes``; each mode's rows alternate with the others in the same rounds):
* ``eager``: plain PyTorch (default).
* ``channels_last``: conv weights and the input in ``torch.channels_last`` (image archs only). Measured on
  the shared 2-core development CPU (1 thread, alternating): rfsq_conv between 5 % slower and 15 %
  faster (not resolved), vqgan 15-20 % *slower* (GroupNorm); so it is an option, not the default.
* ``compile``: ``torch.compile`` of the encoder and the decoder (the quantizers sync with the host for
  their finiteness checks and stay eager); compilation is capped by ``--compile-timeout`` and a failure
  skips the mode with its reason. Same machine: rfsq_conv steps 10-20 % faster (with and without the
  quantizer), vqgan 0-5 % (within noise), after 0.5-2 min of compiling per case; use
  ``--modes eager,compile`` to see it. Not the default because of that compile time.

Run:  .venv/bin/python benchmarks/train.py [--device cuda] [--only vqgan/simvq-65536] [--repeats 5]
      .venv/bin/python benchmarks/train.py --quick          # toy sizes, seconds (the test runs this)
On a shared machine add ``--threads 1``: there, torch's OpenMP threads wait for descheduled siblings and
2-thread steps came out 2-20x slower and erratic.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import importlib
import importlib.metadata
import json
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from _common import check_device, fmt, load_vqp
from vqkit.models import Tokenizer, TokenizerConfig
from vqkit.quantizers import QuantizerOutput
from vqkit.quantizers.base import CodeMetrics, code_statistics
from vqkit.train import load_config

ARCH_PRESET = {"rfsq_conv": "rfsq-cpu", "vqgan": "simvq-cpu", "speech": "speech-cpu"}
MODES = ("eager", "channels_last", "compile")
EMA_OPTS = dict(decay=0.99, eps=1e-5, commitment_weight=0.25, kmeans_init=False, threshold_ema_dead_code=0,
                rotation_trick=False)


# -- the quantizers dropped into the model -------------------------------------------------------
class IdentityQuantizer(nn.Module):
    """z passes through: the model without its quantizer (zero indices, zero loss)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim, self.codebook_size, self.num_stages = dim, 1, 1

    def forward(self, z: Tensor) -> QuantizerOutput:
        return QuantizerOutput(z, torch.zeros(z.shape[:-1], dtype=torch.long, device=z.device), z.new_zeros(()), {})


class VqpQuantizer(nn.Module):
    """A vqp quantizer behind the vqkit contract: (B, ..., D) -> QuantizerOutput over (B, N, D)."""

    def __init__(self, module: nn.Module, dim: int, codebook_size: int, num_stages: int = 1) -> None:
        super().__init__()
        self.module, self.dim, self.codebook_size, self.num_stages = module, dim, codebook_size, num_stages

    def forward(self, z: Tensor) -> QuantizerOutput:
        out = self.module(z.reshape(z.shape[0], -1, z.shape[-1]))
        quantized, indices = out[0].reshape(z.shape), out[1].reshape(*z.shape[:-1], -1).squeeze(-1).long()
        loss = out[2].sum() if len(out) > 2 and isinstance(out[2], Tensor) else z.new_zeros(())
        return QuantizerOutput(quantized, indices, loss, CodeMetrics(self._metrics, indices))

    @torch.no_grad()
    def _metrics(self, indices: Tensor) -> dict[str, Tensor]:
        """Computed on first read, as vqkit's own (a timed step reads none: neither side pays)."""
        stats = [code_statistics(col, self.codebook_size) for col in indices.reshape(-1, self.num_stages).T]
        return {"perplexity": torch.stack([p for p, _ in stats]).mean(),
                "usage": torch.stack([u for _, u in stats]).mean()}


@dataclass(frozen=True)
class Case:
    arch: str
    name: str
    quantizer: str  # vqkit registry name
    args: dict[str, Any]
    vqp: Callable[[ModuleType], VqpQuantizer] | None = None

    @property
    def label(self) -> str:
        return f"{self.arch}/{self.name}"


def make_cases() -> dict[str, Case]:
    """Per arch the quantizers that its users would pick, sized by bits per token where sensible."""

    def fsq(arch: str, levels: list[int]) -> Case:
        k = 1
        for v in levels:
            k *= v
        return Case(arch, f"fsq-{k}", "fsq", {"levels": levels},
                    lambda v: VqpQuantizer(v.FSQ(levels=levels), len(levels), k))

    def lfq(arch: str, bits: int) -> Case:
        return Case(arch, f"lfq-{2**bits}", "lfq", {"dim": bits},
                    lambda v: VqpQuantizer(v.LFQ(dim=bits, codebook_size=2**bits, entropy_loss_weight=0.1,
                                                 commitment_loss_weight=0.25, diversity_gamma=1.0), bits, 2**bits))

    def ema(arch: str, dim: int, k: int) -> Case:
        return Case(arch, f"emavq-{k}", "emavq", {"dim": dim, "codebook_size": k, "decay": 0.99, "beta": 0.25},
                    lambda v: VqpQuantizer(v.VectorQuantize(dim=dim, codebook_size=k, **EMA_OPTS), dim, k))

    def sim(arch: str, dim: int, k: int) -> Case:
        return Case(arch, f"simvq-{k}", "simvq", {"dim": dim, "codebook_size": k, "beta": 0.25},
                    lambda v: VqpQuantizer(v.SimVQ(dim=dim, codebook_size=k, codebook_transform=nn.Linear(dim, dim),
                                                   rotation_trick=False, input_to_quantize_commit_loss_weight=0.25,
                                                   commitment_weight=1.0), dim, k))

    rfsq = Case("rfsq_conv", "rfsq-4x1024", "rfsq", {"levels": [4] * 5, "num_stages": 4, "conditioning": "layernorm"},
                lambda v: VqpQuantizer(v.ResidualFSQ(dim=5, levels=[4] * 5, num_quantizers=4), 5, 1024, 4))
    cases = [rfsq, fsq("rfsq_conv", [8, 8, 8, 8]), lfq("rfsq_conv", 12),
             sim("vqgan", 64, 8192), sim("vqgan", 128, 65536), ema("vqgan", 64, 8192),
             fsq("vqgan", [8, 8, 8, 5, 5, 5]), lfq("vqgan", 16),
             sim("speech", 64, 4096), ema("speech", 64, 4096), fsq("speech", [8, 8, 8, 8])]
    return {c.label: c for c in cases}


# -- models, data and the step ---------------------------------------------------------------
def preset_config(case: Case, args: argparse.Namespace) -> tuple[TokenizerConfig, float]:
    """The arch's CPU preset with ``case``'s quantizer; and the preset's gradient clip (0: none)."""
    train = load_config(ARCH_PRESET[case.arch])
    tok = dataclasses.replace(train.tokenizer_config(), quantizer=case.quantizer, quantizer_args=case.args)
    if case.arch == "vqgan":
        tok = dataclasses.replace(tok, ch=args.vqgan_ch)
    return tok, train.optim.grad_clip


def make_batch(model: Tokenizer, args: argparse.Namespace, device: torch.device) -> Tensor:
    """A fixed random batch in [-1, 1]: images (B, 3, S, S), or speech (B, 1, T) with T a multiple of the hop."""
    gen = torch.Generator().manual_seed(args.seed)
    if model.config.arch == "speech":
        hop = model.downsample_factor
        samples = max(1, round(args.seconds * model.config.arch_args["sample_rate"] / hop)) * hop
        return (0.1 * torch.randn(args.speech_batch, 1, samples, generator=gen)).clamp(-1, 1).to(device)
    return (torch.rand(args.batch, 3, args.image_size, args.image_size, generator=gen) * 2 - 1).to(device)


def reconstruction_loss(model: Tokenizer) -> Callable[[Tensor, Tensor], Tensor]:
    """The CPU presets' loss: L1 for images; 0.1·L1 + multi-resolution log-mel for speech."""
    if model.config.arch != "speech":
        return F.l1_loss
    from vqkit.modalities.audio.losses import multi_resolution_mel_loss

    rate = model.config.arch_args["sample_rate"]
    return lambda recon, x: 0.1 * F.l1_loss(recon, x) + multi_resolution_mel_loss(recon, x, rate)


def make_step(model: Tokenizer, x: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor], clip: float,
              device: torch.device) -> Callable[[], None]:
    """One training step of ``model`` on ``x``, as ``vqkit train`` takes it (module docstring)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

    def step() -> None:
        with amp:
            recon, out = model(x)
        loss = loss_fn(recon.float(), x) + out.loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
        opt.step()

    return step


def apply_mode(model: Tokenizer, x: Tensor, mode: str) -> Tensor:
    """Put ``model`` (in place) and its input in ``mode``; returns the input to use."""
    if mode == "channels_last":
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return x.contiguous(memory_format=torch.channels_last)
    if mode == "compile":
        model.encoder = torch.compile(model.encoder)  # type: ignore[assignment]
        model.decoder = torch.compile(model.decoder)  # type: ignore[assignment]
    return x


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in the main thread after ``seconds`` (caps torch.compile's first steps)."""

    def alarm(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"compilation took over {seconds:g} s (--compile-timeout)")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], None], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


# -- one case ------------------------------------------------------------------------------------
def build_steps(case: Case, args: argparse.Namespace, vqp: ModuleType | None, device: torch.device,
                skipped: dict[str, str]) -> tuple[dict[tuple[str, str], Callable[[], None]], float]:
    """Warmed-up steps keyed by (mode, model), and bits per token; a mode that cannot run is named in ``skipped``."""
    config, clip = preset_config(case, args)
    torch.manual_seed(args.seed)
    base = Tokenizer(config).to(device).train()
    x, loss_fn = make_batch(base, args, device), reconstruction_loss(base)
    swaps: dict[str, Callable[[], nn.Module] | None] = {
        "identity": lambda: IdentityQuantizer(base.quantizer.dim), "vqkit": None}
    if vqp is not None and case.vqp is not None:
        swaps["vqp"] = lambda: case.vqp(vqp).to(device)  # type: ignore[misc]
    steps: dict[tuple[str, str], Callable[[], None]] = {}
    for mode in args.modes:
        if mode == "channels_last" and case.arch == "speech":
            skipped[mode] = "1-d convs: no channels-last layout"
            continue
        mode_steps = {}
        try:
            with time_limit(args.compile_timeout) if mode == "compile" else contextlib.nullcontext():
                for name, swap in swaps.items():
                    model = copy.deepcopy(base)  # the same encoder and decoder weights in every model
                    if swap is not None:
                        model.quantizer = swap()  # type: ignore[assignment]
                    mode_steps[(mode, name)] = step = make_step(model, apply_mode(model, x, mode), loss_fn, clip,
                                                                device)
                    for _ in range(args.warmup):
                        step()
        except Exception as err:  # a compiler error or the time cap: report it, run the other modes
            if mode != "compile":
                raise
            root: BaseException = err
            while (inner := root.__cause__ or root.__context__) is not None:  # torch wraps the compiler's error
                root = inner
            skipped[mode] = f"{type(root).__name__}: {(str(root).splitlines() or [''])[0][:160]}"
            torch._dynamo.reset()
            continue
        steps.update(mode_steps)
    return steps, base.bits_per_token


def bench_case(case: Case, args: argparse.Namespace, vqp: ModuleType | None,
               device: torch.device) -> list[dict[str, Any]]:
    """One record per mode: median step times of identity / vqkit / vqp, shares and ratios."""
    skipped: dict[str, str] = {}
    steps, bits = build_steps(case, args, vqp, device, skipped)
    times: dict[tuple[str, str], list[float]] = {key: [] for key in steps}
    for _ in range(args.repeats):
        for key, step in steps.items():  # alternate: identity, vqkit, vqp, (other modes), identity, ...
            times[key].append(time_call(step, device))
    records = []
    for mode in args.modes:
        med = {name: statistics.median(times[(mode, name)]) for name in ("identity", "vqkit", "vqp")
               if (mode, name) in times}
        rec: dict[str, Any] = {"case": case.label, "mode": mode, "bits": bits, "skipped": skipped.get(mode),
                               "times_s": {name: times[(mode, name)] for name in med}, "median_s": med}
        if "vqkit" in med:
            ident = times[(mode, "identity")]
            rec["spread"] = (max(ident) - min(ident)) / med["identity"] if len(ident) > 1 else None
            rec["share_vqkit"] = 1 - med["identity"] / med["vqkit"]
            rec["share_vqp"] = 1 - med["identity"] / med["vqp"] if "vqp" in med else None
            rec["speed_vs_vqp"] = med["vqp"] / med["vqkit"] if "vqp" in med else None
        records.append(rec)
    return records


# -- command line and report ------------------------------------------------------------------------
def parse_args(argv: list[str] | None, names: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--only", default="", help=f"comma list of substrings of the cases: {', '.join(names)}")
    p.add_argument("--modes", default="eager", help=f"comma list of backbone modes: {', '.join(MODES)}")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=16, help="images per step")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--vqgan-ch", type=int, default=32, help="vqgan base width (simvq-cpu: 32; paper: 128)")
    p.add_argument("--speech-batch", type=int, default=8, help="utterances per step (speech-cpu: 8)")
    p.add_argument("--seconds", type=float, default=1.0, help="speech crop length at 16 kHz")
    p.add_argument("--compile-timeout", type=float, default=300.0, help="seconds allowed for compile + warm-up")
    p.add_argument("--quick", action="store_true", help="toy sizes, 1 repeat: a smoke run of seconds")
    p.add_argument("--skip-vqp", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the records here")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.image_size, args.speech_batch, args.seconds = 2, 16, 2, 0.2
        args.repeats, args.warmup = 1, 1
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if bad := [m for m in args.modes if m not in MODES]:
        p.error(f"unknown mode(s) {bad}; choose from {list(MODES)}")
    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    args.cases = [n for n in names if not keys or any(k in n for k in keys)]
    if not args.cases:
        p.error(f"--only {args.only!r} matches no case of {names}")
    check_device(p, args.device)
    return args


def format_table(records: list[dict[str, Any]]) -> str:
    head = ["case", "mode", "bits/token", "vqkit ms", "vqkit steps/s", "identity steps/s", "quantizer share",
            "vqp steps/s", "vqp share", "speed vqkit/vqp", "noise"]
    rows = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in records:
        if "vqkit" not in r["median_s"]:
            rows.append(f"| {r['case']} | {r['mode']} | skipped: {r['skipped']} |" + " |" * (len(head) - 3))
            continue
        med = r["median_s"]
        cells = [r["case"], r["mode"], f"{r['bits']:.4g}", f"{med['vqkit'] * 1e3:.0f}", f"{1 / med['vqkit']:.2f}",
                 f"{1 / med['identity']:.2f}", fmt(r["share_vqkit"] and 100 * r["share_vqkit"], ".0f") + " %",
                 fmt(med.get("vqp") and 1 / med["vqp"], ".2f"),
                 fmt(r["share_vqp"] and 100 * r["share_vqp"], ".0f") + (" %" if r["share_vqp"] is not None else ""),
                 fmt(r["speed_vs_vqp"], ".2f"), "n/a" if r["spread"] is None else f"±{50 * r['spread']:.0f} %"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def target_line(records: list[dict[str, Any]]) -> str:
    """The issue's target: vqgan + SimVQ-65k, its quantizer share, and faster than with vqp's SimVQ."""
    rec = next((r for r in records if r["case"] == "vqgan/simvq-65536" and r["mode"] == "eager"), None)
    if rec is None or "vqkit" not in rec["median_s"]:
        return "Target (vqgan/simvq-65536, eager): not run"
    speed = rec["speed_vs_vqp"]
    verdict = "n/a (no vqp)" if speed is None else "MET" if speed > 1 else "MISSED"
    return (f"Target: vqgan + SimVQ-65k step faster than with vqp's SimVQ: {verdict} (vqkit/vqp speed "
            f"{fmt(speed, '.2f')}); the quantizer is {100 * rec['share_vqkit']:.0f} % of vqkit's step"
            + ("" if rec["share_vqp"] is None else f", {100 * rec['share_vqp']:.0f} % of vqp's"))


def main(argv: list[str] | None = None) -> None:
    cases = make_cases()
    args = parse_args(argv, list(cases))
    if args.threads:
        torch.set_num_threads(args.threads)
    vqp, device = load_vqp(args.skip_vqp), torch.device(args.device)
    records = []
    for name in args.cases:
        start = time.perf_counter()
        records.extend(bench_case(cases[name], args, vqp, device))
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    vqp_version = importlib.metadata.version("vector-quantize-pytorch") if vqp else "not run"
    print(f"# Training steps of whole tokenizers, {where}, torch {torch.__version__}, vqp {vqp_version}\n\n"
          f"images {args.batch}×3×{args.image_size}², speech {args.speech_batch}×{args.seconds:g} s at 16 kHz; "
          f"median of {args.repeats} alternating repeats after {args.warmup} warm-up steps; quantizer share = "
          f"1 - t_identity / t_model; noise = ±half the (max - min) / median of the identity model's "
          f"repeats: shares and ratios within it are not resolved\n\n{format_table(records)}\n\n{target_line(records)}")
    if args.json:
        info = {"torch": torch.__version__, "device": where, "vqp": vqp_version}
        args_out = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"machine": info, "args": args_out, "records": records}, indent=2) + "\n")


if __name__ == "__main__":
    main()
