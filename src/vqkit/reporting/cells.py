"""A sweep config's metrics as markdown table cells, shared by the image and speech reports and their plots.

Why one place: both reports and their plots must agree on what "n/a" means (absent, unavailable or
not finite), how a rate or a share is printed, and, above all, what a codebook usage is a share of.
Usage of a whole codebook and the mean usage of a residual quantizer's stages (a share of far fewer
codes) never share a column: :func:`usage_columns` keeps them apart and :func:`usage_notes` says why.
"""

from __future__ import annotations

import math
from typing import Any


def _num(value: Any) -> float | None:
    """A metric as float, or None when it is absent, unavailable ({"unavailable": ...}) or not finite."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt(value: Any, digits: int = 3) -> str:
    x = _num(value)
    return "n/a" if x is None else f"{x:.{digits}f}"


def _percent(value: Any) -> str:
    x = _num(value)
    return "n/a" if x is None else f"{100 * x:.1f}"


def _bits(value: Any) -> str:
    """12.0 stays 12.0, 15.965784 becomes 15.97."""
    x = _num(value)
    if x is None:
        return "n/a"
    return f"{x:.1f}" if abs(x - round(x, 1)) < 1e-9 else f"{x:.2f}"


def md_cell(text: Any) -> str:
    """Escape pipes so a name like ||x - q||² does not split a markdown table cell."""
    return str(text).replace("|", "\\|")


def _metrics(config: dict[str, Any]) -> dict[str, Any]:
    metrics = config.get("metrics")
    return metrics if isinstance(metrics, dict) else {}


def _bits_of(config: dict[str, Any]) -> Any:
    return config.get("bits_per_token", _metrics(config).get("bits_per_token"))


# --- codebook usage: a whole codebook's, or the mean of a residual quantizer's stages (never mixed) ---

def stage_count(config: dict[str, Any]) -> int:
    """How many codebooks (residual stages) a config's tokens index: ``len(usage_per_stage)``, else 1."""
    stages = _metrics(config).get("usage_per_stage")
    return len(stages) if isinstance(stages, list) and stages else 1


def stage_size(config: dict[str, Any]) -> int | None:
    """Codes per stage, 2^(bits per token / stages), when that is a whole number (equal stages)."""
    bits = _num(_bits_of(config))
    if bits is None:
        return None
    size = 2 ** (bits / stage_count(config))
    return round(size) if abs(size - round(size)) <= 1e-6 * size else None


def codes_label(config: dict[str, Any]) -> str:
    """What a config's usage is a share of: '4096' codes, or '2 × 64' (two residual stages of 64 codes)."""
    stages, size = stage_count(config), stage_size(config)
    if size is None:
        return "n/a" if _num(_bits_of(config)) is None else f"{stages} stages, {_bits(_bits_of(config))} bits"
    return f"{size}" if stages == 1 else f"{stages} × {size}"


def _ceiling_text(metrics: dict[str, Any]) -> str:
    ceiling = _num(metrics.get("usage_ceiling"))
    return f" (max {_percent(ceiling)})" if ceiling is not None and ceiling < 1 else ""


def usage_columns(configs: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Table columns for codebook use: 'codes (K)', then the whole-codebook usage and perplexity of
    single-codebook configs and, in columns of their own, the per-stage means of residual configs
    (a stage has far fewer codes: its usage is not comparable with a whole codebook's). Returns
    (header, one row of cells per config); a cell that does not apply is '—'."""
    single = any(stage_count(c) == 1 for c in configs)
    staged = any(stage_count(c) > 1 for c in configs)
    head = ["codes (K)", *(["codebook usage (% of K)", "perplexity"] if single else []),
            *(["per-stage usage (% of a stage's codes, mean)", "per-stage perplexity (mean)"] if staged else [])]
    rows = []
    for c in configs:
        m, multi = _metrics(c), stage_count(c) > 1
        cells = [_percent(m.get("usage")) + _ceiling_text(m), _fmt(m.get("perplexity"), 1)]
        rows.append([md_cell(codes_label(c)), *((["—", "—"] if multi else cells) if single else []),
                     *((cells if multi else ["—", "—"]) if staged else [])])
    return head, rows


def usage_notes(configs: list[dict[str, Any]], tokens_of: str = "evaluation set") -> list[str]:
    """The notes that say what the usage columns are shares of."""
    notes = [f"_codes (K): how many codes a token's index is drawn from (stages × codes per stage for a residual "
             f"quantizer). codebook usage: share of the K codes used at least once over every token of the "
             f"{tokens_of}; perplexity: exp of the entropy of their use._"]
    if any(stage_count(c) > 1 for c in configs):
        notes.append("_per-stage usage / perplexity (residual quantizers): each stage's own codes, averaged over "
                     "stages. A stage has far fewer codes than the whole codebook (64 against 4096 for 2 × 64 and "
                     "4096), so these are not comparable with the codebook usage column; the joint use of all "
                     "stages' codes is not measured._")
    if any(_ceiling_text(_metrics(c)) for c in configs):
        notes.append(f"_(max …): the most usage the {tokens_of}'s tokens allow, min(1, tokens / codes), averaged "
                     "over stages; a larger set is needed to test a claim of 100% usage._")
    return notes


__all__ = ["codes_label", "md_cell", "stage_count", "stage_size", "usage_columns", "usage_notes"]
