"""Image datasets for the tokenizers: an image folder (ImageNet layout or flat) and the bundled photos.

Every item is a float32 tensor ``(3, size, size)`` in **[-1, 1]**: the one value range vqkit's
models, losses and metrics use end to end, so nothing in between rescales. Conversion to and from
uint8 happens only at I/O (:func:`to_uint8`, :func:`from_uint8`).

Random choices (crop position, flip) come from a generator keyed by ``(seed, epoch, index)``, never
from a worker's global RNG: an item is the same whatever the number of loader workers, the order
they run in, or whether the run was resumed part-way.

Files are found, split (a flat folder's fixed hold-out) and, when bad, skipped or refused as
:mod:`vqkit.data.files` says; they are decoded by :mod:`vqkit.modalities.image.io`'s one path.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ...data.files import (
    IMAGE_EXTENSIONS,
    SPLITS,
    BadFileError,
    BadFileWarning,
    _BadFileMixin,
    _EpochMixin,
    _index,
    _refused,
    check_bad_files,
    find_images,
    flat_holdout,
    require_folder,
    spread,
)
from .io import check_image, load_image, read_image
from .photos import TEST_PHOTOS, TRAIN_PHOTOS, load_photo

FLAT_MODES = ("holdout", "whole")
"""How :func:`build_dataset` splits a flat folder: ``"holdout"`` (disjoint, see :func:`flat_holdout`) or
``"whole"`` (every image, for a folder that is only ever one split, e.g. a separate ``--val-data``)."""


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


class ImageFolder(_BadFileMixin, _EpochMixin, Dataset[Tensor]):
    """Every image under ``root``: ImageNet layout (``root`` = ``.../train`` with one folder per
    class) or a flat folder. Items are float32 ``(3, size, size)`` in [-1, 1]; labels are not
    returned (a tokenizer does not use them).

    ``holdout`` (``"train"`` or ``"val"``) keeps one side of the flat-folder hold-out
    (:func:`flat_holdout`: every 10th sorted image validates) and says so in ``split_note``; the
    default ``None`` keeps every image and ``split_note`` is empty. ``max_images`` then keeps that
    many files evenly spread over the sorted list, so that a subset of an ImageNet-layout folder
    still covers every class.

    ``bad_files="skip"`` (default): an image that cannot be decoded is replaced by the next one
    that can (its item is a crop keyed by the index asked for), with one :class:`BadFileWarning`
    per file; ``skipped`` counts them. If every file is bad, a :class:`BadFileError`.
    ``bad_files="fail"``: every file's header is checked here (:func:`check_image`: 0.3–0.7 s
    for Imagenette's 9,469 files) and the first bad one raises a :class:`BadFileError`, as does any file that
    passes the check but does not decode (a cut JPEG) when it is read.
    """

    def __init__(self, root: str | os.PathLike[str], size: int = 128, train: bool = True, seed: int = 0,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS, max_images: int | None = None, *,
                 resize: int | None = None, hflip: bool = False, bad_files: str = "skip",
                 holdout: str | None = None) -> None:
        check_bad_files(bad_files)
        self.root = Path(root)
        self.crop = Crop(size, resize, train, hflip)
        self._init_epoch(seed)
        files = find_images(self.root, extensions)
        self.split_note = ""
        if holdout is not None:
            files, self.split_note = flat_holdout(files, holdout, self.root)
        self.files = tuple(spread(files, max_images))
        self._init_bad_files(bad_files, check_image)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Tensor:
        i = _index(index, len(self))
        image = self._load(i, lambda j: load_image(self.files[j]))
        return self.crop.apply(_to_chw(self.crop.resize_image(image)), self.seed, self.epoch, i)


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

    def item_ids(self) -> list[str]:
        """Evaluation crops by photo and corner (``"coffee@y16x48"``); training crops (random) by index."""
        if self.crop.train:
            return [str(i) for i in range(len(self))]
        return [f"{self.names[p]}@y{top}x{left}" for p, top, left in self._grid]

    def __getitem__(self, index: int) -> Tensor:
        i = _index(index, len(self))
        if self.crop.train:
            return self.crop.apply(self.images[i // self.crops_per_photo], self.seed, self.epoch, i)
        p, top, left = self._grid[i]
        return _crop(self.images[p], top, left, self.crop.size, False)


def _photo(name: str) -> Image.Image:
    pixels = np.round(load_photo(name) * 255.0).astype(np.uint8)  # exact: the photos are 8-bit
    return Image.fromarray(pixels)


def _split_root(data: str | os.PathLike[str], split: str) -> tuple[Path, bool]:
    """Where ``split`` of the folder ``data`` is: ``(data/split, False)`` in the ImageNet layout, or
    ``(data, True)`` for a flat folder; an error for a layout folder without ``split``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(data)
    if (root / split).is_dir():
        return root / split, False
    if any((root / s).is_dir() for s in SPLITS):
        raise ValueError(f"data folder {root} has no {split!r} subfolder (ImageNet layout: {root}/{split}/<class>/)")
    if not root.exists():
        raise ValueError(f"data folder {root} does not exist: expected an image folder, {root}/{split}/, or 'photos'")
    require_folder(root, "data folder")
    return root, True


def build_dataset(data: str | os.PathLike[str] | None, split: str, size: int, seed: int = 0, *,
                  resize: int | None = None, hflip: bool = False, max_images: int | None = None,
                  bad_files: str = "skip", flat: str = "holdout") -> Dataset[Tensor]:
    """The dataset a run asks for: ``None`` or ``"photos"`` → the bundled photos (disjoint training
    and test photos); a folder with a ``split`` subfolder → :class:`ImageFolder` on it (ImageNet
    layout); any other folder is flat.

    A flat folder is split by ``flat``: ``"holdout"`` (default) gives ``"val"`` every 10th sorted
    image and ``"train"`` the others (:func:`flat_holdout`), so validation never sees a training
    image; ``"whole"`` gives every image to either split, for a folder that is only one split
    (a separate validation folder, or training data whose validation is elsewhere). Either way
    the dataset's ``split_note`` (:func:`split_note`) says what was done.

    A folder that has some split subfolders but not ``split`` is an error, not a flat folder: it
    would otherwise silently evaluate on the training images. ``bad_files``: see :class:`ImageFolder`.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if flat not in FLAT_MODES:
        raise ValueError(f"flat must be one of {FLAT_MODES}, got {flat!r}")
    check_bad_files(bad_files)
    train = split == "train"
    if data is None or str(data) == "photos":
        return PhotoDataset(size, train, seed, resize=resize, hflip=hflip)
    root, is_flat = _split_root(data, split)
    dataset = ImageFolder(root, size, train, seed, max_images=max_images, resize=resize, hflip=hflip,
                          bad_files=bad_files, holdout=split if is_flat and flat == "holdout" else None)
    if is_flat and flat == "whole":
        dataset.split_note = f"flat folder {root}: no hold-out (flat='whole'), its images all used for {split}"
    return dataset


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


def training_images(data: str, max_images: int = 0, *, bad_files: str = "skip",
                    flat: str = "holdout") -> Iterator[np.ndarray]:
    """Whole training images of ``data`` as uint8 arrays (:func:`read_image`): ``"photos"``
    (scikit-image's bundled training photos), a folder's ``train/`` split, or the training side of
    a flat folder (``flat`` as in :func:`build_dataset`); ``max_images`` evenly spread.

    ``bad_files="skip"`` leaves a bad file out with a :class:`BadFileWarning` (so fewer than
    ``max_images`` may come) and raises only if none is readable; ``"fail"`` raises on the first.
    """
    check_bad_files(bad_files)
    if flat not in FLAT_MODES:
        raise ValueError(f"flat must be one of {FLAT_MODES}, got {flat!r}")
    if data == "photos":
        names = TRAIN_PHOTOS[:max_images] if max_images > 0 else TRAIN_PHOTOS
        for name in names:
            yield np.round(load_photo(name) * 255).astype(np.uint8)
        return
    root, is_flat = _split_root(data, "train")
    files = find_images(root)
    if is_flat and flat == "holdout":
        files = flat_holdout(files, "train", root)[0]
    files = spread(files, max_images or None)
    bad: list[BadFileError] = []
    for path in files:
        try:
            image = read_image(path)
        except BadFileError as err:
            if bad_files == "fail":
                raise _refused(err) from err
            bad.append(err)
            warnings.warn(f"skipping bad file ({len(bad)} of {len(files)} skipped so far): {err}", BadFileWarning,
                          stacklevel=2)
            continue
        yield image
    if len(bad) == len(files):
        raise BadFileError(f"all {len(files)} training images of {root} are bad; the last: {bad[-1]}", bad[-1].path)
