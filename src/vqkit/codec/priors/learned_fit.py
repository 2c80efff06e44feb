"""Training one digit's network of the learned prior (float32, torch), then rounding it to fixed point."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .learned import FH, FW, WEIGHT_CAP, IntMLP


def train_mlp(x: np.ndarray, y: np.ndarray, radix: int, hidden: int, steps: int, seed: int, x_max: int,
              batch: int = 8192, lr: float = 1e-2) -> IntMLP:
    """Cross-entropy fit of ``features (n, F) -> hidden (ReLU) -> radix logits`` on integer features ``x``
    (|x| ≤ ``x_max`` for any input, not only these) and symbols ``y``; Adam with a cosine schedule; returns
    the rounded integer network."""
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, radix))
    with torch.no_grad():  # a deterministic start from the generator, not the global seed
        for layer in (net[0], net[2]):
            assert isinstance(layer, nn.Linear)
            bound = 1 / layer.in_features**0.5
            layer.weight.copy_(torch.rand(layer.weight.shape, generator=gen) * 2 * bound - bound)
            layer.bias.zero_()
        final = net[2]
        assert isinstance(final, nn.Linear)
        counts = np.bincount(y, minlength=radix) + 1.0
        final.bias.copy_(torch.from_numpy(np.log(counts / counts.sum())).float())  # start at the marginal
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).long()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    for _ in range(steps):
        idx = torch.randint(0, len(yt), (min(batch, len(yt)),), generator=gen)
        loss = nn.functional.cross_entropy(net(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]  # torch stub untyped
        opt.step()
        sched.step()
    first, last = net[0], net[2]
    assert isinstance(first, nn.Linear) and isinstance(last, nn.Linear)

    def fixed(t: torch.Tensor, bits: int, cap: int) -> np.ndarray:
        return np.clip(np.round(t.detach().double().numpy() * (1 << bits)), -cap, cap).astype(np.int64)

    return IntMLP(fixed(first.weight, FW, WEIGHT_CAP), fixed(first.bias, FW, WEIGHT_CAP),
                  fixed(last.weight, FW, WEIGHT_CAP), fixed(last.bias, FW + FH, WEIGHT_CAP << FH), x_max=x_max)
