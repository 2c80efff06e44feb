"""What the training loop needs to know about a kind of signal, as values: its datasets, its losses,
its adversary and its validation. The loop holds one :class:`Modality` and never asks which it is.

* ``image``: image folders or the bundled photos; L1 (+ MSE, + LPIPS when its weights exist);
  PatchGAN with hinge losses; PSNR / SSIM / usage validation (:mod:`vqkit.evaluate`).
* ``audio``: wav/flac folders at the model's rate; waveform L1 + multi-resolution log-mel and STFT
  losses; multi-period and multi-resolution discriminators with hinge losses and feature matching;
  mel distance / SI-SDR / STOI / usage validation (:mod:`vqkit.evaluate_audio`).

A model's arch decides its modality (:data:`vqkit.models.registry.ARCH_MODALITY`): the ``speech`` arch takes audio.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..evaluate import evaluate
from ..metrics import WeightsUnavailableError, load_lpips
from ..modalities.image.datasets import build_dataset
from ..models import PatchDiscriminator, Tokenizer, hinge_d_loss, hinge_g_loss
from ..models.registry import ARCH_MODALITY
from ..models.speech import sample_rate_of as speech_rate
from .config import TrainConfig

"""Archs whose signal is not an image."""


class Objective(nn.Module):
    """Reconstruction losses of one modality: ``(recon, target) -> (weighted sum, scalars to log)``."""

    notes: dict[str, str]
    """Facts for the run summary (e.g. why LPIPS is off)."""

    def forward(self, recon: Tensor, target: Tensor) -> tuple[Tensor, dict[str, float]]:  # pragma: no cover
        raise NotImplementedError


class Adversary(nn.Module):
    """A discriminator and its losses: ``forward(fake, real, generator)`` is the generator's
    adversarial loss (``generator=True``) or the discriminator's. One forward entry point so that a
    ``DistributedDataParallel`` wrapper sees every use and keeps the ranks' discriminators in step;
    the loop owns the optimizer and decides when the adversary starts."""

    def forward(self, fake: Tensor, real: Tensor, generator: bool) -> Tensor:
        return self.generator_loss(fake, real) if generator else self.discriminator_loss(fake.detach(), real)

    def generator_loss(self, fake: Tensor, real: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def discriminator_loss(self, fake: Tensor, real: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError


# -- images ------------------------------------------------------------------------------------
class ImageObjective(Objective):
    def __init__(self, cfg: TrainConfig, device: torch.device, main: bool) -> None:
        super().__init__()
        self.cfg = cfg
        self.lpips: nn.Module | None
        try:
            self.lpips, note = load_lpips(device), "available"
        except WeightsUnavailableError as err:
            self.lpips, note = None, f"unavailable ({err})"
            if main and cfg.lpips_weight > 0:
                print(f"vqkit train: LPIPS {note}; the LPIPS loss term is skipped", flush=True)
        self.notes = {"lpips": note}

    def forward(self, recon: Tensor, target: Tensor) -> tuple[Tensor, dict[str, float]]:
        cfg = self.cfg
        l1 = F.l1_loss(recon, target)
        loss = cfg.l1_weight * l1
        if cfg.mse_weight:
            loss = loss + cfg.mse_weight * F.mse_loss(recon, target)
        if self.lpips is not None and cfg.lpips_weight:
            loss = loss + cfg.lpips_weight * self.lpips(recon, target).mean()
        return loss, {"l1": l1.item()}


class ImageAdversary(Adversary):
    """PatchGAN with hinge losses; its layers sit at ``main.*`` as in a bare PatchDiscriminator, so
    checkpoints of either load into the other."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.main, self.weight = PatchDiscriminator().main, cfg.gan_weight

    def generator_loss(self, fake: Tensor, real: Tensor) -> Tensor:
        return self.weight * hinge_g_loss(self.main(fake))

    def discriminator_loss(self, fake: Tensor, real: Tensor) -> Tensor:
        return hinge_d_loss(self.main(real), self.main(fake.detach()))


def _flat(cfg: TrainConfig) -> str:
    """A flat --data folder without --val-data holds out a share for validation; with it, all of it trains."""
    return "whole" if cfg.val_data else "holdout"


def _image_datasets(cfg: TrainConfig) -> tuple[Dataset[Tensor], Dataset[Tensor]]:
    flat = _flat(cfg)
    train = build_dataset(cfg.data, "train", cfg.image_size, cfg.seed, resize=cfg.crop_resize,
                          max_images=cfg.max_train_images or None, bad_files=cfg.bad_files, flat=flat)
    val = build_dataset(cfg.val_data or cfg.data, "val", cfg.image_size, cfg.seed, resize=cfg.crop_resize,
                        max_images=cfg.max_val_images or None, bad_files=cfg.bad_files, flat=flat)
    return train, val


def _image_validate(model: Tokenizer, dataset: Dataset[Tensor], cfg: TrainConfig, device: torch.device,
                    objective: Objective) -> dict[str, float]:
    lpips = getattr(objective, "lpips", None)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False)
    metrics = evaluate(model, loader, device, lpips if lpips is not None else objective.notes.get("lpips"),
                       amp_dtype=cfg.amp_dtype(device))
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}


# -- audio -------------------------------------------------------------------------------------
def _rate(cfg: TrainConfig) -> int:
    return speech_rate(json.loads(cfg.arch_args or "{}"))


class AudioObjective(Objective):
    def __init__(self, cfg: TrainConfig, device: torch.device, main: bool) -> None:
        super().__init__()
        self.cfg, self.rate = cfg, _rate(cfg)
        self.notes = {"lpips": "not used for audio"}

    def forward(self, recon: Tensor, target: Tensor) -> tuple[Tensor, dict[str, float]]:
        from ..modalities.audio.losses import multi_resolution_mel_loss, multi_resolution_stft_loss

        cfg = self.cfg
        l1 = F.l1_loss(recon, target)
        mel = multi_resolution_mel_loss(recon, target, self.rate)
        loss = cfg.l1_weight * l1 + cfg.mel_weight * mel
        if cfg.stft_weight:
            loss = loss + cfg.stft_weight * multi_resolution_stft_loss(recon, target)
        return loss, {"l1": l1.item(), "mel": mel.item()}


class AudioAdversary(Adversary):
    def __init__(self, cfg: TrainConfig) -> None:
        from ..modalities.audio.losses import MultiPeriodDiscriminator, MultiResolutionDiscriminator

        super().__init__()
        self.mpd, self.mrd = MultiPeriodDiscriminator(), MultiResolutionDiscriminator()
        self.weight, self.fm_weight = cfg.gan_weight, cfg.fm_weight

    def generator_loss(self, fake: Tensor, real: Tensor) -> Tensor:
        from ..modalities.audio.losses import feature_matching_loss, generator_adversarial_loss

        loss = fake.new_zeros(())
        for disc in (self.mpd, self.mrd):
            fake_logits, fake_feats = disc(fake)
            loss = loss + self.weight * generator_adversarial_loss(fake_logits)
            if self.fm_weight:
                with torch.no_grad():
                    _, real_feats = disc(real)
                loss = loss + self.fm_weight * feature_matching_loss(real_feats, fake_feats)
        return loss

    def discriminator_loss(self, fake: Tensor, real: Tensor) -> Tensor:
        from ..modalities.audio.losses import discriminator_loss

        loss = real.new_zeros(())
        for disc in (self.mpd, self.mrd):
            loss = loss + discriminator_loss(disc(real)[0], disc(fake.detach())[0])
        return loss


def _audio_datasets(cfg: TrainConfig) -> tuple[Dataset[Tensor], Dataset[Tensor]]:
    from ..modalities.audio.io import AudioFolder, split_folder

    rate = _rate(cfg)
    train = AudioFolder(split_folder(cfg.data, "train"), rate, cfg.segment, train=True, seed=cfg.seed,
                        max_items=cfg.max_train_images or None, bad_files=cfg.bad_files)
    val_root = Path(cfg.val_data) if cfg.val_data else split_folder(cfg.data, "val")
    if not cfg.val_data and val_root == Path(cfg.data):
        raise ValueError(f"{cfg.data} has no val/ folder: name the validation speech with --val-data (it must not be "
                         "the training folder)")
    val = AudioFolder(val_root, rate, cfg.segment, train=False, seed=cfg.seed, max_items=cfg.max_val_images or None,
                      bad_files=cfg.bad_files)
    return train, val


def _audio_validate(model: Tokenizer, dataset: Dataset[Tensor], cfg: TrainConfig, device: torch.device,
                    objective: Objective) -> dict[str, float]:
    from ..evaluate_audio import evaluate_audio

    metrics = evaluate_audio(model, dataset, device, full=False, amp_dtype=cfg.amp_dtype(device)).metrics
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}


def _image_prior(model_dir: Path, cfg: TrainConfig, device: torch.device) -> Path:
    from ..compress import fit_and_save_prior

    return fit_and_save_prior(model_dir, cfg.data, cfg.prior_images, device, bad_files=cfg.bad_files,
                              flat=_flat(cfg))


def _audio_prior(model_dir: Path, cfg: TrainConfig, device: torch.device) -> Path:
    from ..compress_audio import fit_and_save_audio_prior

    return fit_and_save_audio_prior(model_dir, cfg.data, cfg.prior_images, device, bad_files=cfg.bad_files)


def _image_evaluate_run(run_dir: Path, cfg: TrainConfig, out: Path, max_items: int) -> dict[str, Any]:
    from ..evaluate import evaluate_run

    return evaluate_run(run_dir, _image_eval_data(cfg, "val"), "val", out, batch_size=cfg.batch_size,
                        max_images=max_items)


def _image_eval_data(cfg: TrainConfig, split: str) -> str:
    return cfg.val_data or cfg.data if split == "val" else cfg.data


def _audio_evaluate_run(run_dir: Path, cfg: TrainConfig, out: Path, max_items: int) -> dict[str, Any]:
    from ..evaluate_audio import evaluate_audio_run

    return evaluate_audio_run(run_dir, _audio_eval_data(cfg, "val"), out, max_items=max_items)


def _audio_eval_data(cfg: TrainConfig, split: str) -> str:
    from ..modalities.audio.io import split_folder

    return cfg.val_data if cfg.val_data and split == "val" else str(split_folder(cfg.data, split))


@dataclass(frozen=True)
class Modality:
    """The values that make the loop train one kind of signal."""

    name: str
    datasets: Callable[[TrainConfig], tuple[Dataset[Tensor], Dataset[Tensor]]]
    objective: Callable[[TrainConfig, torch.device, bool], Objective]
    adversary: Callable[[TrainConfig], Adversary]
    validate: Callable[[Tokenizer, Dataset[Tensor], TrainConfig, torch.device, Objective], dict[str, float]]
    fit_prior: Callable[[Path, TrainConfig, torch.device], Path]
    """Fit the entropy-coding tables of the final model on ``prior_images`` training items."""
    evaluate_run: Callable[[Path, TrainConfig, Path, int], dict[str, Any]]
    """The full evaluation of a finished run on its validation data (``vqkit compare``)."""
    eval_data: Callable[[TrainConfig, str], str]
    """The data a run is evaluated on when ``vqkit eval`` is given no ``--data``: its validation data
    for split 'val', its training data for split 'train'."""
    items: str
    """What one dataset item is called in messages."""


MODALITIES = {
    "image": Modality("image", _image_datasets, ImageObjective, ImageAdversary, _image_validate, _image_prior,
                      _image_evaluate_run, _image_eval_data, "images"),
    "audio": Modality("audio", _audio_datasets, AudioObjective, AudioAdversary, _audio_validate, _audio_prior,
                      _audio_evaluate_run, _audio_eval_data, "utterances"),
}


def modality_of(arch: str) -> Modality:
    return MODALITIES[ARCH_MODALITY.get(arch, "image")]


__all__ = ["ARCH_MODALITY", "MODALITIES", "Adversary", "Modality", "Objective", "modality_of"]
