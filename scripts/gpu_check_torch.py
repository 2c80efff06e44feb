#!/usr/bin/env python
"""The parts of ``scripts/gpu_check.py`` that import torch, each run as a child process of it.

The supervisor never imports torch or touches the GPU itself, so a hung kernel or a crash costs one
phase, never the report. Each subcommand writes its JSON result atomically, and the ``exact`` one
after every step, so a child killed at its time budget still leaves what it measured.

    python scripts/gpu_check_torch.py env --out env.json
    python scripts/gpu_check_torch.py exact --device cuda --out exact.json [--small]
    python scripts/gpu_check_torch.py plot --series runs.json --out usage.png --title "..."
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


def write_json(path: Path, data: Any) -> None:
    """Atomically: a reader (or a kill) never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _version(dist: str) -> str | None:
    try:
        return str(importlib.metadata.version(dist))
    except importlib.metadata.PackageNotFoundError:
        return None


# what vqkit and its training runs import (pyproject's dependencies and the audio extra), and the benchmarks' vqp
MODULES = {"numpy": "numpy", "PIL": "pillow", "safetensors": "safetensors", "einops": "einops",
           "skimage": "scikit-image", "matplotlib": "matplotlib", "tqdm": "tqdm", "constriction": "constriction",
           "pydantic": "pydantic", "annotated_types": "annotated-types", "soundfile": "soundfile", "soxr": "soxr",
           "pesq": "pesq", "pystoi": "pystoi", "vector_quantize_pytorch": "vector-quantize-pytorch"}


def environment(device: str, out: Path) -> None:
    """GPU name and memory, torch / CUDA / cuDNN versions, vqkit and vqp versions, matmul settings, presets,
    and which of vqkit's dependencies are missing (written before vqkit is imported: an import error is the
    commonest reason for a GPU check to fail on a fresh machine)."""
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(), "python_path": sys.executable, "torch": torch.__version__,
        "cuda_build": torch.version.cuda, "vqp": _version("vector-quantize-pytorch"), "cpu_count": os.cpu_count(),
        "missing_modules": [dist for mod, dist in MODULES.items() if importlib.util.find_spec(mod) is None],
        "cuda_available": torch.cuda.is_available(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cuda_matmul_allow_bf16_reduced_precision_reduction":
            torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction,
    }
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device_name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count,
                    cudnn=torch.backends.cudnn.version(),  # type: ignore[no-untyped-call]
                    device_count=torch.cuda.device_count())
    else:
        info.update(device_name=f"CPU ({platform.processor() or platform.machine()})",
                    cpu_capability=torch.backends.cpu.get_cpu_capability())
    if shutil.which("nvidia-smi"):
        query = "--query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit"
        done = subprocess.run(["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=20, check=False)
        info["nvidia_smi"] = done.stdout.strip() or done.stderr.strip()
    write_json(out, info)
    import vqkit
    from vqkit import cli

    info.update(vqkit=vqkit.__version__, vqkit_path=str(Path(vqkit.__file__).parent))
    help_text = io.StringIO()
    with contextlib.redirect_stdout(help_text), contextlib.suppress(SystemExit):
        cli.main(["train", "--help"])  # the CLI's own list of presets, in this process: no second start-up
    if found := re.search(r"--preset \{([^}]*)\}", help_text.getvalue()):
        info["presets"] = found.group(1).split(",")
    write_json(out, info)


def plot(series_path: Path, out: Path, title: str) -> None:
    """Codebook usage (validation, and the training batches) and PSNR against minutes, one line per run."""
    from vqkit.plotting import pyplot, save_figure

    runs: dict[str, dict[str, list[float]]] = json.loads(series_path.read_text())
    plt = pyplot()
    fig, (ax_u, ax_p) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (name, s) in enumerate(runs.items()):
        color = f"C{i}"
        if s.get("val_min"):
            ax_u.plot(s["val_min"], [100 * u for u in s["val_usage"]], "o-", color=color, label=f"{name} (val)")
        if s.get("train_min"):
            ax_u.plot(s["train_min"], [100 * u for u in s["train_usage"]], "--", color=color, alpha=0.6,
                      label=f"{name} (train batch)")
        if s.get("psnr_min"):
            ax_p.plot(s["psnr_min"], s["psnr"], "o-", color=color, label=name)
    ax_u.set(xlabel="minutes since launch", ylabel="codes used (%)", title="codebook usage")
    ax_u.set_ylim(bottom=0)
    ax_p.set(xlabel="minutes since launch", ylabel="PSNR (dB)", title="validation PSNR")
    for ax in (ax_u, ax_p):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    env = sub.add_parser("env")
    env.add_argument("--device", default="cuda")
    env.add_argument("--out", type=Path, required=True)
    exact = sub.add_parser("exact")
    exact.add_argument("--device", default="cuda")
    exact.add_argument("--out", type=Path, required=True)
    exact.add_argument("--small", action="store_true", help="dry-run sizes (CPU, seconds)")
    exact.add_argument("--budget", type=float, default=60.0, help="seconds: later timings are skipped past it")
    pl = sub.add_parser("plot")
    pl.add_argument("--series", type=Path, required=True)
    pl.add_argument("--out", type=Path, required=True)
    pl.add_argument("--title", default="")
    args = p.parse_args(argv)
    if args.command == "env":
        environment(args.device, args.out)
    elif args.command == "exact":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from gpu_check_exact import run_exactness

        run_exactness(args.device, args.small, args.budget, lambda data: write_json(args.out, data))
    else:
        plot(args.series, args.out, args.title)


if __name__ == "__main__":
    main()
