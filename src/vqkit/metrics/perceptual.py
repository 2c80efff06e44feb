"""LPIPS (Zhang et al. 2018, VGG variant) from locally stored pretrained weights.

LPIPS needs ImageNet-pretrained VGG16 weights and LPIPS's learned linear heads; neither can be
downloaded at run time here, and a randomly initialised backbone is not LPIPS. So the real network
is built here and its weights are read from local files; when they are absent, loading raises
:class:`WeightsUnavailableError` with the paths searched, and callers skip the term and say so.

Files (first match wins):
* VGG16 backbone, torchvision's ``vgg16-397923af.pth``: ``$VQKIT_WEIGHTS/``,
  ``~/.cache/vqkit/weights/``, ``$TORCH_HOME/hub/checkpoints/`` (default ``~/.cache/torch``).
* LPIPS heads, ``vgg.pth`` of LPIPS v0.1: ``$VQKIT_WEIGHTS/lpips_vgg_v0.1.pth``,
  ``~/.cache/vqkit/weights/lpips_vgg_v0.1.pth``, or the ``lpips`` package's bundled
  ``weights/v0.1/vgg.pth`` when that package is installed.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch import Tensor, nn

VGG_FILE = "vgg16-397923af.pth"
HEADS_FILE = "lpips_vgg_v0.1.pth"
# torchvision VGG16 "D" configuration; LPIPS taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_TAPS = (3, 8, 15, 22, 29)  # indices in torchvision's vgg16().features after which to tap
_CHANNELS = (64, 128, 256, 512, 512)


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are not on this machine; the message lists where they were looked for."""


def weight_dirs() -> list[Path]:
    dirs = [Path(p) for p in [os.environ.get("VQKIT_WEIGHTS", "")] if p]
    dirs.append(Path.home() / ".cache" / "vqkit" / "weights")
    return dirs


def _find(name: str, extra: list[Path]) -> Path:
    candidates = [d / name for d in weight_dirs()] + extra
    for path in candidates:
        if path.is_file():
            return path
    raise WeightsUnavailableError(f"{name} not found; looked in: {', '.join(str(c) for c in candidates)}")


def _vgg_path() -> Path:
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    return _find(VGG_FILE, [torch_home / "hub" / "checkpoints" / VGG_FILE])


def _heads_path() -> Path:
    extra = []
    spec = importlib.util.find_spec("lpips")
    if spec is not None and spec.origin is not None:
        extra.append(Path(spec.origin).parent / "weights" / "v0.1" / "vgg.pth")
    return _find(HEADS_FILE, extra)


def _vgg_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for v in _VGG_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, int(v), 3, padding=1), nn.ReLU(inplace=False)]
            channels = int(v)
    return nn.Sequential(*layers)


class LPIPS(nn.Module):
    """LPIPS-VGG distance of images in [-1, 1]; (B,) per image. Frozen; build it with :func:`load_lpips`."""

    shift: Tensor
    scale: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.features = _vgg_features()
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def _taps(self, x: Tensor) -> list[Tensor]:
        out, h = [], (x - self.shift) / self.scale
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _TAPS:
                out.append(h / (h.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10))
            if i == _TAPS[-1]:
                break
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        dist = x.new_zeros(x.shape[0])
        for head, a, b in zip(self.heads, self._taps(x), self._taps(y), strict=True):
            dist = dist + head((a - b).pow(2)).mean(dim=(1, 2, 3))
        return dist

    def train(self, mode: bool = True) -> LPIPS:  # always frozen: BN-free, but keep eval semantics
        return super().train(False)


def load_lpips(device: str | torch.device = "cpu") -> LPIPS:
    """The real LPIPS-VGG with pretrained weights, or :class:`WeightsUnavailableError` saying what is missing."""
    vgg_path, heads_path = _vgg_path(), _heads_path()
    model = LPIPS()
    vgg = torch.load(vgg_path, map_location="cpu", weights_only=True)
    features = {k.removeprefix("features."): v for k, v in vgg.items() if k.startswith("features.")}
    try:
        model.features.load_state_dict(features, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{vgg_path}: not torchvision's VGG16 weights ({err})") from err
    heads = torch.load(heads_path, map_location="cpu", weights_only=True)
    try:
        model.heads.load_state_dict({f"{i}.weight": heads[f"lin{i}.model.1.weight"] for i in range(5)})
    except (KeyError, RuntimeError) as err:
        raise ValueError(f"{heads_path}: not LPIPS v0.1 VGG heads ({err})") from err
    return model.to(device)
