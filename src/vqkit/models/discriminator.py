"""PatchGAN discriminator and hinge losses, as SimVQ trains its image tokenizer.

The pix2pix / taming ``NLayerDiscriminator``: a 4×4 stride-2 conv with LeakyReLU(0.2), then
``n_layers - 1`` more stride-2 convs and one stride-1 conv (widths ndf·min(2^k, 8), BatchNorm,
LeakyReLU), then a 4×4 stride-1 conv to one logit per patch. Weights start at N(0, 0.02) (BatchNorm
scale N(1, 0.02)), as taming's ``weights_init``. SimVQ applies it from step 0 with weight 0.1.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class PatchDiscriminator(nn.Module):
    """(B, in_channels, H, W) -> patch logits (B, 1, H/2^n - 2, W/2^n - 2), n = ``n_layers``.

    128×128 with the default 3 layers gives 14×14 patches; each logit sees a 70×70 receptive field.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        if n_layers < 1 or ndf < 1:
            raise ValueError(f"PatchDiscriminator: need n_layers >= 1 and ndf >= 1, got {n_layers}, {ndf}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        width = ndf
        for k in range(1, n_layers + 1):
            nxt = ndf * min(2**k, 8)
            stride = 2 if k < n_layers else 1
            layers += [
                nn.Conv2d(width, nxt, 4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(nxt),
                nn.LeakyReLU(0.2),
            ]
            width = nxt
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, images: Tensor) -> Tensor:
        out: Tensor = self.main(images)
        return out


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator hinge loss ½·(E[relu(1 - D(x))] + E[relu(1 + D(x̂))]); 0 once real logits are
    ≥ 1 and fake ones ≤ -1 (taming's scaling, so its value is comparable with SimVQ's logs)."""
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_g_loss(fake_logits: Tensor) -> Tensor:
    """Generator hinge loss -E[D(x̂)]: the decoder pushes its reconstructions' logits up."""
    return -fake_logits.mean()
