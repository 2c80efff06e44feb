"""What every sweep report shares: paths stored in ``results.json`` and the header of ``report.md``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .cells import _num


def resolve_path(base: Path, value: Any) -> Path | None:
    """A path stored in ``results.json``: relative to ``base`` (the report's folder, as ``vqkit compare``
    writes it) or absolute (results.json files written before paths were relative); None when absent."""
    if not value:
        return None
    path = Path(str(value))
    return path if path.is_absolute() else Path(base).resolve() / path  # absolute: resolving twice is a no-op


def with_resolved_paths(base: Path, configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``configs`` whose ``run_dir`` and ``eval_dir`` are resolved against ``base``."""
    resolved = []
    for config in configs:
        copy = dict(config)
        for key in ("run_dir", "eval_dir"):
            path = resolve_path(base, copy.get(key))
            if path is not None:
                copy[key] = str(path)
        resolved.append(copy)
    return resolved


def _minutes(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.0f} s ({seconds / 60:.1f} min)"


def header(results: dict[str, Any], modality_lines: list[str]) -> list[str]:
    """The top of ``report.md``: the sweep's settings, the modality's own lines (image size and evaluation
    set, or training crops), and the wall and training times."""
    wall, train = _num(results.get("wall_seconds")), _num(results.get("train_seconds_total"))
    return [
        f"# {results.get('title') or results.get('preset', 'sweep')}",
        "",
        f"- preset: {results.get('preset', 'n/a')}",
        f"- data: {results.get('data', 'n/a')}",
        f"- scale: {results.get('scale', 'n/a')}",
        f"- steps: {results.get('steps', 'n/a')}",
        f"- seed: {results.get('seed', 'n/a')}",
        *modality_lines,
        f"- wall time of this command: {_minutes(wall)} (a resumed sweep counts only its last run)",
        f"- training time, all configurations: {_minutes(train)}",
        "",
    ]


__all__ = ["header", "resolve_path", "with_resolved_paths"]
