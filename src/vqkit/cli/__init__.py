"""The ``vqkit`` command: :mod:`.main` builds the parser from the configs' dataclasses; :mod:`.files` runs
``encode`` / ``decode`` / ``fit-prior`` over files and folders."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
