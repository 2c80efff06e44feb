"""``report.md`` of ``scripts/gpu_check.py``, rendered from its ``results.json`` data (any part may be missing:
the report is rewritten after every phase, and a kill may come at any moment)."""

from __future__ import annotations

import re
from typing import Any


def _f(value: Any, spec: str = ".3g") -> str:
    return "n/a" if not isinstance(value, int | float) else format(value, spec)


def _pct(value: Any) -> str:
    if not isinstance(value, int | float):
        return "n/a"
    return f"{100 * value:.1f}%" if value == 0 or abs(value) >= 0.001 else f"{100 * value:.2g}%"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table and the blank line after it."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return [*lines, *("| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows), ""]


def _demote(markdown: str) -> str:
    """A benchmark's own '# title' becomes a bold line inside this report's sections."""
    return "\n".join(f"**{ln.lstrip('#').strip()}**" if ln.startswith("#") else ln for ln in markdown.splitlines())


def _phase_note(p: dict[str, Any]) -> str:
    note = p.get("reason") or p.get("ended") or p.get("verdict") or ""
    return str(note)[:160]


def _environment(p: dict[str, Any]) -> list[str]:
    info = p.get("info") or {}
    keys = ("device_name", "memory_gib", "capability", "nvidia_smi", "torch", "cuda_build", "cudnn", "python",
            "vqkit", "vqp", "missing_modules", "python_path", "cpu_count", "float32_matmul_precision",
            "cuda_matmul_allow_tf32", "cuda_matmul_allow_bf16_reduced_precision_reduction", "cpu_capability")
    rows = [[k, str(info[k] if info[k] is not None else "not installed")] for k in keys if k in info]
    lines = _table(["", "value"], rows) if rows else []
    if p.get("presets"):
        lines += ["", "Presets (`vqkit train --help`): " + ", ".join(f"`{x}`" for x in p["presets"])]
    return lines


def _bench(p: dict[str, Any]) -> list[str]:
    lines = [f"`{p.get('command', '')}`", ""]
    if p.get("note"):
        lines += [f"Note: {p['note']}", ""]
    if p.get("table"):
        lines.append(_demote(p["table"]))
    elif p.get("progress"):
        lines.append("Configs started before the kill: " + ", ".join(p["progress"]))
    return lines


def _exactness(p: dict[str, Any], where: str) -> list[str]:
    r = p.get("result") or {}
    lines = [f"**Verdict ({where}): {p.get('verdict', 'not reached')}**", ""]
    if r.get("accumulation"):
        lines += ["bf16 products accumulated in float32 (1 + m·2^-9, and 1 + m·2^-9 - 1 with cancellation):", ""]
        lines += _table(["product", "holds", "1 + m·2^-9", "cancellation"],
                        [[a["shape"], str(a["holds"]), str(a.get("plain", a.get("error"))), str(a.get("cancellation"))]
                         for a in r["accumulation"]])
    if r.get("columns"):
        lines += ["Float32 `addmm` entries independent of the number of columns (rerank widths: 64, 80, 128, "
                  "1024, 4096 required; 16, 77 and fewer rows reported):", ""]
        lines += _table(["case", "block", "holds", "failures", "reported"],
                        [[c["case"], c.get("block", "?"), str(c["holds"]), "; ".join(c.get("failures", [])) or
                          c.get("error", "none"), ", ".join(f"{k}: {v}" for k, v in c.get("informational", {}).items())]
                         for c in r["columns"]])
    if r.get("bound"):
        lines += ["The search's error bound against this device's bf16 scores (holds where the ratio <= 1):", ""]
        lines += _table(["case", "tokens", "max error / bound", "holds"],
                        [[b["case"], str(b.get("tokens", "?")), _f(b.get("max_error_over_bound"), ".3f")
                          if "error" not in b else b["error"], str(b["holds"])]
                         for b in r["bound"]])
    if r.get("search"):
        lines += [f"bf16-exact search (`Bf16Search`, called directly) against the float32 `nearest_code`, {where}, "
                  f"median of {r.get('repeats', '?')} after a warm-up; floor = the bare float32 product:", ""]
        lines += _table(["K x d", "tokens", "same indices", "differing", "floor ms", "fp32 ms", "bf16 ms",
                         "bf16 speed-up", "codes kept mean / max", "reranked", "fallback tokens",
                         "nearest_code(precision='bf16') ran"],
                        [[f"{s['codes']:,} x {s['dim']}", f"{s['tokens']:,}", "yes" if s["identical"] else "NO",
                          str(s["differing_indices"]), _f(s["floor_ms"], ".1f"), _f(s["fp32_ms"], ".1f"),
                          _f(s["bf16_ms"], ".1f"), _f(s["bf16_speedup"], ".2f") + "x",
                          f"{s['candidates_mean']:.1f} / {s['candidates_max']}", str(s["reranked_tokens"]),
                          str(s["fallback_tokens"]), s["nearest_code_bf16_ran"]] for s in r["search"]])
    for skipped in r.get("skipped", []):
        lines.append(f"- not compared: {skipped}")
    return lines


def _runs(phases: dict[str, Any], where: str, data: dict[str, Any]) -> list[str]:
    runs = {k: v for k, v in phases.items() if k.startswith("run-")}
    if not runs:
        return []
    rows = []
    for name, r in runs.items():
        last = r["val"][-1] if r.get("val") else {}
        metric = r.get("metric", "psnr")
        tr = r.get("last_train") or {}
        rows.append([name, r.get("title", ""), r.get("status", ""), _f(r.get("budget_s", 0) / 60, ".2f"),
                     str(r.get("ended", r.get("reason", "")))[:90], str(r.get("steps_reached", "")),
                     _f(r.get("train_minutes"), ".2f"),
                     _f(r["steps_reached"] / (60 * r["train_minutes"]), ".2f") if r.get("train_minutes") else "n/a",
                     f"{_pct(last.get('usage'))} (max {_pct(last.get('usage_ceiling'))})" if last else "n/a",
                     f"{metric} {_f(last.get(metric), '.2f')}" if last else "n/a",
                     _pct(tr.get("usage"))])
    lines = [f"All on {where}; minutes are wall minutes since the run's launch (start-up included), "
             "'train min' the trainer's own clock. Data: images = "
             f"{data.get('images_label') or 'none'}; speech = {data.get('speech_label') or 'none'}.", ""]
    lines += _table(["run", "what", "status", "budget min", "ended", "steps", "train min", "steps/s",
                     "val usage (ceiling)", "last val", "train-batch usage"], rows)
    for name, r in runs.items():
        if not r.get("val"):
            continue
        metric = r.get("metric", "psnr")
        lines += [f"**{name}** ({r.get('title', '')}, {where}): validation over time", ""]
        lines += _table(["minutes", "step", "usage", "ceiling", "perplexity", metric],
                        [[_f(v["minutes"], ".2f"), str(v["step"]), _pct(v["usage"]), _pct(v["usage_ceiling"]),
                          _f(v["perplexity"], ".0f"), _f(v.get(metric), ".3f")] for v in r["val"]])
    return lines


def render(data: dict[str, Any]) -> str:
    where = data.get("device") or "device unknown"
    phases: dict[str, Any] = data.get("phases", {})
    head = f"# vqkit GPU check: {where}" + (" (DRY RUN: CPU, tiny sizes; no figure means anything)"
                                             if data.get("dry_run") else "")
    state = "complete" if data.get("complete") else "INCOMPLETE (written after every phase; this is the latest)"
    lines = [head, "", f"Started {data.get('started_utc', '?')}; {data.get('elapsed_s', 0) / 60:.2f} min of the "
             f"{data.get('deadline_s', 0) / 60:.2f}-min deadline used; {state}.", "", "## Phases", ""]
    lines += _table(["phase", "status", "budget s", "wall s", "note"],
                    [[n, p.get("status", ""), _f(p.get("budget_s"), ".0f"), _f(p.get("wall_s"), ".1f"),
                      _phase_note(p)] for n, p in phases.items()])
    sections = [("environment", "## 1. Environment", _environment),
                ("bench-quantizers", f"## 2. Benchmarks on {where}\n\n### Quantizers", _bench),
                ("bench-train", "### Training steps (eager)", _bench),
                ("bench-train-compile", "### Training steps (torch.compile)", _bench)]
    for name, title, fn in sections:
        p = phases.get(name, {})
        if p.get("status") == "skipped":
            lines += [title, "", f"Skipped: {p.get('reason', '')}", ""]
        elif p.get("status") not in (None, "pending", "running"):
            lines += [title, "", *fn(p), ""]
    if "exactness" in phases:
        lines += [f"## 3. Exact bf16 search on {where}", "", *_exactness(phases["exactness"], where), ""]
    lines += [f"## 4. Paper-scale runs on {where}, each for a fixed number of minutes", "",
              *_runs(phases, where, data.get("data", {}))]
    plot = phases.get("plot", {})
    if plot.get("png"):
        lines += [f"![codebook usage and PSNR over minutes, {where}]({plot['png']})", ""]
    lines += ["## Files", "", "`results.json`: everything above, and each run's curve. `details.tar.gz`: `logs/` "
              "(every child's stdout and stderr), `runs/<name>/` (each run's log.jsonl, config.json, summary.json), "
              "`bench/` (the benchmarks' own md/json)."]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)) + "\n"
