"""``report.md`` and plots for a speech sweep (``vqkit compare simvq-audio``).

One table in the shape of SimVQ's Table 2, with what it does not report beside it: utilization with
its ceiling (the most codes the test set's tokens could use), PESQ-WB, STOI, ESTOI, mel distance,
SI-SDR, DNSMOS, nominal and real (entropy-coded) kbps; the paper's numbers where it has them. The
header says what differs from the paper, so nobody reads LibriSpeech-subset-16k as LibriTTS.

Its noise section says which differences are noise. When every configuration's ``metrics.json``
holds per-utterance scores of the same utterances (``per_utterance``, written by ``vqkit eval``), each
mean gets its exact standard error and two configurations are within noise when |mean paired
difference| < 2 × the standard error of the paired (same-utterance) differences. Older results hold
means only: thresholds then come from assumed per-utterance spreads (:data:`SPREAD`), and it says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...plotting import label_bars, pyplot, save_figure
from ...reporting.cells import _bits, _bits_of, _fmt, _metrics, _num, _percent, md_cell, usage_columns, usage_notes
from ...reporting.common import header, with_resolved_paths
from ...reporting.noise import item_scores, paired_difference, paired_items, standard_error, within_noise_rule
from ...reporting.plots import curves_figure, draw_bars, usage_figure
from ...storage import atomic_write

SPREAD = {"pesq_wb": 0.5, "stoi": 0.05, "estoi": 0.07}
"""Assumed standard deviation of a per-utterance score, for results without per-utterance scores
(evaluated before ``vqkit eval`` stored them, so it cannot be measured from their metrics.json):
STOI's and ESTOI's as measured once on LibriSpeech test-other (simvq-audio at 2,000 steps, three
models: 0.046–0.051 and 0.059–0.075); PESQ-WB's a typical spread for a codec above PESQ's floor of 1
(at that floor, as in the CPU-scale runs, it was 0.04: there the threshold is generous)."""
_SCORES = (("pesq_wb", "PESQ-WB"), ("stoi", "STOI"), ("estoi", "ESTOI"))
_PAIRED_SCORES = (("pesq_wb", "PESQ-WB", True, 3), ("stoi", "STOI", True, 3), ("estoi", "ESTOI", True, 3),
                  ("mel_distance", "mel distance", False, 3), ("si_sdr", "SI-SDR (dB)", True, 2),
                  ("dnsmos_ovrl", "DNSMOS ovrl", True, 2))
"""(key, label, higher is better, decimals) of the per-utterance scores compared pairwise when stored."""


def noise_threshold(key: str, utterances: float) -> float:
    """Twice the standard error of a difference of two means over ``utterances``, for :data:`SPREAD`'s spread."""
    return 2 * math.sqrt(2) * SPREAD[key] / math.sqrt(max(utterances, 1.0))


def differences(results: dict[str, Any], metrics: dict[str, Any]) -> str:
    """What differs from SimVQ's Table 2, from what this sweep actually ran on."""
    rate, tokens = _num(metrics.get("sample_rate")), _num(metrics.get("tokens_per_second"))
    return (f"trained on {results.get('data', '?')} and tested on {results.get('val_data') or 'its val split'} at "
            f"{_fmt(rate, 0)} Hz (for the shared LibriSpeech subsets: 'LibriSpeech-subset-16k'), not 24 kHz "
            f"LibriTTS; {_fmt(tokens, 0)} tokens/s (the paper: 75); model size, steps, crop length and losses are "
            "the preset's (config.json of each run); UTMOS and V/UV F1 are not measured (UTMOS needs a "
            "checkpoint that cannot be fetched here).")


def test_set(results: dict[str, Any], configs: list[dict[str, Any]]) -> str:
    """'100 utterances of <folder>, 767 s in all (7.7 s on average) at 16000 Hz'; counts that differ
    between configurations are given as a range."""
    counts = sorted({round(n) for c in configs if (n := _num(_metrics(c).get("utterances"))) is not None})
    seconds = sorted({round(s, 1) for c in configs if (s := _num(_metrics(c).get("seconds"))) is not None})
    rate = _num(_metrics(configs[0]).get("sample_rate")) if configs else None
    if not counts:
        return "n/a"
    number = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    text = f"{number} utterances of {results.get('val_data') or str(results.get('data', '?')) + ' (its val split)'}"
    if len(seconds) == 1:
        text += f", {seconds[0]:.0f} s in all ({seconds[0] / counts[-1]:.1f} s on average)" if len(counts) == 1 \
            else f", {seconds[0]:.0f} s in all"
    if rate is not None:
        text += f" at {rate:.0f} Hz"
    return text


def _rate(m: dict[str, Any], prior: str) -> str:
    rates = m.get("file_kbps")
    return _fmt(rates.get(prior), 3) if isinstance(rates, dict) else "n/a"


def _table(configs: list[dict[str, Any]]) -> list[str]:
    usage_head, usage_rows = usage_columns(configs)
    head = ["Method", "bits/token", "kbps nominal", "kbps file (static)", "kbps file (context)", *usage_head,
            "PESQ-WB", "STOI", "ESTOI", "mel dist.", "SI-SDR (dB)", "DNSMOS ovrl", "train s",
            "paper codebook usage (%)", "paper PESQ", "paper STOI"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c, usage in zip(configs, usage_rows, strict=True):
        m, paper = _metrics(c), c.get("paper") if isinstance(c.get("paper"), dict) else {}
        assert isinstance(paper, dict)
        row = [md_cell(c.get("name", "?")), _bits(_bits_of(c)), _fmt(m.get("kbps"), 3), _rate(m, "static"),
               _rate(m, "context"), *usage,
               _fmt(m.get("pesq_wb"), 3), _fmt(m.get("stoi"), 3), _fmt(m.get("estoi"), 3),
               _fmt(m.get("mel_distance"), 3), _fmt(m.get("si_sdr"), 2), _fmt(m.get("dnsmos_ovrl"), 2),
               _fmt(c.get("train_seconds"), 0), _percent(paper.get("usage")) if paper.get("usage") else "",
               _fmt(paper.get("pesq_wb"), 2) if paper.get("pesq_wb") else "",
               _fmt(paper.get("stoi"), 2) if paper.get("stoi") else ""]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _ties(configs: list[dict[str, Any]], utterances: float,
          scores: Sequence[tuple[str, str]] = _SCORES) -> list[str]:
    """For PESQ-WB, STOI and ESTOI (``scores``): which configurations are within :data:`SPREAD`'s noise of the best."""
    lines = []
    for key, label in scores:
        scored = [(c, v) for c in configs if (v := _num(_metrics(c).get(key))) is not None]
        if len(scored) < 2:
            continue
        best, noise = max(v for _, v in scored), noise_threshold(key, utterances)
        tied = [str(c.get("name", "?")) for c, v in scored if best - v < noise]
        if len(tied) == len(scored):
            lines.append(f"- {label}: all {len(scored)} configurations are within {noise:.2g} of the best "
                         f"({_fmt(best, 3)}): no difference is claimed.")
        elif len(tied) == 1:
            lines.append(f"- {label}: {md_cell(tied[0])} ({_fmt(best, 3)}) is ahead of every other configuration "
                         f"by {noise:.2g} or more.")
        else:
            lines.append(f"- {label}: within {noise:.2g} of the best ({_fmt(best, 3)}), so not told apart: "
                         f"{md_cell(', '.join(tied))}.")
    return lines


def _paired_ties(configs: list[dict[str, Any]], key: str, label: str, higher: bool, digits: int) -> str:
    """Which configurations are within noise of the best on ``key``, by paired differences with it."""
    scored = [(c, v) for c in configs if (v := _num(_metrics(c).get(key))) is not None]
    best, best_value = (max if higher else min)(scored, key=lambda cv: cv[1])
    found = item_scores(best, key)
    assert found is not None
    tied, ahead = [str(best.get("name", "?"))], list[str]()
    for c, _ in scored:
        if c is best:
            continue
        other = item_scores(c, key)
        d = paired_difference(found[1], other[1]) if other is not None else None
        if d is None:  # fewer than two utterances scored by both: nothing is claimed
            tied.append(f"{c.get('name', '?')} (too few utterances scored by both)")
            continue
        gap, se = (d[0] if higher else -d[0]), d[1]
        text = f"{c.get('name', '?')} ({_plus_minus(gap, se, digits)} behind)"
        (tied if gap < 2 * se else ahead).append(text)
    name = md_cell(str(best.get("name", "?")))
    if len(tied) == len(scored):
        return (f"- {label}: all {len(scored)} configurations are within noise of the best, {name} "
                f"({_fmt(best_value, digits)}; paired differences: {md_cell(', '.join(tied[1:]))}): no difference "
                "is claimed.")
    if len(tied) == 1:
        return (f"- {label}: {name} ({_fmt(best_value, digits)}) is ahead of every other configuration by more "
                f"than twice the paired standard error ({md_cell(', '.join(ahead))}).")
    return (f"- {label}: within noise of the best ({_fmt(best_value, digits)}), so not told apart: {name}, "
            f"{md_cell(', '.join(tied[1:]))}; measurably behind: {md_cell(', '.join(ahead))}.")


def _plus_minus(value: float, se: float, digits: int) -> str:
    """'0.0062 ± 0.0004': ``digits`` decimals, more when the standard error needs them for two significant digits."""
    if se > 0:
        digits = max(digits, 1 - math.floor(math.log10(se)))
    return f"{value:.{digits}f} ± {se:.{digits}f}"


def _standard_errors(configs: list[dict[str, Any]], keys: list[tuple[str, str, bool, int]]) -> list[str]:
    """A table of each configuration's mean ± exact standard error over utterances, one column per score."""
    lines = ["| Method | " + " | ".join(f"{label} ± s.e." for _, label, _, _ in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for c in configs:
        cells = []
        for key, _, _, digits in keys:
            found, mean = item_scores(c, key), _num(_metrics(c).get(key))
            se = standard_error(found[1]) if found is not None else None
            cells.append(_fmt(mean, digits) + ("" if se is None or mean is None else f" ± {se:.{digits}f}"))
        lines.append(f"| {md_cell(c.get('name', '?'))} | " + " | ".join(cells) + " |")
    return lines


def _assumed(n: float, scores: Sequence[tuple[str, str]]) -> str:
    """The thresholds from :data:`SPREAD` (results without per-utterance scores), in words."""
    thresholds = ", ".join(f"{noise_threshold(k, n):.2g} in {label}" for k, label in scores)
    spreads = ", ".join(f"{SPREAD[k]:g} ({label})" for k, label in scores)
    return (f"Differences below {thresholds} are read as within noise: twice the standard error of a "
            f"difference of two means over {n:.0f} utterances, for assumed per-utterance standard deviations "
            f"of {spreads}.")


def _noise(configs: list[dict[str, Any]]) -> list[str]:
    counts = [n for c in configs if (n := _num(_metrics(c).get("utterances"))) is not None]
    paired = [score for score in _PAIRED_SCORES if paired_items(configs, score[0])
              and sum(_num(_metrics(c).get(score[0])) is not None for c in configs) > 1]
    if not paired:
        lines = ["## Noise", "", "Scores are means over the test utterances. Per-utterance scores are not stored in "
                 "these results (evaluated before `vqkit eval` stored them; re-running it measures the noise), so "
                 "no standard error can be computed from them."]
        if not counts:
            return [*lines, "The number of utterances is not recorded: no difference is claimed.", ""]
        n = min(counts)
        lines[-1] += f" {_assumed(n, _SCORES)} One training seed: seed-to-seed variation comes on top."
        return [*lines, "", *_ties(configs, n), ""]
    found = item_scores(configs[0], paired[0][0])
    utterances = len(found[0]) if found is not None else 0
    lines = ["## Noise", "",
             f"Scores are means over the same {utterances} test utterances for every configuration, and each "
             "utterance's scores are stored (metrics.json's per_utterance), so the noise is measured, not assumed: "
             "± s.e. is the standard deviation over utterances / √utterances, and configurations are compared "
             f"utterance by utterance: {within_noise_rule('utterance')}. Below, each configuration's paired "
             "difference from the best (± its standard error). One training seed: seed-to-seed variation comes "
             "on top.", "", *_standard_errors(configs, paired), "",
             *[_paired_ties(configs, *score) for score in paired]]
    rest = [(k, label) for k, label in _SCORES if k not in {score[0] for score in paired}]
    if rest and counts:
        n = min(counts)
        lines += ["", f"{', '.join(label for _, label in rest)}: not stored per utterance for every configuration, "
                  f"so not compared pairwise. {_assumed(n, rest)}", "", *_ties(configs, n, rest)]
    return [*lines, ""]


_PANELS = (("pesq_wb", "PESQ-WB (1 to 4.5, higher is better)", (1.0, 4.5)),
           ("stoi", "STOI (0 to 1, higher is better)", (0.0, 1.0)),
           ("mel_distance", "mel distance (lower is better)", None))


def quality_figure(configs: list[dict[str, Any]], where: str) -> Any:
    """One panel per quality metric, one bar per configuration, each axis on the metric's own scale."""
    plt = pyplot()
    names = [str(c.get("name", "?")) for c in configs]
    fig, axes = plt.subplots(1, len(_PANELS), figsize=(14, 0.5 * len(configs) + 1.8), sharey=True)
    fig.suptitle(f"speech quality over {where}")
    columns = [[_num(_metrics(c).get(key)) for c in configs] for key, _, _ in _PANELS]
    for ax, values, (_, label, limits) in zip(axes, columns, _PANELS, strict=True):
        draw_bars(ax, names, values, label, "", xlim=limits)
    fig.tight_layout()  # the layout first: how much room a label has depends on it
    for ax, values, (_, _, limits) in zip(axes, columns, _PANELS, strict=True):
        label_bars(ax, values, [_fmt(v, 3) for v in values], extend=limits is None)
    return fig


def write_audio_report(out_dir: Path, results: dict[str, Any]) -> list[Path]:
    """Write ``report.md``, ``curves.png``, ``usage.png`` and ``quality.png`` for a speech sweep (atomically)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    configs = with_resolved_paths(out_dir, [c for c in results.get("configs", []) if isinstance(c, dict)])
    counts = sorted({round(n) for c in configs if (n := _num(_metrics(c).get("utterances"))) is not None})
    seconds = _num(_metrics(configs[0]).get("seconds")) if configs else None
    where = (f"the {'–'.join(str(n) for n in sorted({counts[0], counts[-1]}))} test utterances" if counts
             else "the test utterances") + (f" ({seconds:.0f} s)" if seconds is not None else "")
    save_figure(curves_figure(configs, "mel"), out_dir / "curves.png")  # the waveform L1 barely moves; the mel does
    save_figure(usage_figure(configs, where), out_dir / "usage.png")
    save_figure(quality_figure(configs, where), out_dir / "quality.png")
    written = [out_dir / name for name in ("curves.png", "usage.png", "quality.png")]
    crops = f"- training crops: {results.get('segment', 'n/a')} samples"
    lines = [*header(results, [crops]), f"- test set: {test_set(results, configs)}, the same utterances for every "
             "configuration", "",
             "**What differs from the paper:** " + differences(results, _metrics(configs[0]) if configs else {}), "",
             "## Results", "", *_table(configs), "",
             *[line for note in usage_notes(configs, "test set") for line in (note, "")],
             "_kbps file: each utterance's tokens entropy coded into a real .vqt file (header included) with the "
             "prior fitted on training utterances; nominal = tokens/s × Σ log2 K / 1000._", "",
             *_noise(configs), "## Plots", ""]
    lines += [f"- [{p.name}]({p.name})" for p in written] + [""]
    report = out_dir / "report.md"
    atomic_write(report, "\n".join(lines).encode())
    return [report, *written]
