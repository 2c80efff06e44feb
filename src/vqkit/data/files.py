"""The files behind a folder dataset, shared by the image and speech datasets: which files, and what a bad one does.

Why one place: images and audio must agree on what a dataset holds and how it behaves over a long run.

- **Discovery.** :func:`find_files` lists a folder in one order on every machine, following links
  without reading a file twice or looping; :func:`spread` keeps a subset that still covers every class.
- **Disjoint splits.** A flat folder (no ``train/``/``val/``) is split by a fixed hold-out
  (:func:`flat_holdout`): every :data:`FLAT_HOLDOUT_EVERY`-th image validates and is never trained on.
- **Bad files.** Datasets take ``bad_files``: ``"skip"`` (default) replaces an unreadable file by the
  next one that loads, warns once per file (:class:`BadFileWarning`) and counts it (``dataset.skipped``,
  :func:`skipped_count`), so one corrupt file does not end a week-long run; ``"fail"`` raises a
  :class:`BadFileError` naming the first bad file.
- **State shared with loader workers.** The epoch (:class:`_EpochMixin`) and the record of bad files
  live in shared memory, so persistent workers see ``set_epoch`` and the main process sees every skip.
"""

from __future__ import annotations

import operator
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
T = TypeVar("T")
SPLITS = ("train", "val")
BAD_FILE_POLICIES = ("skip", "fail")
"""Values of ``bad_files``: ``"skip"`` a bad file (replace it, warn, count) or ``"fail"`` on it."""
FLAT_HOLDOUT_EVERY = 10
"""In a flat folder, sorted images 0, 10, 20, … are the validation split and never trained on."""


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

    def _init_bad_files(self, policy: str, check: Callable[[Path], None]) -> None:
        """Set the policy; under 'fail', ``check`` (a header check) every file now, refusing the first bad one."""
        self.bad_files = check_bad_files(policy)
        self._bad = torch.zeros(len(self.files), dtype=torch.bool).share_memory_()  # type: ignore[no-untyped-call]
        if policy == "fail":
            for path in self.files:
                try:
                    check(path)
                except BadFileError as err:
                    raise _refused(err) from err

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
