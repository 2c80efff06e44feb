"""What every evaluation writes the same way, whatever the modality: per-item records in ``metrics.json``
(one line per list, values rounded), item names, the code-usage plot and the terminal table."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset, Subset

from ..metrics import CodeUsage
from ..plotting import pyplot, save_figure

PER_ITEM_DECIMALS = 4
"""Per-item scores in ``metrics.json`` are rounded to this many decimals (1e-4 dB of PSNR: far below any
difference a report can resolve), about 8 characters each: 0.4 MB of PSNR for 50,000 images, plus their
names (~40 characters each for ImageNet's ``class/file.JPEG``, 2 MB)."""


def save_code_usage_plot(usage: CodeUsage, path: str | os.PathLike[str]) -> None:
    """PNG, one panel per stage: each used code's count, sorted descending, log y (a flat curve = even use)."""
    plt = pyplot()

    stages = usage.num_stages
    fig, axes = plt.subplots(1, stages, figsize=(4 * stages, 3), squeeze=False)
    result = usage.result()
    for s, ax in enumerate(axes[0]):
        counts = usage.counts(s).numpy()
        if counts.size:
            ax.bar(range(counts.size), counts, width=1.0, color="tab:blue")
            ax.set_yscale("log")
        ax.set_title(f"stage {s}: {result['usage_per_stage'][s]:.1%} of {usage.codebook_sizes[s]} codes used",
                     fontsize=9)
        ax.set_xlabel("code rank")
        ax.set_ylabel("count")
    fig.tight_layout()
    save_figure(fig, path)


def format_metrics(metrics: dict[str, Any], keys: Sequence[str]) -> str:
    """A short two-column table of the headline numbers (``{"unavailable": ...}`` shown as such)."""
    rows = []
    for key in keys:
        value = metrics.get(key)
        if isinstance(value, dict):
            text = ("unavailable" if "unavailable" in value
                    else ", ".join(f"{k} {v:.4g}" for k, v in value.items()))
        elif isinstance(value, float):
            text = f"{value:.4g}"
        else:
            text = str(value)
        rows.append(f"{key:<16}{text}")
    return "\n".join(rows)


def rounded(values: Iterable[float], decimals: int = PER_ITEM_DECIMALS) -> list[float | None]:
    """Per-item scores for JSON: rounded to ``decimals``; NaN and ±inf (a failed item, a bit-exact
    reconstruction) become None (null), which a report leaves out."""
    return [round(float(v), decimals) if math.isfinite(v) else None for v in values]


def item_ids(dataset: Dataset[Any]) -> list[str]:
    """A name for each item of an evaluation ``dataset``, in its (deterministic) order.

    An image folder's items are named by their file, relative to the folder (posix separators); the
    bundled photos' evaluation crops by photo and crop corner (``"coffee@y16x48"``); a ``Subset`` by
    the items it keeps; any other dataset by index (``"0"``, ``"1"``, ...). An item a ``bad_files="skip"``
    dataset replaced with the next readable file keeps the name of the file it stands for.
    """
    if isinstance(dataset, Subset):
        inner = item_ids(dataset.dataset)
        return [inner[i] for i in dataset.indices]
    files, root = getattr(dataset, "files", None), getattr(dataset, "root", None)
    if isinstance(files, tuple | list) and root is not None:  # ImageFolder, AudioFolder
        return [_relative(Path(f), Path(root)) for f in files]
    own = getattr(dataset, "item_ids", None)
    if callable(own):  # a dataset that names its own items (the bundled photos' crops)
        names: list[str] = own()
        return names
    return [str(i) for i in range(len(dataset))]  # type: ignore[arg-type]


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def per_item_record(ids: Sequence[str], scores: Mapping[str, Sequence[float]]) -> dict[str, list[Any]]:
    """``{"ids": [...], name: [rounded score per item], ...}``, the ``per_image`` / ``per_utterance``
    entry of ``metrics.json``; a score list whose length is not that of ``ids`` is an error."""
    record: dict[str, list[Any]] = {"ids": list(ids)}
    for name, values in scores.items():
        if len(values) != len(ids):
            raise ValueError(f"{len(values)} per-item {name} scores for {len(ids)} items")
        record[name] = rounded(values)
    return record


def metrics_json(record: dict[str, Any]) -> bytes:
    """``record`` as indented JSON, except that the lists of per-item values (under ``per_image`` /
    ``per_utterance``) take one line each rather than one line per item: the file stays readable and
    small."""
    placeholders: dict[str, str] = {}

    def swap(value: Any, inside: bool) -> Any:
        if isinstance(value, dict):
            return {k: swap(v, inside or k in ("per_image", "per_utterance")) for k, v in value.items()}
        if inside and isinstance(value, list):
            key = f"@@per-item-{len(placeholders)}@@"
            placeholders[key] = json.dumps(value)
            return key
        return value

    text = json.dumps(swap(record, False), indent=2)
    for key, line in placeholders.items():
        text = text.replace(f'"{key}"', line, 1)
    return (text + "\n").encode()


def finite(value: Any) -> Any:
    """JSON has no NaN/inf: such a value (a mean over failed items, a bit-exact PSNR) is stored as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


__all__ = ["PER_ITEM_DECIMALS", "finite", "format_metrics", "item_ids", "metrics_json", "per_item_record",
           "rounded", "save_code_usage_plot"]
