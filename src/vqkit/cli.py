"""The ``vqkit`` command. Each subcommand's options are generated from its frozen dataclass config."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type[Any]) -> None:
    """One ``--option`` per field of dataclass ``cls``, typed from its annotation."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        flag = "--" + field.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default)
        else:
            parser.add_argument(flag, type=kind, default=field.default, metavar=kind.__name__.upper())


def dataclass_from_args(cls: type[T], args: argparse.Namespace) -> T:
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})  # type: ignore[arg-type]


def _demo(args: argparse.Namespace) -> int:
    from .experiments.demo import DemoConfig, format_table, run_demo

    cfg = dataclass_from_args(DemoConfig, args)
    print(f"vqkit demo: every quantizer on 4x4 patches of scikit-image's photos, {cfg.steps} steps each", flush=True)
    results = run_demo(cfg)
    table = format_table(results)
    print(table)
    if args.out is not None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "demo.md").write_text(table + "\n")
        record = {"config": dataclasses.asdict(cfg), "results": [dataclasses.asdict(r) for r in results]}
        (out / "demo.json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {out / 'demo.md'} and {out / 'demo.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .experiments.demo import DemoConfig

    parser = argparse.ArgumentParser(prog="vqkit", description="Discrete tokenizers for neural compression.")
    parser.add_argument("--version", action="version", version=f"vqkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fit every quantizer to real image patches and print a table")
    add_dataclass_options(demo, DemoConfig)
    demo.add_argument("--out", default=None, help="folder for demo.md and demo.json")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ValueError as err:
        print(f"vqkit: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
