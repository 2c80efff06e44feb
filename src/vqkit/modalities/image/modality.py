"""The image modality: folders of pictures (ImageNet layout or flat) or scikit-image's bundled photos,
L1/LPIPS/PatchGAN training, PSNR/SSIM/LPIPS/rFID evaluation, PNG out of the codec."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from ...codec.tiled import Codec, Encoded
from ...metrics import WeightsUnavailableError, load_fid_inception, load_lpips, psnr
from ...models import Tokenizer
from ...reporting.evaluation import format_metrics, save_code_usage_plot
from ..base import Adversary, Evaluation, Modality, Objective, Scorer
from .codec import MARGIN_PIXELS, TILE_PIXELS, ImageAdapter, to_tensor
from .config import ImageCrop, ImageObjectiveConfig
from .datasets import build_dataset, training_images
from .io import read_image, write_png
from .objective import ImageAdversary, ImageObjective
from .report import write_report
from .scorer import HEADLINE, ImageScorer, save_reconstruction_grid

if TYPE_CHECKING:
    from ...train.config import TrainConfig


def _flat(cfg: TrainConfig) -> str:
    """A flat --data folder without --val-data holds out a share for validation; with it, all of it trains."""
    return "whole" if cfg.data.val else "holdout"


def _crop(cfg: TrainConfig) -> ImageCrop:
    crop = cfg.crop
    assert isinstance(crop, ImageCrop)  # TrainConfig builds the crop section of the arch's modality
    return crop


class ImageModality(Modality):
    name = "image"
    container_code = 0
    items = "images"
    per_item_key = "per_image"
    extensions = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
    decoded_suffix = ".png"
    keep_samples = 8
    sample_unit = "pixel"
    train_hint = "vqkit train --preset rfsq-cpu --data DIR --out RUN"
    crop_config = ImageCrop
    objective_config = ImageObjectiveConfig

    # -- training ---------------------------------------------------------------------------
    def datasets(self, cfg: TrainConfig) -> tuple[Dataset[Tensor], Dataset[Tensor]]:
        flat, crop, data = _flat(cfg), _crop(cfg), cfg.data
        resize = crop.resize_for(data.train)
        train = build_dataset(data.train, "train", crop.image_size, cfg.run.seed, resize=resize,
                              max_images=data.max_train_items or None, bad_files=data.bad_files, flat=flat)
        val = build_dataset(data.val or data.train, "val", crop.image_size, cfg.run.seed, resize=resize,
                            max_images=data.max_val_items or None, bad_files=data.bad_files, flat=flat)
        return train, val

    def objective(self, cfg: TrainConfig, device: torch.device, main: bool) -> Objective:
        return ImageObjective(cfg, device, main)

    def adversary(self, cfg: TrainConfig) -> Adversary:
        return ImageAdversary(cfg)

    # -- evaluation ------------------------------------------------------------------------------
    def scorer(self, model: Tokenizer, device: torch.device, *, full: bool, objective: Objective | None = None
               ) -> Scorer:
        if not full:  # training validation: the objective's LPIPS network if it has one, no rFID
            lpips = getattr(objective, "lpips", None)
            notes = objective.notes if objective is not None else {}
            return ImageScorer(lpips if lpips is not None else notes.get("lpips"))
        extras: list[Any] = []
        for load in (load_lpips, load_fid_inception):
            try:
                extras.append(load(device))
            except WeightsUnavailableError as err:
                extras.append(str(err))
        return ImageScorer(extras[0], extras[1])

    def eval_loader(self, dataset: Dataset[Tensor], batch_size: int) -> Iterable[Tensor]:
        return DataLoader(dataset, batch_size=batch_size, shuffle=False)

    def eval_dataset(self, cfg: TrainConfig, data: str, split: str, max_items: int) -> Dataset[Tensor]:
        # a flat folder the run trained on is split as training split it (held-out share = val); any
        # other flat folder (a test set, the run's --val-data) is evaluated whole
        same = str(data) == "photos" or Path(data).resolve() == Path(cfg.data.train).resolve()
        flat = "holdout" if same and not cfg.data.val else "whole"
        crop = _crop(cfg)
        dataset: Dataset[Tensor] = build_dataset(str(data), split, crop.image_size, cfg.run.seed,
                                                 resize=crop.resize_for(str(data)), max_images=max_items or None,
                                                 bad_files="fail", flat=flat)
        if max_items and len(dataset) > max_items:  # type: ignore[arg-type]  # the bundled photos
            dataset = Subset(dataset, range(max_items))
        print(f"vqkit eval: {len(dataset)} {split} images of {data} at {crop.image_size}px",  # type: ignore[arg-type]
              flush=True)
        return dataset

    def eval_data(self, cfg: TrainConfig, split: str) -> str:
        return cfg.data.val or cfg.data.train if split == "val" else cfg.data.train

    def eval_record(self, cfg: TrainConfig, data: str, split: str) -> dict[str, Any]:
        return {"split": split, "image_size": _crop(cfg).image_size}

    def write_artifacts(self, result: Evaluation, model: Tokenizer, out: Path) -> list[Path]:
        written = []
        if result.samples:
            originals = torch.stack([o for o, _ in result.samples])
            recons = torch.stack([r for _, r in result.samples])
            save_reconstruction_grid(originals, recons, out / "reconstructions.png")
            written.append(out / "reconstructions.png")
        save_code_usage_plot(result.usage, out / "code_usage.png")
        return [*written, out / "code_usage.png"]

    def format_metrics(self, metrics: dict[str, Any]) -> str:
        return format_metrics(metrics, HEADLINE)

    # -- codec ---------------------------------------------------------------------------------
    def adapter(self, model: Tokenizer) -> ImageAdapter:
        return ImageAdapter()

    def tile(self, model: Tokenizer) -> tuple[int, int]:
        f = model.downsample_factor
        return max(1, TILE_PIXELS // f), MARGIN_PIXELS // f

    def training_signals(self, cfg: TrainConfig | None, data: str, max_items: int, model: Tokenizer
                         ) -> Iterator[np.ndarray]:
        if cfg is None:
            return training_images(data, max_items)
        return training_images(data, max_items, bad_files=cfg.data.bad_files, flat=_flat(cfg))

    def read(self, path: Path, codec: Codec[Any]) -> np.ndarray:
        return read_image(path)

    def write(self, path: Path, signal: Any, codec: Codec[Any]) -> None:
        write_png(path, signal)

    def describe(self, signal: Any, codec: Codec[Any]) -> str:
        return f"{signal.shape[1]}x{signal.shape[0]}"

    def rate(self, encoded: Encoded, codec: Codec[Any]) -> str:
        bpp = encoded.bits_per_sample()
        return f"{bpp['file']:.3f} bpp (nominal {bpp['nominal']:.3f} bpp)"

    def fidelity(self, original: Any, decoded: Any, codec: Codec[Any]) -> str:
        return f"PSNR {float(psnr(to_tensor(original), to_tensor(decoded))[0]):.2f} dB"

    # -- reports ------------------------------------------------------------------------------------
    def write_report(self, out_dir: Path, results: dict[str, Any]) -> list[Path]:
        return write_report(out_dir, results)


IMAGE = ImageModality()
