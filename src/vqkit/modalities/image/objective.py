"""Image training losses: L1 (+ MSE, + LPIPS when its weights exist) and a PatchGAN with hinge losses."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...metrics import WeightsUnavailableError, load_lpips
from ...models import PatchDiscriminator, hinge_d_loss, hinge_g_loss
from ..base import Adversary, Objective
from .config import ImageObjectiveConfig

if TYPE_CHECKING:
    from ...train.config import TrainConfig


class ImageObjective(Objective):
    def __init__(self, cfg: TrainConfig, device: torch.device, main: bool) -> None:
        super().__init__()
        assert isinstance(cfg.objective, ImageObjectiveConfig)  # the image modality's section
        self.cfg = cfg.objective
        self.lpips: nn.Module | None
        try:
            self.lpips, note = load_lpips(device), "available"
        except WeightsUnavailableError as err:
            self.lpips, note = None, f"unavailable ({err})"
            if main and self.cfg.lpips_weight > 0:
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
        self.main, self.weight = PatchDiscriminator().main, cfg.objective.gan_weight

    def generator_loss(self, fake: Tensor, real: Tensor) -> Tensor:
        return self.weight * hinge_g_loss(self.main(fake))

    def discriminator_loss(self, fake: Tensor, real: Tensor) -> Tensor:
        return hinge_d_loss(self.main(real), self.main(fake.detach()))
