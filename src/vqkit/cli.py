"""The ``vqkit`` command. Each subcommand's options are generated from its frozen dataclass config."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def _tuple_of(item: type[Any]) -> Any:
    def parse(text: str) -> tuple[Any, ...]:
        try:
            return tuple(item(v) for v in text.split(",") if v.strip())
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected comma-separated {item.__name__}s, got {text!r}") from err

    parse.__name__ = f"{item.__name__} list"
    return parse


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type[Any], defaults: bool = True) -> None:
    """One ``--option`` per field of dataclass ``cls``, typed from its annotation.

    ``defaults=False`` leaves options that are not given out of the namespace, so that they do
    not override a preset or a config file.
    """
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        flag = "--" + field.name.replace("_", "-")
        default = field.default if defaults else argparse.SUPPRESS
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            parser.add_argument(flag, type=_tuple_of(item), default=default, metavar=f"{item.__name__.upper()},...")
        else:
            parser.add_argument(flag, type=kind, default=default, metavar=kind.__name__.upper())


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


def _train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, load_config, train

    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    cfg = load_config(args.preset, args.config, **overrides)
    summary = train(cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))
        print(f"run directory: {cfg.out} (final model in {Path(cfg.out) / 'final'})")
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

    from .train import PRESETS, TrainConfig

    tr = sub.add_parser("train", help="train a tokenizer (one process, or torchrun for DDP)",
                        description="Train an image tokenizer. Options override --config, which overrides --preset.")
    tr.add_argument("--preset", choices=sorted(PRESETS), default=None, help="the papers' or CPU-scale settings")
    tr.add_argument("--config", default=None, help="JSON or YAML file of options")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    add_dataclass_options(tr, TrainConfig, defaults=False)
    tr.set_defaults(func=_train)
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
