"""Headless matplotlib for the PNGs of ``vqkit eval``, ``vqkit compare`` and the toy experiment.

Imported on first use only: matplotlib costs about a second to import, and quantizers never plot.
"""

from __future__ import annotations

from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
