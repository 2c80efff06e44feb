"""Headless matplotlib for the PNGs of ``vqkit eval``, ``vqkit compare`` and the toy experiment.

Imported on first use only: matplotlib costs about a second to import, and quantizers never plot.
Besides :func:`pyplot`: :func:`save_figure` (a PNG written atomically), :func:`label_bars` (value
labels at the end of horizontal bars that stay inside the axes) and :func:`text_overflow` (which
texts of a figure leave their axes, or overlap each other: what a test of a plot checks).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .storage import atomic_write


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 100, close: bool = True) -> None:
    """Render ``fig`` to PNG in memory, then write it to ``path`` atomically (a reader never sees half a PNG).

    The PNG is cropped to what the figure draws (``bbox_inches="tight"``): a title or legend wider
    than the figure is kept whole rather than cut at its edge.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.1)
    if close:
        pyplot().close(fig)
    atomic_write(Path(path), buffer.getvalue())


def _renderer(fig: Any, draw: bool = True) -> Any:
    if draw:
        fig.canvas.draw()
    return fig.canvas.get_renderer()


def label_bars(ax: Any, values: Sequence[float | None], labels: Sequence[str], *, errors: Sequence[float] | None = None,
               extend: bool = True, fontsize: float = 7, pad_px: float = 6) -> list[Any]:
    """Write ``labels[i]`` after the end of horizontal bar ``i`` (at y = i), every label inside the axes.

    A label starts after the bar (and its error bar, ``errors``). With ``extend`` the x-limit grows
    until every label fits; without it (an axis with a fixed scale, e.g. STOI's 0 to 1) a label
    that would leave the axes goes inside its bar, right-aligned, in white. Call it after
    ``tight_layout`` (the axes' width in pixels decides what fits). Returns the text artists.
    """
    errs = list(errors) if errors is not None else [0.0] * len(values)
    texts = [ax.text((v or 0.0) + e, i, f" {label}", va="center", ha="left", fontsize=fontsize)
             for i, (v, e, label) in enumerate(zip(values, errs, labels, strict=True))]
    if not texts:
        return texts
    fig = ax.figure
    for _ in range(4):  # the tick labels of a new limit can move the axes a little: check again
        renderer = _renderer(fig, draw=False)  # text extents need no drawing: much faster
        box = ax.get_window_extent(renderer)
        left, right = ax.get_xlim()
        overflow = [t for t in texts if t.get_window_extent(renderer).x1 > box.x1 - pad_px / 2]
        if not overflow:
            return texts
        if not extend:
            break
        needed = right
        for t in texts:
            width = t.get_window_extent(renderer).width
            room = box.width - width - pad_px
            if room <= box.width * 0.1:  # a label wider than the axes: give it most of the width anyway
                room = box.width * 0.1
            start = t.get_position()[0]
            needed = max(needed, left + (start - left) * box.width / room)
        ax.set_xlim(left, needed)
    renderer = _renderer(fig, draw=False)
    box = ax.get_window_extent(renderer)
    for t, v in zip(texts, values, strict=True):
        if t.get_window_extent(renderer).x1 > box.x1 - pad_px / 2:
            t.set(x=min(v or 0.0, ax.get_xlim()[1]), ha="right", color="white", text=t.get_text().strip() + " ")
    return texts


def text_overflow(fig: Any) -> list[str]:
    """Texts of ``fig`` (axes texts, tick labels, titles, legends) outside the figure, axes texts outside
    their axes, and axes texts overlapping one another; [] when the figure is clean."""
    renderer = _renderer(fig)
    fig_box = fig.bbox
    problems = []
    for ax in fig.axes:
        ax_box = ax.get_window_extent(renderer)
        boxes = []
        for t in ax.texts:
            if not t.get_visible() or not t.get_text().strip():
                continue
            box = t.get_window_extent(renderer)
            boxes.append((t.get_text().strip(), box))
            if box.x0 < ax_box.x0 - 1 or box.x1 > ax_box.x1 + 1 or box.y0 < ax_box.y0 - 1 or box.y1 > ax_box.y1 + 1:
                problems.append(f"{t.get_text().strip()!r} leaves its axes")
        for i, (first, first_box) in enumerate(boxes):
            for second, second_box in boxes[i + 1:]:
                if first_box.overlaps(second_box):
                    problems.append(f"{first!r} overlaps {second!r}")
        tight = ax.get_tightbbox(renderer)  # everything the axes draw: ticks, labels, title, legend, texts
        if tight is not None and (tight.x0 < fig_box.x0 - 1 or tight.x1 > fig_box.x1 + 1
                                  or tight.y0 < fig_box.y0 - 1 or tight.y1 > fig_box.y1 + 1):
            problems.append(f"the axes {ax.get_title()!r} leave the figure")
    for t in fig.texts:  # suptitle and figure notes
        box = t.get_window_extent(renderer)
        if t.get_text() and (box.x0 < fig_box.x0 - 1 or box.x1 > fig_box.x1 + 1 or box.y0 < fig_box.y0 - 1
                             or box.y1 > fig_box.y1 + 1):
            problems.append(f"{t.get_text()!r} leaves the figure")
    return problems


__all__ = ["label_bars", "pyplot", "save_figure", "text_overflow"]
