"""Quick demo: fit every quantizer to real image patches and compare them at ~12 bits per token.

Each method gets the same tiny patch autoencoder (4×4×3 pixels -> MLP -> quantizer -> MLP),
the same photos, steps, batch and seed; only the quantizer differs. Training photos and test
photos are disjoint. Reported on the test photos: MSE and PSNR of the reconstructed patches,
codebook usage over the whole test set (mean over stages), perplexity, bits per token and
bits per pixel.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import annotated_types as at
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..modalities.image.photos import TEST_PHOTOS, TRAIN_PHOTOS, photo_patches
from ..quantizers import (
    EMAVQ,
    FSQ,
    LFQ,
    VQ,
    FactorizedVQ,
    Quantizer,
    ResidualFSQ,
    ResidualSimVQ,
    ResidualVQ,
    SimVQ,
)
from ..validation import NonEmptyStr, PositiveFloat, PositiveInt, check_fields


@dataclass(frozen=True)
class DemoConfig:
    """Settings of ``vqkit demo``."""

    steps: PositiveInt = 400
    """Training steps per quantizer."""
    batch: PositiveInt = 1024
    """Patches per step."""
    lr: PositiveFloat = 2e-3
    """Adam learning rate."""
    patch: PositiveInt = 4
    """Side of the square image patches that are quantized."""
    hidden: PositiveInt = 128
    """Width of the patch encoder and decoder."""
    seed: Annotated[int, at.Ge(0), at.Lt(2**63)] = 0
    """Seed of the patches and initialisations."""
    methods: NonEmptyStr = "all"
    """Comma-separated method keys (fsq, lfq, vq, emavq, fc, simvq, rfsq-none, rfsq-scale,
    rfsq-layernorm, rvq, rsimvq), or 'all'."""

    def __post_init__(self) -> None:
        check_fields(self)


METHODS: dict[str, tuple[str, Callable[[], Quantizer]]] = {
    "fsq": ("FSQ [8,8,8,8]", lambda: FSQ([8, 8, 8, 8])),
    "lfq": ("LFQ 12 bits", lambda: LFQ(12)),
    "vq": ("VQ 4096", lambda: VQ(16, 4096)),
    "emavq": ("EMAVQ 4096", lambda: EMAVQ(16, 4096)),
    "fc": ("FactorizedVQ 4096 (8-d)", lambda: FactorizedVQ(16, 4096, code_dim=8)),
    "simvq": ("SimVQ 4096", lambda: SimVQ(16, 4096)),
    "rfsq-none": ("RFSQ 2x[8,8] none", lambda: ResidualFSQ([8, 8], 2, "none")),
    "rfsq-scale": ("RFSQ 2x[8,8] scale", lambda: ResidualFSQ([8, 8], 2, "scale")),
    "rfsq-layernorm": ("RFSQ 2x[8,8] layernorm", lambda: ResidualFSQ([8, 8], 2, "layernorm")),
    "rvq": ("ResidualVQ 2x64", lambda: ResidualVQ(16, 64, 2)),
    "rsimvq": ("ResidualSimVQ 2x64", lambda: ResidualSimVQ(16, 64, 2)),
}
"""Method key -> (table label, builder); every method at 12 bits per token."""


class PatchAutoencoder(nn.Module):
    """patch (N, P) -> MLP -> quantizer -> MLP -> patch; pixels in [-1, 1]."""

    def __init__(self, quantizer: Quantizer, pixels: int, hidden: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(pixels, hidden), nn.GELU(), nn.Linear(hidden, quantizer.dim))
        self.quantizer = quantizer
        self.decoder = nn.Sequential(nn.Linear(quantizer.dim, hidden), nn.GELU(), nn.Linear(hidden, pixels))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.quantizer(self.encoder(x))
        return self.decoder(out.quantized), out.loss, out.indices


@dataclass(frozen=True)
class DemoResult:
    method: str
    bits_per_token: float
    bits_per_pixel: float
    mse: float
    psnr: float
    usage: float
    perplexity: float
    seconds: float


def fit(name: str, build: Callable[[], Quantizer], train: Tensor, test: Tensor, cfg: DemoConfig) -> DemoResult:
    torch.manual_seed(cfg.seed)
    quantizer = build()
    model = PatchAutoencoder(quantizer, train.shape[1], cfg.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    start = time.perf_counter()
    model.train()
    for _ in range(cfg.steps):
        batch = train[torch.randint(train.shape[0], (cfg.batch,), generator=gen)]
        recon, aux, _ = model(batch)
        loss = F.mse_loss(recon, batch) + aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        recon, _, indices = model(test)
        codes = quantizer.code_metrics(indices)  # over the whole test set
    mse01 = F.mse_loss(recon.clamp(-1, 1), test).item() / 4  # on the [0, 1] pixel scale
    pixels = cfg.patch * cfg.patch
    return DemoResult(
        method=name,
        bits_per_token=quantizer.bits_per_token,
        bits_per_pixel=quantizer.bits_per_token / pixels,
        mse=mse01,
        psnr=10 * math.log10(1 / max(mse01, 1e-12)),
        usage=float(codes["usage"]),
        perplexity=float(codes["perplexity"]),
        seconds=seconds,
    )


def run_demo(cfg: DemoConfig) -> list[DemoResult]:
    """Fit each selected method; returns one result per method, in table order."""
    names = list(METHODS) if cfg.methods == "all" else [m.strip() for m in cfg.methods.split(",") if m.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise ValueError(f"unknown method(s) {unknown or cfg.methods!r}; choose from {list(METHODS)}")
    train = torch.from_numpy(photo_patches(TRAIN_PHOTOS, cfg.patch)) * 2 - 1
    test = torch.from_numpy(photo_patches(TEST_PHOTOS, cfg.patch)) * 2 - 1
    return [fit(*METHODS[n], train, test, cfg) for n in names]


def format_table(results: list[DemoResult]) -> str:
    """Markdown table, one row per method."""
    lines = [
        "| method | bits/token | bits/pixel | MSE | PSNR dB | usage | perplexity | train s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.method} | {r.bits_per_token:.2f} | {r.bits_per_pixel:.3f} | {r.mse:.5f} | {r.psnr:.2f} "
            f"| {100 * r.usage:.1f}% | {r.perplexity:.1f} | {r.seconds:.1f} |"
        )
    return "\n".join(lines)
