"""Image datasets for the tokenizers: an image folder (ImageNet layout or flat) and the bundled photos.

Every item is a float32 tensor ``(3, size, size)`` in **[-1, 1]**: the one value range vqkit's
models, losses and metrics use end to end, so nothing in between rescales. Conversion to and from
uint8 happens only at I/O (:func:`to_uint8`, :func:`from_uint8`).

Random choices (crop position, flip) come from a generator keyed by ``(seed, epoch, index)``, never
from a worker's global RNG: an item is the same whatever the number of loader workers, the order
they run in, or whether the run was resumed part-way.

- **One decoding path.** Every image file becomes pixels through :func:`image_to_array` (via
  :func:`read_image`): training (:func:`load_image`), evaluation and the codec cannot disagree on
  what a 16-bit PNG or a CMYK JPEG looks like.
- **Bad files.** The folder datasets take ``bad_files``: ``"skip"`` (default) replaces an unreadable
  file by the next one that loads, warns once per file (:class:`BadFileWarning`) and counts it
  (``dataset.skipped``, :func:`skipped_count`), so one corrupt JPEG does not end a week-long run;
  ``"fail"`` raises a :class:`BadFileError` naming the first bad file.
- **Disjoint splits.** A flat folder (no ``train/``/``val/``) is split by a fixed hold-out
  (:func:`flat_holdout`): every :data:`FLAT_HOLDOUT_EVERY`-th image validates and is never trained on.
"""

from __future__ import annotations

import operator
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

from .photos import TEST_PHOTOS, TRAIN_PHOTOS, load_photo

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
T = TypeVar("T")
SPLITS = ("train", "val")
BAD_FILE_POLICIES = ("skip", "fail")
"""Values of ``bad_files``: ``"skip"`` a bad file (replace it, warn, count) or ``"fail"`` on it."""
FLAT_HOLDOUT_EVERY = 10
"""In a flat folder, sorted images 0, 10, 20, … are the validation split and never trained on."""
FLAT_MODES = ("holdout", "whole")
"""How :func:`build_dataset` splits a flat folder: ``"holdout"`` (disjoint, see :func:`flat_holdout`) or
``"whole"`` (every image, for a folder that is only ever one split, e.g. a separate ``--val-data``)."""


class BadFileError(ValueError):
    """A data file that cannot be used: unreadable, truncated, not an image or audio file, of an
    unsupported mode, empty, or holding NaN/Inf. The message names the file and the cause;
    ``path`` holds the file (``None`` when the error was re-raised from a loader worker, which
    rebuilds exceptions from their message alone)."""

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)


class BadFileWarning(UserWarning):
    """A bad file was skipped (``bad_files="skip"``), or a folder could not be listed."""


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


SUPPORTED_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV",
                   "I;16", "I;16L", "I;16B", "I;16N", "I", "F")
"""PIL modes :func:`image_to_array` converts; a file of any other mode is a :class:`BadFileError`."""
_FLOAT_SCALES = (1.0, 255.0, 65535.0)


def _scaled(values: np.ndarray, top: float) -> np.ndarray:
    """Grey values on ``[0, top]`` → uint8 ``(H, W, 1)``, rounded; outside the range clipped."""
    return np.clip(np.round(values.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)[..., None]


def image_to_array(image: Image.Image) -> np.ndarray:
    """A decoded PIL image as uint8 ``(H, W, C)``: ``C = 1`` for grey modes, 3 for everything else.

    This is vqkit's one conversion from file pixels to uint8, used by training (:func:`load_image`),
    evaluation and the codec (:func:`read_image`), so they agree on every mode:

    - ``1``, ``L``: grey (``1`` is 0 or 255). ``LA``/``La``: grey, alpha dropped.
    - ``I;16`` (``I;16L``, ``I;16B``, ``I;16N``): 16-bit grey, scaled by 255/65535 and rounded, never
      clipped (a 16-bit PNG's 65,535 is white, 32,768 mid-grey).
    - ``I`` (signed 32-bit): PIL's mode for 16-bit grey from several formats, so values 0…65,535 are
      scaled by 255/65535 as 16-bit; an image with larger values is a true 32-bit one and is scaled
      by 255/(2³¹−1), mode I's largest value. Negative values, which have no brightness, become 0.
    - ``F`` (32-bit float): taken as [0, 1], unless its values say otherwise: a maximum above 1
      means PIL's own [0, 255] convention (``L`` converted to ``F``), above 255 a 16-bit range
      [0, 65535]; above 65535 there is no known scale and the image is refused, as is NaN or Inf.
      Values outside the chosen range (small negative undershoot, 1 + ε from float arithmetic)
      are clipped: they are rounding, not content.
    - ``P``/``PA`` (palette, with or without transparency), ``RGB``, ``RGBA``, ``RGBX``, ``RGBa``
      (un-premultiplied first), ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: RGB, through PIL's converters.

    **Alpha is dropped, not composited**: the colour channels are kept as stored, on no background
    (a transparent pixel keeps whatever colour it holds). 48-bit RGB PNGs reach here as 8-bit
    ``RGB`` (PIL keeps the high byte), so they are scaled, not clipped, too.

    Raises ``ValueError`` for any other mode and for float images without a known scale.
    """
    mode = image.mode
    if mode in ("1", "L"):
        return np.array(image.convert("L"), dtype=np.uint8)[..., None]
    if mode in ("LA", "La"):
        return np.array(image.convert("LA").getchannel("L"), dtype=np.uint8)[..., None]
    if mode.startswith("I;16") and mode in SUPPORTED_MODES:
        return _scaled(np.asarray(image), 65535.0)
    if mode == "I":
        values = np.asarray(image).astype(np.int64)
        return _scaled(values, 65535.0 if values.max(initial=0) <= 65535 else 2.0**31 - 1)
    if mode == "F":
        values = np.asarray(image).astype(np.float64)
        if not np.isfinite(values).all():
            raise ValueError("float (mode F) image holds NaN or infinite values")
        peak = float(values.max(initial=0.0))
        top = next((s for s in _FLOAT_SCALES if peak <= s * (1 + 1 / 512)), None)
        if top is None:
            raise ValueError(f"float (mode F) image with values up to {peak:g} has no known brightness scale "
                             "(expected [0, 1], [0, 255] or [0, 65535])")
        return _scaled(values, top)
    if mode in ("P", "PA", "RGBa"):  # palette with transparency must go through RGBA (PIL warns otherwise)
        return np.array(image.convert("RGBA"), dtype=np.uint8)[..., :3].copy()
    if mode == "RGB":
        return np.array(image, dtype=np.uint8)
    if mode in ("RGBA", "RGBX"):
        return np.array(image, dtype=np.uint8)[..., :3].copy()
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return np.array(image.convert("RGB"), dtype=np.uint8)
    raise ValueError(f"unsupported image mode {mode!r} (supported: {', '.join(SUPPORTED_MODES)})")


def _cause(err: BaseException, path: str | os.PathLike[str]) -> str:
    """Why a file could not be read, in words (PIL's own messages say "cannot identify" for an empty file)."""
    if isinstance(err, UnidentifiedImageError):
        try:
            empty = os.path.getsize(path) == 0
        except OSError:
            empty = False
        return "empty file (0 bytes)" if empty else "not an image (PIL cannot identify its format)"
    if isinstance(err, FileNotFoundError):
        return "no such file"
    text = str(err) or type(err).__name__
    if "truncated" in text.lower():
        return f"truncated file ({text})"
    return text if isinstance(err, ValueError | OSError) else f"{type(err).__name__}: {text}"


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as uint8 ``(H, W, C)`` through :func:`image_to_array`: C = 1 for grey (1, L, LA,
    16-bit, 32-bit and float grey, scaled, not clipped), 3 for everything else (alpha dropped).

    Raises :class:`BadFileError` (a ``ValueError``) naming the file and the cause: missing, empty,
    not an image, truncated, an unsupported mode, or any other decoding error.
    """
    try:
        with Image.open(path) as image:
            image.load()
            return image_to_array(image)
    except MemoryError:  # the machine's state, not the file's fault
        raise
    except Exception as err:  # whatever a decoder raises on one file is that file's fault
        raise BadFileError(f"cannot read image {path}: {_cause(err, path)}", path) from err


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """An image file as an RGB PIL image: :func:`read_image`'s pixels (one conversion path for every
    mode, see :func:`image_to_array`), grey repeated to three channels. Raises
    :class:`BadFileError` (a ``ValueError``) naming the file if it cannot be read, so that a bad
    file in a dataset of thousands is found at once."""
    pixels = read_image(path)
    return Image.fromarray(np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels)


def check_image(path: str | os.PathLike[str]) -> None:
    """A cheap check of one image file, without decoding it: it exists, PIL identifies its format,
    its mode is supported, and ``verify()`` passes (for PNG that reads every chunk and checks its
    CRC, so a cut PNG is caught; a cut JPEG is only found when decoded). Raises
    :class:`BadFileError`. Measured 35–75 µs a file from the page cache (0.3–0.7 s for Imagenette's
    9,469 training images), so about a minute for ImageNet-1k's 1.28 M, more from a cold disk."""
    try:
        with Image.open(path) as image:
            if image.mode not in SUPPORTED_MODES:
                raise ValueError(f"unsupported image mode {image.mode!r}")
            image.verify()
    except MemoryError:  # the machine's state, not the file's fault
        raise
    except Exception as err:
        raise BadFileError(f"cannot read image {path}: {_cause(err, path)}", path) from err


def require_folder(path: str | os.PathLike[str], what: str = "folder") -> Path:
    """``path`` as a Path if it is a folder; otherwise a ``ValueError`` naming it and saying why."""
    folder = Path(path)
    if not folder.exists():
        raise ValueError(f"{what} {folder} does not exist")
    if not folder.is_dir():
        raise ValueError(f"{what} {folder} is a file, not a folder")
    return folder


def find_files(root: str | os.PathLike[str], extensions: Sequence[str], what: str = "data") -> list[Path]:
    """Every file under ``root`` whose name ends with one of ``extensions`` (case-insensitive), sorted
    by relative posix path: one order on every machine. Hidden files and folders (``.x``) are
    skipped (macOS ``._x.jpg`` resource forks are not images).

    Symbolic links are followed, but nothing is read twice: the folders reachable without links are
    walked first, then each linked folder whose real folder was not yet walked (so a link back to a
    parent, a loop, adds nothing and cannot recurse forever), and a file reached by several paths
    (links, hard links) is listed once, under its link-free path if it has one, else its first in
    sorted order. Folders that cannot be listed are left out with a :class:`BadFileWarning`.
    """
    top = require_folder(root, f"{what} folder")
    suffixes = tuple(e.lower() for e in extensions)
    folders_seen: set[tuple[int, int] | str] = set()
    kept: dict[tuple[int, int] | str, tuple[bool, str, Path]] = {}
    linked: list[Path] = []

    def identity(st: os.stat_result, path: str) -> tuple[int, int] | str:
        return (st.st_dev, st.st_ino) if st.st_ino else os.path.realpath(path)  # no inode numbers: real path

    def walk(start: Path, via_link: bool) -> None:
        stack = [start]
        while stack:
            folder = stack.pop()
            try:
                key = identity(os.stat(folder), str(folder))
                if key in folders_seen:
                    continue
                folders_seen.add(key)
                with os.scandir(folder) as listing:
                    entries = sorted(listing, key=lambda e: e.name)
            except OSError as err:
                warnings.warn(f"cannot list folder {folder}: {err}; its files are left out", BadFileWarning,
                              stacklevel=3)
                continue
            subfolders: list[Path] = []
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_dir():
                        (linked if entry.is_symlink() else subfolders).append(Path(entry.path))
                    elif entry.name.lower().endswith(suffixes) and entry.is_file():
                        path = Path(entry.path)
                        candidate = (via_link or entry.is_symlink(), path.relative_to(top).as_posix(), path)
                        file_key = identity(entry.stat(), entry.path)
                        if file_key not in kept or candidate < kept[file_key]:
                            kept[file_key] = candidate
                except OSError:  # a broken link or a file removed while listing
                    continue
            stack.extend(reversed(subfolders))

    walk(top, False)
    while linked:
        walk(linked.pop(0), True)
    return [path for _, _, path in sorted(kept.values(), key=lambda c: c[1])]


def find_images(root: str | os.PathLike[str], extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """All image files under ``root``, recursively, sorted by relative path (see :func:`find_files`:
    links followed, nothing listed twice). Extensions match case-insensitively (Imagenette's files
    are ``.JPEG``). A ``ValueError`` names ``root`` when it is missing, a file, or holds no images."""
    found = find_files(root, extensions, "image")
    if not found:
        raise ValueError(f"no images ({', '.join(e.lower() for e in extensions)}) found under {root}")
    return found


def flat_holdout(files: Sequence[T], split: str, root: str | os.PathLike[str] = "the flat folder",
                 every: int = FLAT_HOLDOUT_EVERY) -> tuple[list[T], str]:
    """The ``split`` side of a flat folder's deterministic hold-out, and a sentence saying so.

    ``files`` in sorted order; ``files[0]``, ``files[every]``, ``files[2 * every]``, … (at least one
    file, ``ceil(n / every)`` in all: 3 of Kodak's 24) are ``"val"``, the rest ``"train"``: the two
    are disjoint and fixed by the file names alone. Fewer than two files cannot be split.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if every < 2:
        raise ValueError(f"every must be at least 2, got {every}")
    n = len(files)
    if n < 2:
        raise ValueError(f"flat folder {root} has {n} image(s): at least 2 are needed to hold one out for "
                         "validation (give a separate validation folder instead)")
    held = (n + every - 1) // every
    chosen = [f for k, f in enumerate(files) if (k % every == 0) == (split == "val")]
    note = (f"flat folder {root}: {held} of {n} images held out for validation (every {every}th in sorted "
            f"order, from the first); {n - held} used for training")
    return chosen, note


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


def check_bad_files(policy: str) -> str:
    """``policy`` if it is one of :data:`BAD_FILE_POLICIES`, else a ``ValueError``."""
    if policy not in BAD_FILE_POLICIES:
        raise ValueError(f"bad_files must be one of {BAD_FILE_POLICIES}, got {policy!r}")
    return policy


def _refused(err: BadFileError) -> BadFileError:
    return BadFileError(f"{err} [bad_files='fail']", err.path)


class _BadFileMixin:
    """The ``bad_files`` policy of a dataset of ``files``.

    Which files turned out bad lives in shared memory, like the epoch: loader workers (persistent
    ones included) each hold a copy of the dataset, and the main process reads ``skipped`` from
    the one shared record. Each bad file is warned about once, whichever worker meets it.
    """

    root: Path
    files: tuple[Path, ...]

    def _init_bad_files(self, policy: str) -> None:
        self.bad_files = check_bad_files(policy)
        self._bad = torch.zeros(len(self.files), dtype=torch.bool).share_memory_()  # type: ignore[no-untyped-call]

    @property
    def skipped(self) -> int:
        """How many files have been skipped as bad so far, by this process and its loader workers (each
        distributed rank keeps its own count)."""
        return int(self._bad.sum().item())

    @property
    def skipped_files(self) -> list[Path]:
        """The files skipped as bad so far, in dataset order."""
        return [self.files[i] for i in torch.nonzero(self._bad).flatten().tolist()]

    def _load(self, index: int, load: Callable[[int], T]) -> T:
        """``load(index)``, or under ``"skip"`` ``load`` of the first index after it (cyclically)
        that loads: the same replacement whichever worker asks, as it depends on the files alone."""
        n = len(self.files)
        last: BadFileError | None = None
        for step in range(n):
            j = (index + step) % n
            if bool(self._bad[j]):
                continue
            try:
                return load(j)
            except BadFileError as err:
                if self.bad_files == "fail":
                    raise _refused(err) from err
                self._bad[j] = True
                last = err
                warnings.warn(f"skipping bad file ({self.skipped} of {n} skipped so far): {err}", BadFileWarning,
                              stacklevel=3)
        bad = self.skipped_files
        names = ", ".join(str(p) for p in bad[:3]) + (", …" if len(bad) > 3 else "")
        raise BadFileError(f"all {n} files of {self.root} are bad, so bad_files='skip' has nothing left to load "
                           f"({names})" + (f"; the last: {last}" if last else ""),
                           self.files[index])


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
        self._init_bad_files(bad_files)
        if bad_files == "fail":
            for path in self.files:
                try:
                    check_image(path)
                except BadFileError as err:
                    raise _refused(err) from err

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


def _base(dataset: Dataset[Any]) -> Dataset[Any]:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def skipped_count(dataset: Dataset[Any]) -> int:
    """How many bad files ``dataset`` (or the dataset under a ``Subset``) has skipped so far; 0 for a
    dataset without a ``bad_files`` policy (the bundled photos). Read it in the main process: the
    record is shared with loader workers, but not across distributed ranks (each has its own)."""
    return int(getattr(_base(dataset), "skipped", 0))


def split_note(dataset: Dataset[Any]) -> str:
    """What a dataset's split is, when worth saying: for a flat folder, e.g. ``"flat folder X: 3 of 24
    images held out for validation (…); 21 used for training"``; ``""`` otherwise."""
    return str(getattr(_base(dataset), "split_note", ""))


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


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """uint8 (H, W, 1|3) -> PNG (greyscale or RGB), written atomically."""
    import io

    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(buf, format="PNG")
    from ..models.pretrained import atomic_write

    atomic_write(Path(path), buf.getvalue())


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
