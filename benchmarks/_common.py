"""What the benchmark scripts share: the optional vqp import, the device check, table cells.

Imported as ``_common`` (a script's own folder is first on ``sys.path``); not part of the package.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

import torch


def load_vqp(skip: bool) -> ModuleType | None:
    """vector-quantize-pytorch (the ``bench`` extra), or None with a note when skipped or missing."""
    if skip:
        return None
    try:
        return importlib.import_module("vector_quantize_pytorch")
    except ImportError as err:
        print(f"NOTE: vector-quantize-pytorch is not importable ({err}); vqkit rows only "
              "(pip install -e '.[bench]' to compare).", file=sys.stderr)
        return None


def check_device(parser: argparse.ArgumentParser, device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)
