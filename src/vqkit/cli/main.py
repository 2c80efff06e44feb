"""The ``vqkit`` command. Each subcommand's options are generated from its frozen dataclass config."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import json
import os
import sys
import textwrap
import typing
from collections.abc import Collection, Sequence
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


def field_docs(cls: type[Any]) -> dict[str, str]:
    """The docstring written under each field of dataclass ``cls`` (the CLI's help text)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):  # source unavailable (e.g. frozen app): no help text
        return {}
    docs: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node, following in itertools.pairwise(body):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type[Any], defaults: bool = True,
                          shown: dict[str, Any] | None = None) -> None:
    """One ``--option`` per field of dataclass ``cls``, typed from its annotation.

    ``defaults=False`` leaves options that are not given out of the namespace, so that they do
    not override a preset or a config file; ``shown`` replaces the defaults printed by ``--help``
    (a preset's values). Types and ranges are checked by the dataclass itself (vqkit.validation).
    """
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    for field in dataclasses.fields(cls):
        value = (shown or {}).get(field.name, field.default)
        _add_option(parser, field.name, (), hints[field.name], field.default if defaults else argparse.SUPPRESS,
                    value, docs.get(field.name, ""))


def add_train_options(parser: argparse.ArgumentParser, shown: dict[str, Any] | None = None) -> None:
    """``vqkit train``'s options, generated from the config's sections (every modality's crop and objective,
    every arch's options); old names are aliases (``--max-train-images``). Options not given stay out of
    the namespace, so that they do not override a preset or a config file."""
    from ..train.convert import options

    docs: dict[type[Any], dict[str, str]] = {}
    groups: dict[str, Any] = {}
    found = options().values()
    for opt in found:
        if opt.cls not in docs:
            docs[opt.cls] = {k: v for base in reversed(opt.cls.__mro__) for k, v in field_docs(base).items()}
        section = opt.path.split(".")[0]
        if section not in groups:
            groups[section] = parser.add_argument_group(f"{section} section", _section_help(section, found))
        value = (shown or {}).get(opt.name, opt.default)
        _add_option(groups[section], opt.name, opt.aliases, opt.annotation, argparse.SUPPRESS, value,
                    docs[opt.cls].get(opt.field, ""))


def _section_help(section: str, found: Collection[Any]) -> str | None:
    """Which options of ``section`` belong to some modalities or archs only, e.g. 'audio: --segment'."""
    modalities = {m for opt in found if opt.kind == "modality" for m in opt.owners}
    owned: dict[str, list[str]] = {}
    for opt in found:
        if opt.path.split(".")[0] == section and opt.owners and not (opt.kind == "modality"
                                                                     and set(opt.owners) == modalities):
            owned.setdefault(", ".join(opt.owners), []).append("--" + opt.name.replace("_", "-"))
    if not owned:
        return None
    parts = "; ".join(f"{who}: {' '.join(flags)}" for who, flags in owned.items())
    return f"options of some modalities or archs only, refused for the others ({parts})"


def _add_option(parser: Any, name: str, aliases: Sequence[str], kind: Any, default: Any,
                value: Any, doc: str) -> None:
    flags = ["--" + n.replace("_", "-") for n in (name, *aliases)]
    if isinstance(value, tuple | list):
        text = ",".join(map(str, value))
    else:
        text = json.dumps(value) if isinstance(value, dict) else value
    help_text = f"{doc} (default: {text})".strip()
    if kind is bool:
        parser.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, default=default, help=help_text)
    elif typing.get_origin(kind) is typing.Literal:
        choices = typing.get_args(kind)
        parser.add_argument(*flags, dest=name, type=type(choices[0]), choices=choices, default=default,
                            help=help_text)
    elif typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        if typing.get_origin(item) is typing.Literal:  # e.g. rd's --priors: names, checked by the dataclass
            item, help_text = str, f"{help_text} (from: {', '.join(map(str, typing.get_args(item)))})"
        parser.add_argument(*flags, dest=name, type=_tuple_of(item), default=default,
                            metavar=f"{item.__name__.upper()},...", help=help_text)
    else:
        parser.add_argument(*flags, dest=name, type=kind, default=default, metavar=kind.__name__.upper(),
                            help=help_text)


def dataclass_from_args(cls: type[T], args: argparse.Namespace) -> T:
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})  # type: ignore[arg-type]


def _demo(args: argparse.Namespace) -> int:
    from ..experiments.demo import DemoConfig, format_table, run_demo
    from ..storage import atomic_write

    cfg = dataclass_from_args(DemoConfig, args)
    print(f"vqkit demo: every quantizer on 4x4 patches of scikit-image's photos, {cfg.steps} steps each", flush=True)
    results = run_demo(cfg)
    table = format_table(results)
    print(table)
    if args.out is not None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "demo.md", (table + "\n").encode())
        record = {"config": dataclasses.asdict(cfg), "results": [dataclasses.asdict(r) for r in results]}
        atomic_write(out / "demo.json", (json.dumps(record, indent=2) + "\n").encode())
        print(f"wrote {out / 'demo.md'} and {out / 'demo.json'}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from ..train import load_config, train
    from ..train.convert import options

    overrides = {name: getattr(args, name) for name in options() if hasattr(args, name)}
    cfg = load_config(args.preset, args.config, **overrides)
    summary = train(cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))
        print(f"run directory: {cfg.run.out} (final model in {Path(cfg.run.out) / 'final'})")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from ..modalities import modality_of
    from ..runs import evaluate_run, run_config

    cfg = run_config(args.run_dir)
    modality = modality_of(cfg.model.arch)
    out = Path(args.out) if args.out else Path(args.run_dir) / f"eval-{args.split}"
    if args.data is None:
        print(f"vqkit eval: --data not given, using the run's {args.split} data: {modality.eval_data(cfg, args.split)}",
              flush=True)
    metrics = evaluate_run(args.run_dir, args.data, args.split, out, batch_size=args.batch_size,
                           max_items=args.max_images, device=args.device)
    print(modality.format_metrics(metrics))
    print(f"wrote {out / 'metrics.json'} and the evaluation's pictures in {out}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from ..experiments.compare import CompareConfig, run_compare

    cfg = dataclass_from_args(CompareConfig, args)
    results = run_compare(args.preset, cfg)
    print(f"wrote {Path(cfg.out) / 'report.md'} ({len(results.get('configs', [])) or 'toy'} configurations)")
    return 0


def _encode(args: argparse.Namespace) -> int:
    from .files import run_encode

    return run_encode(args.inputs, args.out, args.model, args.prior, args.check, args.device, _existing(args),
                      args.stages, args.quality)


def _decode(args: argparse.Namespace) -> int:
    from .files import run_decode

    return run_decode(args.inputs, args.out, args.model, args.device, _existing(args), args.stages)


def _truncate(args: argparse.Namespace) -> int:
    from .files import run_truncate

    return run_truncate(args.inputs, args.out, args.stages, _existing(args))


def _existing(args: argparse.Namespace) -> Any:
    return "overwrite" if args.overwrite else "skip" if args.skip_existing else "refuse"


def _info(args: argparse.Namespace) -> int:
    from .info import run_info

    return run_info(args.files, args.model, args.json)


def _output_policy(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--overwrite", action="store_true", help="replace output files that exist already")
    group.add_argument("--skip-existing", action="store_true", help="keep output files that exist already "
                       "(default: refuse to start when any exists)")


def _fit_prior(args: argparse.Namespace) -> int:
    from .files import run_fit_prior

    path = run_fit_prior(args.run_dir, args.data, args.max_images, args.device, args.learned)
    print(f"wrote {path}")
    return 0


def _rd(args: argparse.Namespace) -> int:
    from ..experiments.rd import RDConfig, run_rd

    cfg = dataclass_from_args(RDConfig, args)
    result = run_rd(cfg, args.model or ["default"])
    for b in result["bd"]:
        rate = "n/a (one operating point or no shared PSNR range)" if b["bd_rate"] is None else \
            f"BD-rate {b['bd_rate']:+.1%}, BD-PSNR {b['bd_psnr']:+.2f} dB"
        print(f"{b['model']} ({b['prior']} prior, {b['points']} point(s)) vs {b['against']}: {rate}")
    print(f"wrote {Path(cfg.out) / 'report.md'}, {Path(cfg.out) / 'rd.json'} and {Path(cfg.out) / 'rd.png'}")
    return 0


def _add_codec_commands(sub: Any) -> None:
    from ..codec import PRIOR_NAMES
    from ..models.pretrained import QUALITY

    model_help = ("a shipped model ('default', 'codec', 'codec-hi'), a save_pretrained folder or a `vqkit train` "
                  "run directory")
    device_help = "'cpu' or 'cuda[:N]'"
    enc = sub.add_parser("encode", help="images (PNG/JPEG/...) or speech (wav/flac) -> .vqt token files",
                         description="Encode each image or utterance, whole, into one .vqt file: tokens entropy "
                                     "coded with the model's prior, its original size stored.")
    enc.add_argument("inputs", nargs="+", metavar="INPUT", help="files or folders (searched recursively)")
    enc.add_argument("-o", "--out", required=True, help="output folder (relative paths of folder inputs kept)")
    enc.add_argument("--model", default=None,
                     help=model_help + "; default: the shipped codec family with --quality, else 'default'")
    enc.add_argument("--quality", type=int, default=None, metavar="Q",
                     help="rate control: without --model, the shipped codec family's Q-th operating point, "
                          f"Q = 1 (smallest files) .. {len(QUALITY)} (best pictures; the codec model card lists the "
                          "rates); with --model, keep the first Q stages of that multi-stage model")
    enc.add_argument("--prior", choices=PRIOR_NAMES, default=None,
                     help="entropy model: uniform (nominal rate), static (per-stage histograms), context (counts in "
                          "context), learned (a network per digit; `fit-prior --learned`); default: the best the "
                          "model has (learned, else context, else uniform)")
    enc.add_argument("--check", action="store_true",
                     help="decode each file again and print its fidelity (PSNR; SI-SDR and mel distance for speech)")
    enc.add_argument("--stages", type=int, default=None, metavar="K",
                     help="a model of several stages (RFSQ, RVQ): keep only the first K (smaller file, coarser)")
    enc.add_argument("--device", default="cpu", help=device_help)
    _output_policy(enc)
    enc.set_defaults(func=_encode)
    dec = sub.add_parser("decode", help=".vqt token files -> PNG images (WAV for a speech model)",
                         description="Decode .vqt files with the model that encoded them (checked by model id).")
    dec.add_argument("inputs", nargs="+", metavar="FILE", help=".vqt files or folders of them")
    dec.add_argument("-o", "--out", required=True, help="output folder for the PNGs (WAVs)")
    dec.add_argument("--model", default=None,
                     help=model_help + "; default: the shipped model ('default' or 'codec') each file names")
    dec.add_argument("--stages", type=int, default=None, metavar="K",
                     help="decode only the first K stages of a layered file (the coarser picture)")
    dec.add_argument("--device", default="cpu", help=device_help)
    _output_policy(dec)
    dec.set_defaults(func=_decode)
    cut = sub.add_parser("truncate", help="cut layered .vqt files to their first K stages (no model needed)",
                         description="An embedded bitstream: a file of a multi-stage model (RFSQ, RVQ) codes each "
                                     "stage in its own layer, so its first K stages are a smaller, valid file "
                                     "that decodes to the K-stage reconstruction.")
    cut.add_argument("inputs", nargs="+", metavar="FILE", help=".vqt files or folders of them")
    cut.add_argument("-o", "--out", required=True, help="output folder for the cut files")
    cut.add_argument("--stages", type=int, required=True, metavar="K", help="stages to keep (1..the file's)")
    _output_policy(cut)
    cut.set_defaults(func=_truncate)
    info = sub.add_parser("info", help="what a .vqt file holds: modality, size, tokens, prior, model id, rate",
                          description="Read .vqt headers (no model needed); with --model, also say whether that "
                                      "model decodes each file.")
    info.add_argument("files", nargs="+", metavar="FILE", help=".vqt files")
    info.add_argument("--model", default=None, help=model_help)
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(func=_info)
    fit = sub.add_parser("fit-prior", help="fit a model's static and context prior tables on training images",
                         description="Count the tokens of whole training images; writes prior.safetensors "
                                     "beside the model (this changes the model id of files encoded after).")
    fit.add_argument("run_dir", metavar="RUN_DIR", help="a `vqkit train` run directory or a saved model folder")
    fit.add_argument("--data", required=True,
                     help="image folder, or wav/flac folder for a speech model (its train/ split if it has one)")
    fit.add_argument("--max-images", type=int, default=2000, help="images to count, evenly spread (0 = all)")
    fit.add_argument("--learned", action="store_true",
                     help="also train the learned prior (FSQ/LFQ/BSQ/RFSQ models; a minute or two on a CPU): "
                          "`vqkit encode --prior learned`")
    fit.add_argument("--device", default="cpu", help=device_help)
    fit.set_defaults(func=_fit_prior)

    from ..experiments.rd import RDConfig

    rd = sub.add_parser("rd", help="rate-distortion of tokenizers beside JPEG, WebP and AVIF on the same images",
                        description="Every tokenizer (four rates each; every stage cut of a multi-stage model) and "
                                    "every classical codec at a sweep of qualities, on the same images in the same "
                                    "run, with Bjøntegaard deltas: report.md, rd.json, rd.png.")
    rd.add_argument("--model", action="append",
                    help=f"{model_help}, or 'family' (the shipped codec family's --quality ladder as one curve); "
                         "repeat for several (default: default)")
    add_dataclass_options(rd, RDConfig)
    rd.set_defaults(func=_rd)


def _preset_in(argv: Sequence[str]) -> str | None:
    """The value of ``--preset`` in a ``train`` command line, so that ``--help`` shows its defaults."""
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--preset="):
            return arg.split("=", 1)[1]
    return None


def build_parser(preset: str | None = None) -> argparse.ArgumentParser:
    from .. import __version__
    from ..experiments.demo import DemoConfig

    parser = argparse.ArgumentParser(prog="vqkit", description="Discrete tokenizers for neural compression.")
    parser.add_argument("--version", action="version", version=f"vqkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fit every quantizer to real image patches and print a table")
    add_dataclass_options(demo, DemoConfig)
    demo.add_argument("--out", default=None, help="folder for demo.md and demo.json")
    demo.set_defaults(func=_demo)

    from ..train import PRESETS

    shown = PRESETS.get(preset or "")
    whose = f"preset {preset}'s values" if shown else "the built-in values; `--preset NAME --help` shows a preset's"
    tr = sub.add_parser("train", help="train a tokenizer (one process, or torchrun for DDP)",
                        description="Train an image or speech tokenizer (speech: --arch speech or --preset "
                                    "speech-cpu). Options override --config, which overrides --preset. "
                                    f"Defaults shown: {whose}.")
    tr.add_argument("--preset", choices=sorted(PRESETS), default=None, help="the papers' or CPU-scale settings")
    tr.add_argument("--config", default=None, help="JSON or YAML file of options")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    add_train_options(tr, shown)
    tr.set_defaults(func=_train)

    from ..experiments.compare import CompareConfig
    from ..experiments.presets import PRESETS as SWEEPS
    from ..experiments.presets import TOY_PRESET

    cmp = sub.add_parser("compare", help="train and evaluate every configuration of a preset; write a report",
                         description="Same data, steps, seed and model for every configuration; a killed sweep "
                                     "resumes with finished configurations skipped.")
    cmp.add_argument("preset", choices=sorted([*SWEEPS, TOY_PRESET]))
    add_dataclass_options(cmp, CompareConfig)
    cmp.set_defaults(func=_compare)

    ev = sub.add_parser("eval", help="evaluate a trained tokenizer on a split: metrics.json and plots",
                        description="Evaluate RUN_DIR/final on a split of --data: PSNR, SSIM, L1, MSE, LPIPS and "
                                    "rFID (when their weights are local), codebook usage, perplexity, bits and "
                                    "real file bits; for a speech run, every utterance under --data: PESQ-WB, "
                                    "STOI/ESTOI, mel distance, SI-SDR, DNSMOS, usage, nominal and real kbps.")
    ev.add_argument("run_dir", metavar="RUN_DIR", help="a `vqkit train` run directory (config.json, final/)")
    ev.add_argument("--data", default=None, help="image folder (ImageNet layout or flat) or 'photos'; for a "
                                                 "speech run, the folder of test utterances (wav/flac); default: "
                                                 "the run's own validation (or training, with --split train) data")
    ev.add_argument("--split", choices=("train", "val"), default="val")
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--max-images", type=int, default=0,
                    help="evaluate at most this many images (utterances for speech; 0 = all)")
    ev.add_argument("--out", default=None, help="output folder (default RUN_DIR/eval-SPLIT)")
    ev.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda[:N]' (checked against this machine)")
    ev.set_defaults(func=_eval)
    _add_codec_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_preset_in(argv)).parse_args(argv)
    from ..validation import flushed_subnormals

    try:
        with flushed_subnormals():  # opened before torch's worker threads exist, so that they flush too
            return int(args.func(args))
    except ValueError as err:  # bad configs, inputs and files: vqkit's own errors are ValueErrors
        print(f"vqkit: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a folder that cannot be written, a full disk, a file that vanished
        print(f"vqkit: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vqkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
