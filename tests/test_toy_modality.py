"""A third modality, defined and registered here and nowhere else: 1-channel 3-D volumes stored as ``.npy``.

It proves the architecture's claim: a new kind of signal is one subclass of ``Modality`` plus one backbone,
and then ``vqkit train``, ``encode``, ``decode`` and ``eval`` work on it — the codec tiling a 3-D token
grid, the context prior on 3-D neighbours — without any other file of vqkit knowing it exists.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from vqkit.cli import main
from vqkit.codec import TokenFile, container
from vqkit.codec.container import TokenFileError
from vqkit.codec.tiled import Codec, Encoded
from vqkit.metrics import CodeUsage
from vqkit.modalities import ARCH_MODALITY, MODALITIES, Modality, open_codec, register
from vqkit.modalities.base import Adversary, Evaluation, FileRates, Objective, Reconstruction, Scorer
from vqkit.models import Backbone, Tokenizer, registry
from vqkit.train import load_config, train

SIDE = 8  # voxels per side of a volume
ARCH = "toy_volume"


# -- the backbone: 2x2x2 patches in, 2x2x2 patches out (a token sees and makes exactly its patch) -------------
def _backbone(config: Any, dim: int) -> Backbone:
    encoder = nn.Conv3d(1, dim, kernel_size=2, stride=2)
    decoder = nn.ConvTranspose3d(dim, 1, kernel_size=2, stride=2)
    return Backbone(encoder, decoder, downsample_factor=2, channels=1, ndim=3)


# -- the modality ----------------------------------------------------------------------------------------------
def _volume(seed: int) -> np.ndarray:
    """A smooth random volume in [-1, 1], float32 (SIDE, SIDE, SIDE)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-0.8, 0.8, (3, 3, 3))
    grid = np.linspace(0, 2, SIDE)
    z, y, x = np.meshgrid(grid, grid, grid, indexing="ij")
    idx = np.clip(np.round(np.stack([z, y, x])).astype(int), 0, 2)
    return coarse[idx[0], idx[1], idx[2]].astype(np.float32)


class Volumes(Dataset[Tensor]):
    def __init__(self, root: str) -> None:
        self.files = sorted(Path(root).glob("*.npy"))
        self.root = root
        if not self.files:
            raise ValueError(f"{root}: no .npy volumes")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Tensor:
        return torch.from_numpy(np.load(self.files[i]))[None]  # (1, D, H, W)


class VolumeAdapter:
    modality = "volume"
    pad_mode = "replicate"

    def to_tensor(self, signal: np.ndarray) -> tuple[Tensor, tuple[int, ...]]:
        if signal.ndim != 3:
            raise ValueError(f"expected a (D, H, W) volume, got {signal.shape}")
        return torch.from_numpy(np.ascontiguousarray(signal, np.float32))[None, None], (1, *signal.shape)

    def allocate(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape[1:], np.float32)

    def place(self, out: np.ndarray, piece: Tensor, where: tuple[slice, ...]) -> None:
        size = [min(s.stop, n) - s.start for s, n in zip(where, out.shape, strict=True)]
        dst = tuple(slice(s.start, s.start + k) for s, k in zip(where, size, strict=True))
        out[dst] = piece[0, 0, : size[0], : size[1], : size[2]].clamp(-1, 1).numpy()

    def finish(self, out: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return out

    def spatial(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) != 4 or shape[0] != 1:
            raise TokenFileError(f"not a volume's shape: {shape}")
        return shape[1:]


class MSEObjective(Objective):
    notes: ClassVar[dict[str, str]] = {}

    def forward(self, recon: Tensor, target: Tensor) -> tuple[Tensor, dict[str, float]]:
        loss = F.mse_loss(recon, target)
        return loss, {"mse": loss.item()}


class VolumeScorer(Scorer):
    def __init__(self) -> None:
        self.mse: list[float] = []

    def reconstruct(self, model: Tokenizer, batch: Tensor, device: torch.device,
                    amp_dtype: torch.dtype | None) -> Reconstruction:
        x = batch.to(device).float()
        recon, out = model(x)
        return Reconstruction(x, recon.float().clamp(-1, 1), out.indices, [(1, *x.shape[2:])] * len(x))

    def update(self, rec: Reconstruction) -> None:
        self.mse += ((rec.recon - rec.target) ** 2).flatten(1).mean(1).tolist()

    def per_item(self) -> dict[str, list[float]]:
        return {"mse": self.mse}

    def result(self, model: Tokenizer, usage: CodeUsage, rates: FileRates | None) -> dict[str, Any]:
        metrics: dict[str, Any] = {"volumes": len(self.mse), "mse": float(np.mean(self.mse)),
                                   "usage": usage.result()["usage"], "bits_per_token": model.bits_per_token}
        if rates is not None:
            metrics["file_bits_per_voxel"] = {p: v / len(self.mse) for p, v in rates.per_sample.items()}
        return metrics


class VolumeModality(Modality):
    name = "volume"
    container_code = 200
    items = "volumes"
    per_item_key = "per_volume"
    extensions = (".npy",)
    decoded_suffix = ".npy"
    keep_samples = 2

    def datasets(self, cfg: Any) -> tuple[Dataset[Tensor], Dataset[Tensor]]:
        return Volumes(cfg.data.train), Volumes(cfg.data.val)

    def objective(self, cfg: Any, device: torch.device, main: bool) -> Objective:
        return MSEObjective()

    def adversary(self, cfg: Any) -> Adversary:
        raise ValueError("volumes train without an adversary")

    def scorer(self, model: Tokenizer, device: torch.device, *, full: bool, objective: Objective | None = None
               ) -> Scorer:
        return VolumeScorer()

    def eval_loader(self, dataset: Dataset[Tensor], batch_size: int) -> Iterable[Tensor]:
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size)

    def eval_dataset(self, cfg: Any, data: str, split: str, max_items: int) -> Dataset[Tensor]:
        return Volumes(data)

    def eval_data(self, cfg: Any, split: str) -> str:
        return str(cfg.data.val if split == "val" else cfg.data.train)

    def eval_record(self, cfg: Any, data: str, split: str) -> dict[str, Any]:
        return {"modality": self.name}

    def write_artifacts(self, result: Evaluation, model: Tokenizer, out: Path) -> list[Path]:
        np.save(out / "first.npy", result.samples[0][1].numpy())
        return [out / "first.npy"]

    def format_metrics(self, metrics: dict[str, Any]) -> str:
        return f"mse {metrics['mse']:.4f}"

    def adapter(self, model: Tokenizer) -> VolumeAdapter:
        return VolumeAdapter()

    def tile(self, model: Tokenizer) -> tuple[int, int]:
        return 2, 1  # tokens: several 3-D tiles even for a small volume

    def training_signals(self, cfg: Any, data: str, max_items: int, model: Tokenizer) -> Iterator[np.ndarray]:
        return (np.load(f) for f in sorted(Path(data).glob("*.npy"))[: max_items or None])

    def read(self, path: Path, codec: Codec[Any]) -> np.ndarray:
        out: np.ndarray = np.load(path)
        return out

    def write(self, path: Path, signal: Any, codec: Codec[Any]) -> None:
        np.save(path, signal)

    def describe(self, signal: Any, codec: Codec[Any]) -> str:
        return "x".join(map(str, signal.shape))

    def rate(self, encoded: Encoded, codec: Codec[Any]) -> str:
        return f"{encoded.bits_per_sample()['file']:.3f} bits/voxel"

    def fidelity(self, original: Any, decoded: Any, codec: Codec[Any]) -> str:
        return f"MSE {float(np.mean((original - decoded) ** 2)):.4f}"

    def write_report(self, out_dir: Path, results: dict[str, Any]) -> list[Path]:
        return []


@pytest.fixture
def volume_modality() -> Iterator[Modality]:
    """Registered for the test, removed after it: no other test sees the third modality."""
    modality = VolumeModality()
    registry.ARCHITECTURES[ARCH] = _backbone
    register(modality, (ARCH,))
    try:
        yield modality
    finally:
        del registry.ARCHITECTURES[ARCH], ARCH_MODALITY[ARCH], MODALITIES[modality.name]
        del container.MODALITIES[modality.name]


def _folder(root: Path, seeds: range) -> Path:
    root.mkdir(parents=True)
    for s in seeds:
        np.save(root / f"v{s}.npy", _volume(s))
    return root


def test_a_third_modality_trains_encodes_decodes_and_evaluates(volume_modality: Modality, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    train_dir, val_dir = _folder(tmp_path / "train", range(8)), _folder(tmp_path / "val", range(100, 103))
    cfg = load_config(None, None, arch=ARCH, quantizer="fsq", quantizer_args=json.dumps({"levels": [5, 5, 5]}),
                      data=str(train_dir), val_data=str(val_dir), out=str(tmp_path / "run"), steps=60,
                      batch_size=4, lr=1e-2, warmup=0.0, eval_every=60, ckpt_every=60, log_every=10, prior_images=8,
                      max_val_images=0)
    summary = train(cfg)
    assert summary["modality"] == "volume" and summary["val"]["volumes"] == 3
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r.get("split") == "train"]
    assert losses[-1] < 0.5 * losses[0]  # it learned
    assert (tmp_path / "run" / "final" / "prior.safetensors").is_file()

    # encode -> decode through the CLI: a 3-D token grid, tiled, coded with the context prior
    assert main(["encode", str(val_dir), "-o", str(tmp_path / "vqt"), "--model", str(tmp_path / "run")]) == 0
    file = TokenFile.from_bytes((tmp_path / "vqt" / "v100.vqt").read_bytes())
    assert file.modality == "volume" and file.prior == "context" and file.grid == (1, 4, 4, 4)
    assert main(["decode", str(tmp_path / "vqt"), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "run")]) == 0
    decoded = np.load(tmp_path / "out" / "v100.npy")
    codec, modality = open_codec(tmp_path / "run")
    assert modality is volume_modality
    original = _volume(100)
    grid, side, shape = codec.tokens(original)
    assert np.array_equal(decoded, codec.render(grid, side, shape))
    with torch.no_grad():
        whole = codec.model.decode_tokens(codec.model.encode_tokens(torch.from_numpy(original)[None, None])[0], None)
    assert np.allclose(decoded, whole[0, 0].clamp(-1, 1).numpy(), atol=1e-6)  # tiles == whole volume
    assert float(np.mean((decoded - original) ** 2)) < float(np.mean(original**2))

    # evaluate through the CLI: per-volume scores and real file rates in metrics.json
    assert main(["eval", str(tmp_path / "run"), "--out", str(tmp_path / "ev")]) == 0
    record = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    metrics = record["metrics"]
    assert record["modality"] == "volume" and metrics["volumes"] == 3
    assert metrics["per_volume"]["ids"] == ["v100.npy", "v101.npy", "v102.npy"]
    assert sum(metrics["per_volume"]["mse"]) / 3 == pytest.approx(metrics["mse"], abs=1e-4)
    assert set(metrics["file_bits_per_voxel"]) == {"static", "context"}
    assert (tmp_path / "ev" / "first.npy").is_file()


def test_context_prior_uses_3d_neighbours(volume_modality: Modality) -> None:
    """On a smooth volume's tokens the 3-D context prior codes fewer bits than the static one."""
    from vqkit.codec import PriorTables, StageSpec, encode

    specs = [StageSpec.digits([5, 5, 5])]
    rng = np.random.default_rng(0)

    def smooth() -> np.ndarray:
        coarse = rng.integers(0, 125, (3, 3, 3))
        return np.kron(coarse, np.ones((4, 4, 4), np.int64))[None, :10, :10, :10]

    tables = PriorTables.fit(specs, [smooth() for _ in range(6)])
    grid = smooth()
    context, static = (8 * len(encode(tables.prior(p), grid)[0]) for p in ("context", "static"))
    assert context < 0.7 * static
