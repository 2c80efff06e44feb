"""Image datasets for the tokenizers: an image folder (ImageNet layout or flat) and the bundled photos.

Every item is a float32 tensor ``(3, size, size)`` in **[-1, 1]**: the one value range vqkit's
models, losses and metrics use end to end, so nothing in between rescales. Conversion to and from
uint8 happens only at I/O (:func:`to_uint8`, :func:`from_uint8`).

Random choices (crop position, flip) come from a generator keyed by ``(seed, epoch, index)``, never
from a worker's global RNG: an item is the same whatever the number of loader workers, the order
they run in, or whether the run was resumed part-way.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from .photos import TEST_PHOTOS, TRAIN_PHOTOS, load_photo

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
T = TypeVar("T")
SPLITS = ("train", "val")


@dataclass(frozen=True)
class Crop:
    """How an image becomes an item: shorter side resized to ``resize`` (default ``size``), bicubic
    with antialiasing, then a random (train) or centre (eval) ``size``×``size`` crop, flipped
    left-right with probability 1/2 when ``hflip`` (train only).

    ``resize > size`` is what gives a random crop room on square images (Imagenette is all 224×224):
    with ``resize == size`` the crop can only move along the longer side.
    """

    size: int = 128
    resize: int | None = None
    train: bool = True
    hflip: bool = False

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be positive, got {self.size}")
        if self.resize is not None and self.resize < self.size:
            raise ValueError(f"resize must be at least size={self.size}, got {self.resize}")

    def resize_image(self, image: Image.Image) -> Image.Image:
        """Resize so that the shorter side is exactly ``resize`` (or ``size``), keeping the aspect ratio."""
        side, (w, h) = self.resize or self.size, image.size
        new = (max(side, round(w * side / min(w, h))), max(side, round(h * side / min(w, h))))
        return image if new == (w, h) else image.resize(new, Image.Resampling.BICUBIC)

    def apply(self, image: Tensor, seed: int, epoch: int, index: int) -> Tensor:
        """Crop a resized uint8 ``(3, H, W)`` image to a float32 ``(3, size, size)`` item in [-1, 1]."""
        _, h, w = image.shape
        if not self.train:
            return _crop(image, (h - self.size) // 2, (w - self.size) // 2, self.size, False)
        rng = np.random.default_rng([seed, epoch, index])
        top = int(rng.integers(0, h - self.size + 1))
        left = int(rng.integers(0, w - self.size + 1))
        flip = self.hflip and bool(rng.integers(0, 2))
        return _crop(image, top, left, self.size, flip)


def _crop(image: Tensor, top: int, left: int, size: int, flip: bool) -> Tensor:
    out = image[:, top : top + size, left : left + size]
    return (out.flip(-1) if flip else out).float().div_(127.5).sub_(1.0)


def _to_chw(image: Image.Image) -> Tensor:
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """An image file as RGB, whatever its mode (L, P, RGBA, CMYK, …); a ValueError naming the file
    if it cannot be read, so that a bad file in a dataset of thousands is found at once."""
    try:
        with Image.open(path) as opened:
            if opened.mode == "P" and "transparency" in opened.info:
                return opened.convert("RGBA").convert("RGB")  # the palette → RGB path warns otherwise
            return opened.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


def find_images(root: str | os.PathLike[str], extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """All image files under ``root``, recursively, sorted by relative path (one order on every
    machine). Extensions match case-insensitively (Imagenette's files are ``.JPEG``); hidden files
    and folders are skipped (macOS ``._x.jpg`` resource forks are not images)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"image folder {root} does not exist or is not a directory")
    suffixes = tuple(e.lower() for e in extensions)
    found: list[Path] = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(Path(folder) / f for f in files if not f.startswith(".") and f.lower().endswith(suffixes))
    if not found:
        raise ValueError(f"no images ({', '.join(suffixes)}) found under {root}")
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def spread(items: Sequence[T], n: int | None, name: str = "max_images") -> list[T]:
    """``n`` items evenly spread over ``items`` (all of them when ``n`` is None or larger), so that a
    subset of an ImageNet-layout folder still covers every class."""
    if n is None:
        return list(items)
    if n < 1:
        raise ValueError(f"{name} must be positive, got {n}")
    n = min(n, len(items))
    return [items[i * len(items) // n] for i in range(n)]


def _index(index: int, length: int) -> int:
    i = operator.index(index) + (length if index < 0 else 0)
    if not 0 <= i < length:
        raise IndexError(f"index {index} out of range for a dataset of {length} items")
    return i


class _EpochMixin:
    """The epoch lives in shared memory: loader workers (persistent ones included) hold a copy of the
    dataset made when they started, and would otherwise never see ``set_epoch``."""

    def _init_epoch(self, seed: int) -> None:
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.seed = seed
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()  # type: ignore[no-untyped-call]

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """New random crops for a new epoch; call before iterating the loader (or :func:`set_epoch`)."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self._epoch.fill_(epoch)


class ImageFolder(_EpochMixin, Dataset[Tensor]):
    """Every image under ``root``: ImageNet layout (``root`` = ``.../train`` with one folder per
    class) or a flat folder. Items are float32 ``(3, size, size)`` in [-1, 1]; labels are not
    returned (a tokenizer does not use them).

    ``max_images`` keeps that many files evenly spread over the sorted list, so that a subset of an
    ImageNet-layout folder still covers every class.
    """

    def __init__(self, root: str | os.PathLike[str], size: int = 128, train: bool = True, seed: int = 0,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS, max_images: int | None = None, *,
                 resize: int | None = None, hflip: bool = False) -> None:
        self.root = Path(root)
        self.crop = Crop(size, resize, train, hflip)
        self._init_epoch(seed)
        self.files = tuple(spread(find_images(self.root, extensions), max_images))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Tensor:
        i = _index(index, len(self))
        image = _to_chw(self.crop.resize_image(load_image(self.files[i])))
        return self.crop.apply(image, self.seed, self.epoch, i)


class PhotoDataset(_EpochMixin, Dataset[Tensor]):
    """Crops of scikit-image's bundled photos: the offline default, so vqkit runs with no data.

    There are only ten training photos, so training gives ``crops_per_photo`` random crops of each as
    distinct items (``len = photos × crops_per_photo``), fresh every epoch. Evaluation gives a fixed,
    centred grid of non-overlapping crops of each test photo (``crops_per_photo`` is unused). The
    shorter side is resized to ``resize``, by default ``2 × size``: at ``size`` a square photo would
    give one crop only.
    """

    def __init__(self, size: int = 128, train: bool = True, seed: int = 0, crops_per_photo: int = 32, *,
                 resize: int | None = None, hflip: bool = False, names: Sequence[str] | None = None) -> None:
        if crops_per_photo < 1:
            raise ValueError(f"crops_per_photo must be positive, got {crops_per_photo}")
        self.crop = Crop(size, 2 * size if resize is None else resize, train, hflip)
        self._init_epoch(seed)
        self.names = tuple(names) if names is not None else (TRAIN_PHOTOS if train else TEST_PHOTOS)
        self.crops_per_photo = crops_per_photo
        self.images = [_to_chw(self.crop.resize_image(_photo(name))) for name in self.names]
        self._grid: list[tuple[int, int, int]] = []
        for p, image in enumerate(self.images):
            rows, cols = image.shape[1] // size, image.shape[2] // size
            top0, left0 = (image.shape[1] - rows * size) // 2, (image.shape[2] - cols * size) // 2
            self._grid += [(p, top0 + r * size, left0 + c * size) for r in range(rows) for c in range(cols)]

    def __len__(self) -> int:
        return len(self.images) * self.crops_per_photo if self.crop.train else len(self._grid)

    def __getitem__(self, index: int) -> Tensor:
        i = _index(index, len(self))
        if self.crop.train:
            return self.crop.apply(self.images[i // self.crops_per_photo], self.seed, self.epoch, i)
        p, top, left = self._grid[i]
        return _crop(self.images[p], top, left, self.crop.size, False)


def _photo(name: str) -> Image.Image:
    pixels = np.round(load_photo(name) * 255.0).astype(np.uint8)  # exact: the photos are 8-bit
    return Image.fromarray(pixels)


def build_dataset(data: str | os.PathLike[str] | None, split: str, size: int, seed: int = 0, *,
                  resize: int | None = None, hflip: bool = False, max_images: int | None = None) -> Dataset[Tensor]:
    """The dataset a run asks for: ``None`` or ``"photos"`` → the bundled photos; a folder with a
    ``split`` subfolder → :class:`ImageFolder` on it (ImageNet layout); any other folder → a flat
    folder, read whole for either split (train and eval differ only in the crop).

    A folder that has some split subfolders but not ``split`` is an error, not a flat folder: it
    would otherwise silently evaluate on the training images.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    train = split == "train"
    if data is None or str(data) == "photos":
        return PhotoDataset(size, train, seed, resize=resize, hflip=hflip)
    root = Path(data)
    if (root / split).is_dir():
        root = root / split
    elif any((root / s).is_dir() for s in SPLITS):
        raise ValueError(f"data folder {root} has no {split!r} subfolder (ImageNet layout: {root}/{split}/<class>/)")
    elif not root.is_dir():
        raise ValueError(f"data folder {root} does not exist: expected an image folder, {root}/{split}/, or 'photos'")
    return ImageFolder(root, size, train, seed, max_images=max_images, resize=resize, hflip=hflip)


def make_loader(dataset: Dataset[Tensor], batch_size: int, train: bool, seed: int = 0, workers: int = 0,
                distributed: bool = False, drop_last: bool | None = None, *,
                num_replicas: int | None = None, rank: int | None = None) -> DataLoader[Tensor]:
    """A loader whose order depends only on ``seed`` and the epoch (see :func:`set_epoch`).

    Training shuffles with a :class:`DistributedSampler` even on one process (``num_replicas=1``):
    its permutation is seeded by ``seed + epoch``, so epoch ``e`` has the same order whether or not
    the run was resumed, and one-process and distributed runs share one code path. ``distributed``
    takes the replicas and rank from the process group unless ``num_replicas``/``rank`` are given.
    Distributed evaluation pads the last batch with repeated items so ranks stay in step.
    ``drop_last`` defaults to ``train``. The loader gets its own generator so that iterating it does
    not advance the global torch RNG.
    """
    drop = train if drop_last is None else drop_last
    sampler: DistributedSampler[Tensor] | None = None
    if distributed:
        sampler = DistributedSampler(dataset, num_replicas, rank, shuffle=train, seed=seed, drop_last=drop)
    elif train:
        sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=drop,
                      persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
                      generator=torch.Generator().manual_seed(seed))


def set_epoch(loader: DataLoader[Tensor], epoch: int) -> None:
    """Set the epoch of the loader's sampler (order) and of its dataset (random crops)."""
    for obj in (loader.sampler, loader.dataset):
        setter = getattr(obj, "set_epoch", None)
        if callable(setter):
            setter(epoch)


def to_uint8(images: Tensor, channels_last: bool = False) -> Tensor:
    """[-1, 1] float ``(..., 3, H, W)`` → uint8 in [0, 255]; ``channels_last`` gives ``(..., H, W, 3)``
    for PIL / PNG. Values outside [-1, 1] are clipped."""
    out = images.detach().float().add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
    return out.movedim(-3, -1).contiguous() if channels_last else out


def from_uint8(images: Tensor, channels_last: bool = False) -> Tensor:
    """uint8 ``(..., 3, H, W)`` (or ``(..., H, W, 3)`` with ``channels_last``) → float32 in [-1, 1];
    exact inverse of :func:`to_uint8`."""
    if images.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 tensor, got {images.dtype}")
    if channels_last:
        images = images.movedim(-1, -3)
    return images.float().div(127.5).sub_(1.0)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as uint8 (H, W, C): C = 1 for grey (L, LA, 16-bit and 32-bit grey, scaled, not
    clipped), 3 for everything else (RGB, RGBA and LA lose alpha; palette, CMYK, YCbCr converted)."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                a = np.asarray(im, dtype=np.float64)
                top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
                return np.clip(np.round(a * 255.0 / top), 0, 255).astype(np.uint8)[..., None]
            if im.mode in ("L", "LA", "1"):
                return np.asarray(im.convert("L"), dtype=np.uint8)[..., None]
            source = im.convert("RGBA") if im.mode == "P" and "transparency" in im.info else im
            return np.asarray(source.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """uint8 (H, W, 1|3) -> PNG (greyscale or RGB), written atomically."""
    import io

    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(buf, format="PNG")
    from ..models.pretrained import atomic_write

    atomic_write(Path(path), buf.getvalue())


def training_images(data: str, max_images: int = 0) -> Iterator[np.ndarray]:
    """Whole training images of ``data`` as uint8 arrays: ``"photos"`` (scikit-image's bundled
    training photos), a folder's ``train/`` split, or a flat folder; ``max_images`` evenly spread."""
    if data == "photos":
        names = TRAIN_PHOTOS[:max_images] if max_images > 0 else TRAIN_PHOTOS
        for name in names:
            yield np.round(load_photo(name) * 255).astype(np.uint8)
        return
    root = Path(data)
    files = find_images(root / "train" if (root / "train").is_dir() else root)
    for path in spread(files, max_images or None):
        yield read_image(path)
