"""The training loop: one process, or many under ``torchrun`` (DDP, NCCL on GPU, gloo on CPU).

Per step: a batch of signals -> Tokenizer -> the modality's reconstruction losses (+ its adversary
after ``gan_start``) + the quantizer's own loss -> Adam, warm-up + linear decay, gradient clipping,
optional weight EMA. What differs between images and speech (datasets, losses, discriminators,
validation scorer) comes from the run's :class:`~vqkit.modalities.Modality`; the loop has no branch on
the kind of signal.
Rank 0 alone logs, evaluates and writes checkpoints; codebook statistics are all-reduced inside the
quantizers (``broadcast_buffers=False``). A run resumes from its last
checkpoint at the same step, data order and crop randomness (both derive from seed and epoch).
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..data.files import set_epoch, skipped_count, split_note
from ..evaluate import evaluate
from ..modalities import fit_and_save_prior, modality_of
from ..models import Tokenizer
from ..quantizers import NonFiniteError, Quantizer, ResidualQuantizer
from ..storage import atomic_write, remove_debris
from ..validation import ConfigError, flushed_subnormals, resolve_device
from .checkpoint import CHECKPOINT, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .log import RunLog, collapse_warning
from .rate import DigitRate


@dataclass(frozen=True)
class Context:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(cfg: TrainConfig) -> Context:
    """Check the device against this machine, join the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(cfg.run.device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else (device.index or 0)
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    return Context(rank, world, device)


class ResumableSampler(Sampler[int]):
    """A distributed sampler whose next pass can skip the items a resumed run already consumed."""

    def __init__(self, base: DistributedSampler[Any]) -> None:
        self.base, self.skip = base, 0

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        skip, self.skip = self.skip, 0
        for i, index in enumerate(self.base):
            if i >= skip:
                yield index

    def __len__(self) -> int:
        return len(self.base)


def lr_factor(cfg: TrainConfig, step: int) -> float:
    optim = cfg.optim
    warm = int(optim.warmup * optim.steps)
    if step < warm:
        return (step + 1) / warm
    if optim.schedule == "constant":
        return 1.0
    return max(0.0, (optim.steps - step) / max(1, optim.steps - warm))


MAX_CONSECUTIVE_NONFINITE = 50
"""Under ``nonfinite='skip'``, this many non-finite steps in a row end the run: it has diverged."""


class NonFiniteTrainingError(ValueError):
    """Training produced a NaN/inf loss or gradient and the policy says stop."""


class Trainer:
    """Holds the state of one run; :meth:`run` trains to ``cfg.optim.steps`` and returns the summary."""

    def __init__(self, cfg: TrainConfig, resume: bool = False) -> None:
        self.cfg, self.ctx = cfg, setup(cfg)
        self.run_dir = Path(cfg.run.out)
        self._prepare_run_dir(resume)
        torch.manual_seed(cfg.run.seed)
        self.modality = modality_of(cfg.model.arch)
        self.model = Tokenizer(cfg.tokenizer_config()).to(self.ctx.device)
        if cfg.run.init and not (resume and (self.run_dir / CHECKPOINT).exists()):
            self._initialise(cfg.run.init)
        optim = cfg.optim
        self.ema = copy.deepcopy(self.model).requires_grad_(False) if optim.ema_decay > 0 else None
        self.opt = torch.optim.Adam(self.model.parameters(), lr=optim.lr, betas=(optim.betas[0], optim.betas[1]),
                                    weight_decay=optim.weight_decay)
        # the image objective's rate term (rate-distortion training): a prior over the digits, trained jointly
        self.rate_weight = float(getattr(cfg.objective, "rate_weight", 0.0))
        self.rate: DigitRate | None = None
        if self.rate_weight > 0:
            if self.ctx.world > 1:
                raise ConfigError("rate_weight > 0 (rate-distortion training) runs in one process for now, "
                                  "not under torchrun")
            self.rate = DigitRate.for_quantizer(self.model.quantizer).to(self.ctx.device)
            self.opt.add_param_group({"params": list(self.rate.parameters()), "weight_decay": 0.0})
        self.stage_cuts = bool(getattr(cfg.objective, "stage_cuts", False))
        if self.stage_cuts and (self.ctx.world > 1 or not isinstance(self.model.quantizer, ResidualQuantizer)):
            raise ConfigError("stage_cuts (the distortion of every stage cut) needs a residual quantizer (rfsq, rvq, "
                              "rsimvq) and one process")
        if isinstance(self.model.quantizer, ResidualQuantizer) and (self.rate is not None or self.stage_cuts):
            self.model.quantizer.keep_stage_codes = True  # every stage's digits and contribution, each step
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(cfg, s))
        self.disc: nn.Module | None = None
        self.disc_opt: torch.optim.Optimizer | None = None
        if cfg.objective.gan_weight > 0:
            self.disc = self.modality.adversary(cfg).to(self.ctx.device)
            self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=cfg.objective.disc_lr, betas=(0.5, 0.9))
        self.objective = self.modality.objective(cfg, self.ctx.device, self.ctx.main)
        self.step, self.elapsed = 0, 0.0
        self.nonfinite_steps = self.consecutive_nonfinite = 0
        if resume and (self.run_dir / CHECKPOINT).exists():
            self._restore(load_checkpoint(self.run_dir, cfg.to_dict()))
        self.train_set, self.val_set = self.modality.datasets(cfg)
        if self.ctx.main:
            print(f"vqkit train: {len(self.train_set)} training / {len(self.val_set)} validation "  # type: ignore[arg-type]
                  f"{self.modality.items} from {cfg.data.train}, {self.model.bits_per_token:g} bits per token",
                  flush=True)
            note = split_note(self.train_set) or split_note(self.val_set)
            if note:
                print(f"vqkit train: {note}", flush=True)
        self.loader, self.sampler = self._train_loader(self.train_set)
        self.ddp: nn.Module = self.model
        if self.ctx.world > 1:
            # broadcast_buffers=False keeps rank-local buffers; the quantizers all-reduce their own
            # statistics. torch 2.13 calls the flag deprecated in favour of forward_sync_buffers.
            warnings.filterwarnings("ignore", message=".*broadcast_buffers. is deprecated")
            ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            if self.ctx.device.type == "cuda":  # batch statistics over every rank (the speech encoder's
                # input norm); torch's SyncBatchNorm is CUDA-only, so gloo ranks keep per-rank statistics
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)  # type: ignore[no-untyped-call]
            self.ddp = DistributedDataParallel(self.model, device_ids=ids, broadcast_buffers=False)
            # A quantizer's NaN check raises on one rank only and would leave the others waiting in a
            # collective; under DDP a non-finite input reaches the loss instead (statistics refuse it
            # alike on every rank), where _finite decides for all ranks together.
            quantizer = _unwrap(self.model).quantizer
            assert isinstance(quantizer, Quantizer)
            quantizer.check_finite = False
            if self.disc is not None:
                self.disc = DistributedDataParallel(self.disc, device_ids=ids, broadcast_buffers=False)

    # -- set-up ---------------------------------------------------------------------------
    def _prepare_run_dir(self, resume: bool) -> None:
        if self.ctx.main:
            if (self.run_dir / CHECKPOINT).exists() and not resume:
                raise ValueError(f"{self.run_dir} already holds a run: pass --resume to continue it or choose "
                                 "another --out")
            self.run_dir.mkdir(parents=True, exist_ok=True)
            remove_debris(self.run_dir)  # left by a write that a kill interrupted
            atomic_write(self.run_dir / "config.json", (json.dumps(self.cfg.to_dict(), indent=2) + "\n").encode())
        self._barrier()

    def _train_loader(self, dataset: Dataset[Tensor]) -> tuple[DataLoader[Tensor], ResumableSampler]:
        base: DistributedSampler[Any] = DistributedSampler(
            dataset, num_replicas=self.ctx.world, rank=self.ctx.rank, shuffle=True, seed=self.cfg.run.seed,
            drop_last=True)
        sampler = ResumableSampler(base)
        batch, workers = self.cfg.optim.batch_size, self.cfg.data.workers
        loader = DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=True,
                            num_workers=workers, persistent_workers=workers > 0,
                            pin_memory=self.ctx.device.type == "cuda")
        if len(loader) == 0:
            raise ValueError(f"{base.total_size} training {self.modality.items} are fewer than one batch of {batch} "
                             f"per rank × {self.ctx.world} ranks")
        return loader, sampler

    def _initialise(self, source: str) -> None:
        """The weights of the saved model ``source`` (fine-tuning); ConfigError naming what differs."""
        start = Tokenizer.from_pretrained(source)
        mine, theirs = self.model.config.to_dict(), start.config.to_dict()
        differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        if differ:
            shown = "; ".join(f"{k}: this run {mine.get(k)!r}, {source} {theirs.get(k)!r}" for k in differ)
            raise ConfigError(f"--init {source}: its model is not this run's ({shown})")
        self.model.load_state_dict(start.state_dict())

    # -- checkpoints -----------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "config": self.cfg.to_dict(), "step": self.step, "elapsed": self.elapsed, "rng": rng_state(),
            "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(), "nonfinite_steps": self.nonfinite_steps,
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.rate is not None:
            state["rate"] = self.rate.state_dict()
        if self.disc is not None and self.disc_opt is not None:
            state["disc"] = _unwrap(self.disc).state_dict()
            state["disc_optimizer"] = self.disc_opt.state_dict()
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        fresh_rate = self.rate is not None and "rate" not in state  # a run trained without a rate term, fine-tuned
        rate_group = self.opt.param_groups.pop() if fresh_rate else None
        self.opt.load_state_dict(state["optimizer"])
        if rate_group is not None:
            self.opt.add_param_group(rate_group)
            warnings.warn("resuming a run trained without a rate term: the rate model starts untrained", stacklevel=2)
        self.sched.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        if self.rate is not None and not fresh_rate:
            self.rate.load_state_dict(state["rate"])
        if self.disc is not None and self.disc_opt is not None:
            self.disc.load_state_dict(state["disc"])
            self.disc_opt.load_state_dict(state["disc_optimizer"])
        self.step, self.elapsed = int(state["step"]), float(state["elapsed"])
        self.nonfinite_steps = int(state.get("nonfinite_steps", 0))
        set_rng_state(state["rng"])
        # the learning rate is this run's --lr (the same value on a plain resume, so the same floats):
        # the optimizer and scheduler states restored above carry the lr the checkpoint was written with
        lr = self.cfg.optim.lr
        self.sched.base_lrs = [lr] * len(self.opt.param_groups)
        for group in self.opt.param_groups:
            group["initial_lr"] = lr
            group["lr"] = lr * lr_factor(self.cfg, self.sched.last_epoch)

    def _save(self) -> None:
        if self.ctx.main:
            save_checkpoint(self.run_dir, self._state())
        self._barrier()

    # -- one step ------------------------------------------------------------------------------
    def _autocast(self) -> AbstractContextManager[Any]:
        dtype = self.cfg.amp_dtype(self.ctx.device)
        return torch.autocast(self.ctx.device.type, dtype=dtype) if dtype is not None else nullcontext()

    def _cut_distortion(self, full: Tensor, images: Tensor) -> Tensor:
        """The distortion averaged over the stage cuts 1..S (``full``: cut S's, already computed)."""
        quantizer = self.model.quantizer
        assert isinstance(quantizer, ResidualQuantizer)
        parts, total, partial = quantizer.stage_parts, full, None
        for part in parts[:-1]:
            partial = part if partial is None else partial + part
            total = total + self.objective(self.model.reconstruct(partial).float(), images)[0]
        return total / len(parts)

    def _train_step(self, images: Tensor) -> dict[str, float]:
        cfg = self.cfg
        gan = self.disc is not None and self.step >= cfg.objective.gan_start
        try:
            with self._autocast():
                recon, out = self.ddp(images)
        except NonFiniteError:  # the encoder's output, refused before any statistic was updated (one
            # process only: under DDP the check is off, see __init__, and the loss carries the NaN)
            record = dict.fromkeys(("loss", "quantizer_loss", "usage", "perplexity"), math.nan)
            self._skip_step(record)
            return record
        with self._autocast():
            recon = recon.float()
            loss, terms = self.objective(recon, images)
            if self.stage_cuts:
                loss = self._cut_distortion(loss, images)
                terms = {**terms, "cut_mean": loss.item()}
            loss = loss + out.loss
            if self.rate is not None:
                with torch.autocast(self.ctx.device.type, enabled=False):  # code lengths in float32
                    digits = DigitRate.digits_of(self.model.quantizer, out.quantized)
                    bpp = self.rate(digits) / images[:, 0].numel()
                loss = loss + self.rate_weight * bpp
                terms = {**terms, "bpp_rate": bpp.item()}
            if gan and self.disc is not None:
                loss = loss + self.disc(recon, images, True)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if isinstance(self.model.quantizer, ResidualQuantizer):  # kept stage tensors hold the step's graph
            self.model.quantizer.stage_codes, self.model.quantizer.stage_parts = [], []
        clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
        norm = nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if self.rate is not None:  # the rate model's own gradients: clipped apart, and checked with the model's
            norm = norm + nn.utils.clip_grad_norm_(self.rate.parameters(), clip)
        record = {"loss": loss.item(), **terms, "quantizer_loss": out.loss.item(),
                  "usage": float(out.metrics["usage"]), "perplexity": float(out.metrics["perplexity"])}
        if not self._finite(loss.detach() + norm):
            self._skip_step(record)
            return record
        self.consecutive_nonfinite = 0
        self.opt.step()
        self.sched.step()
        if gan and self.disc is not None and self.disc_opt is not None:
            with self._autocast():
                d_loss: Tensor = self.disc(recon.detach(), images, False)
            self.disc_opt.zero_grad(set_to_none=True)
            d_loss.backward()  # type: ignore[no-untyped-call]  # torch's stub for Tensor.backward is untyped
            if self._finite(d_loss.detach()):  # a NaN critic would poison the next generator step
                self.disc_opt.step()
            record["d_loss"] = d_loss.item()
        self._update_ema()
        return record

    def _finite(self, value: Tensor) -> bool:
        """Whether ``value`` is finite on every rank (one all-reduce under DDP), so all ranks decide alike."""
        bad = (~torch.isfinite(value)).float().reshape(1)
        if self.ctx.world > 1:
            dist.all_reduce(bad)
        return not bool(bad.item())

    def _skip_step(self, record: dict[str, float]) -> None:
        """A step with a NaN/inf loss or gradient: no update (policy 'skip', counted) or the end of the run."""
        self.opt.zero_grad(set_to_none=True)
        self.nonfinite_steps += 1
        self.consecutive_nonfinite += 1
        record["nonfinite_steps"] = float(self.nonfinite_steps)
        why = f"step {self.step + 1}: the loss or a gradient is not finite (loss {record['loss']:.4g})"
        if self.cfg.optim.nonfinite == "stop" or self.consecutive_nonfinite >= MAX_CONSECUTIVE_NONFINITE:
            rule = ("--nonfinite stop" if self.cfg.optim.nonfinite == "stop"
                    else f"{MAX_CONSECUTIVE_NONFINITE} such steps in a row")
            raise NonFiniteTrainingError(f"{why}; stopping ({rule}). The last checkpoint is intact: lower --lr, "
                                    "clip gradients (--grad-clip) or check the data, then --resume")
        self.sched.step()  # a skipped step still counts: the schedule and the data order stay aligned
        if self.ctx.main:
            warnings.warn(f"{why}; skipped ({self.nonfinite_steps} so far)", stacklevel=2)

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        for e, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
            e.lerp_(p, 1 - self.cfg.optim.ema_decay)
        for eb, b in zip(self.ema.buffers(), self.model.buffers(), strict=True):
            eb.copy_(b)  # codebook statistics and running averages are not averaged

    # -- evaluation -------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """The modality's validation scalars on the validation set (EMA weights if any): images —
        psnr, l1, mse, ssim, batch_psnr, usage, perplexity, bits (lpips when its weights exist);
        speech — mel distance, SI-SDR, STOI, usage, bits. Flat, so every log record stays flat;
        rFID, PESQ and DNSMOS are left to ``vqkit eval``."""
        model = self.ema if self.ema is not None else self.model
        assert isinstance(model, Tokenizer)
        scorer = self.modality.scorer(model, self.ctx.device, full=False, objective=self.objective)
        batches = self.modality.eval_loader(self.val_set, self.cfg.optim.batch_size)
        amp = self.cfg.amp_dtype(self.ctx.device)
        metrics = evaluate(model, batches, self.ctx.device, scorer, amp_dtype=amp).metrics
        return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}

    # -- the loop -----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        with flushed_subnormals(self.ctx.device):
            return self._run()

    def _run(self) -> dict[str, Any]:
        cfg, steps_per_epoch = self.cfg, len(self.loader)
        steps, every = cfg.optim.steps, cfg.run
        epoch, offset = divmod(self.step, steps_per_epoch)
        last_eval: dict[str, float] = {}
        resumed_at_end = self.step >= steps  # every rank decides alike: the step is the checkpoint's
        self.model.train()
        with RunLog(self.run_dir, steps, self.ctx.main, resume_step=self.step) as log:
            while self.step < steps:
                set_epoch(self.loader, epoch)  # sampler order and dataset crops
                self.sampler.skip = offset * cfg.optim.batch_size
                for images in self.loader:
                    start = time.perf_counter()
                    record = self._train_step(images.to(self.ctx.device, non_blocking=True))
                    self.elapsed += time.perf_counter() - start
                    self.step += 1
                    if self.step % every.log_every == 0 or self.step == steps:
                        log.write({"step": self.step, "split": "train", "epoch": epoch,
                                   "lr": self.sched.get_last_lr()[0], "elapsed_s": self.elapsed,
                                   "skipped_files": skipped_count(self.train_set), **record})
                    log.progress(self.step, f"loss {record['loss']:.4f} usage {record['usage']:.3f}")
                    if self.step % every.eval_every == 0 or self.step == steps:
                        last_eval = self._evaluate_main()
                        log.write({"step": self.step, "split": "val", **last_eval})
                    if self.step % every.ckpt_every == 0 or self.step == steps:
                        self._save()
                    if self.step >= steps:
                        break
                epoch, offset = epoch + 1, 0
        if resumed_at_end:  # from the last step's checkpoint (a kill during the final export): the
            last_eval = self._evaluate_main()  # same weights give the same validation as before
        return self._finish(last_eval)

    def _evaluate_main(self) -> dict[str, float]:
        result = self.evaluate() if self.ctx.main else {}
        self._barrier()
        return result

    def _finish(self, last_eval: dict[str, float]) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "steps": self.step, "train_seconds": round(self.elapsed, 2), "world_size": self.ctx.world,
            "nonfinite_steps": self.nonfinite_steps, "skipped_files": skipped_count(self.train_set),
            "bits_per_token": self.model.bits_per_token, **self.objective.notes, "modality": self.modality.name,
            "val": last_eval or None,
        }
        warning = collapse_warning(last_eval)
        if warning:
            summary["warnings"] = [warning]
            if self.ctx.main:
                print(f"vqkit train: warning: {warning}", flush=True)
        if self.ctx.main:
            final = self.ema if self.ema is not None else self.model
            final.save_pretrained(self.run_dir / "final")
            if self.cfg.run.prior_items:
                fit_and_save_prior(self.run_dir / "final", self.cfg.data.train, self.cfg.run.prior_items,
                                   self.ctx.device, cfg=self.cfg,
                                   learned=self.rate is not None or self.cfg.run.learned_prior)
            atomic_write(self.run_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
        self._barrier()
        return summary

    def _barrier(self) -> None:
        if self.ctx.world > 1 and dist.is_initialized():
            dist.barrier()


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


def train(cfg: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train a tokenizer as ``cfg`` says; returns the run summary (also written to summary.json)."""
    trainer = Trainer(cfg, resume=resume)
    try:
        return trainer.run()
    finally:
        if trainer.ctx.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


__all__ = ["Trainer", "lr_factor", "train"]
