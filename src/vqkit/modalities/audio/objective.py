"""Speech training losses: waveform L1 + multi-resolution log-mel and STFT losses; multi-period and
multi-resolution discriminators with hinge losses and feature matching."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from ...models.speech import sample_rate_of
from ..base import Adversary, Objective
from .config import AudioObjectiveConfig
from .losses import (
    MultiPeriodDiscriminator,
    MultiResolutionDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    multi_resolution_mel_loss,
    multi_resolution_stft_loss,
)

if TYPE_CHECKING:
    from ...train.config import TrainConfig


def rate_of(cfg: TrainConfig) -> int:
    """The sample rate a run's speech arch works at."""
    return sample_rate_of(cfg.tokenizer_config().arch_args)


class AudioObjective(Objective):
    def __init__(self, cfg: TrainConfig, device: torch.device, main: bool) -> None:
        super().__init__()
        assert isinstance(cfg.objective, AudioObjectiveConfig)  # the audio modality's section
        self.cfg, self.rate = cfg.objective, rate_of(cfg)
        self.notes = {"lpips": "not used for audio"}

    def forward(self, recon: Tensor, target: Tensor) -> tuple[Tensor, dict[str, float]]:
        cfg = self.cfg
        l1 = F.l1_loss(recon, target)
        mel = multi_resolution_mel_loss(recon, target, self.rate)
        loss = cfg.l1_weight * l1 + cfg.mel_weight * mel
        if cfg.stft_weight:
            loss = loss + cfg.stft_weight * multi_resolution_stft_loss(recon, target)
        return loss, {"l1": l1.item(), "mel": mel.item()}


class AudioAdversary(Adversary):
    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.mpd, self.mrd = MultiPeriodDiscriminator(), MultiResolutionDiscriminator()
        assert isinstance(cfg.objective, AudioObjectiveConfig)
        self.weight, self.fm_weight = cfg.objective.gan_weight, cfg.objective.fm_weight

    def generator_loss(self, fake: Tensor, real: Tensor) -> Tensor:
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
        loss = real.new_zeros(())
        for disc in (self.mpd, self.mrd):
            loss = loss + discriminator_loss(disc(real)[0], disc(fake.detach())[0])
        return loss
