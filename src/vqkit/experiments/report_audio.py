"""``report.md`` and plots for a speech sweep (``vqkit compare simvq-audio``).

One table in the shape of SimVQ's Table 2, with what it does not report beside it: utilization with
its ceiling (the most codes the test set's tokens could use), PESQ-WB, STOI, ESTOI, mel distance,
SI-SDR, DNSMOS, nominal and real (entropy-coded) kbps; the paper's numbers where it has them. The
header says what differs from the paper, so nobody reads LibriSpeech-subset-16k as LibriTTS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..models.pretrained import atomic_write
from ..plotting import pyplot
from .report import _barh, _bits, _bits_of, _fmt, _header, _metrics, _num, _percent, _plot_curves, md_cell


def differences(results: dict[str, Any], metrics: dict[str, Any]) -> str:
    """What differs from SimVQ's Table 2, from what this sweep actually ran on."""
    rate, tokens = _num(metrics.get("sample_rate")), _num(metrics.get("tokens_per_second"))
    return (f"trained on {results.get('data', '?')} and tested on {results.get('val_data') or 'its val split'} at "
            f"{_fmt(rate, 0)} Hz (for the shared LibriSpeech subsets: 'LibriSpeech-subset-16k'), not 24 kHz "
            f"LibriTTS; {_fmt(tokens, 0)} tokens/s (the paper: 75); model size, steps, crop length and losses are "
            "the preset's (config.json of each run); UTMOS and V/UV F1 are not measured (UTMOS needs a "
            "checkpoint that cannot be fetched here).")


def _rate(m: dict[str, Any], prior: str) -> str:
    rates = m.get("file_kbps")
    return _fmt(rates.get(prior), 3) if isinstance(rates, dict) else "n/a"


def _table(configs: list[dict[str, Any]]) -> list[str]:
    head = ["Method", "bits/token", "kbps nominal", "kbps file (static)", "kbps file (context)", "usage (%)",
            "max usage (%)", "PESQ-WB", "STOI", "ESTOI", "mel dist.", "SI-SDR (dB)", "DNSMOS ovrl", "train s",
            "paper usage (%)", "paper PESQ", "paper STOI"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in configs:
        m, paper = _metrics(c), c.get("paper") if isinstance(c.get("paper"), dict) else {}
        assert isinstance(paper, dict)
        row = [md_cell(c.get("name", "?")), _bits(_bits_of(c)), _fmt(m.get("kbps"), 3), _rate(m, "static"),
               _rate(m, "context"), _percent(m.get("usage")), _percent(m.get("usage_ceiling")),
               _fmt(m.get("pesq_wb"), 3), _fmt(m.get("stoi"), 3), _fmt(m.get("estoi"), 3),
               _fmt(m.get("mel_distance"), 3), _fmt(m.get("si_sdr"), 2), _fmt(m.get("dnsmos_ovrl"), 2),
               _fmt(c.get("train_seconds"), 0), _percent(paper.get("usage")) if paper.get("usage") else "",
               _fmt(paper.get("pesq_wb"), 2) if paper.get("pesq_wb") else "",
               _fmt(paper.get("stoi"), 2) if paper.get("stoi") else ""]
        lines.append("| " + " | ".join(row) + " |")
    return lines


_PANELS = (("pesq_wb", "PESQ-WB (1 to 4.5, higher is better)", (1.0, 4.5)),
           ("stoi", "STOI (0 to 1, higher is better)", (0.0, 1.0)),
           ("mel_distance", "mel distance (lower is better)", None))


def _quality(path: Path, configs: list[dict[str, Any]]) -> None:
    """One panel per quality metric, one bar per configuration, each axis on the metric's own scale."""
    plt = pyplot()
    names = [str(c.get("name", "?")) for c in configs]
    fig, axes = plt.subplots(1, len(_PANELS), figsize=(13, 0.5 * len(configs) + 1.6), sharey=True)
    for ax, (key, label, limits) in zip(axes, _PANELS, strict=True):
        values = [_num(_metrics(c).get(key)) for c in configs]
        ax.barh(range(len(names)), [v or 0.0 for v in values], color="tab:blue")
        for i, v in enumerate(values):
            ax.text(v or 0.0, i, f" {_fmt(v, 3)}", va="center", fontsize=7)
        if limits:
            ax.set_xlim(*limits)
        ax.set_xlabel(label, fontsize=8)
    axes[0].set_yticks(range(len(names)), names, fontsize=7)
    axes[0].invert_yaxis()
    fig.suptitle("speech quality over the test utterances")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_audio_report(out_dir: Path, results: dict[str, Any]) -> list[Path]:
    """Write ``report.md``, ``curves.png``, ``usage.png`` and ``pesq.png`` for a speech sweep."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    configs: list[dict[str, Any]] = [c for c in results.get("configs", []) if isinstance(c, dict)]
    _plot_curves(out_dir / "curves.png", configs, "mel")  # the waveform L1 barely moves; the mel loss does
    usages = [_num(_metrics(c).get("usage")) for c in configs]
    ceilings = [_num(_metrics(c).get("usage_ceiling")) for c in configs]
    _barh(out_dir / "usage.png", configs, [None if u is None else 100 * u for u in usages], "codebook usage (%)",
          "codebook usage over the test utterances",
          [f"{_percent(u)} % (max {_percent(m)} %)" for u, m in zip(usages, ceilings, strict=True)])
    _quality(out_dir / "quality.png", configs)
    written = [out_dir / name for name in ("curves.png", "usage.png", "quality.png")]
    seconds = _num(_metrics(configs[0]).get("seconds")) if configs else None
    lines = [*_header(results), f"- test set: {_fmt(_metrics(configs[0]).get('utterances'), 0) if configs else 0} "
             f"utterances, {_fmt(seconds, 0)} s", "",
             "**What differs from the paper:** " + differences(results, _metrics(configs[0]) if configs else {}), "",
             "## Results", "", *_table(configs), "",
             "_usage: share of codes used over every token of the test set; max usage = min(1, tokens / K). "
             "kbps file: each utterance's tokens entropy coded into a real .vqt file (header included) with the "
             "prior fitted on training utterances; nominal = tokens/s × Σ log2 K / 1000. One seed; differences "
             "of a few hundredths in PESQ/STOI are within run-to-run noise at this scale._", "", "## Plots", ""]
    lines += [f"- [{p.name}]({p.name})" for p in written] + [""]
    report = out_dir / "report.md"
    atomic_write(report, "\n".join(lines).encode())
    return [report, *written]
