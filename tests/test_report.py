"""write_report on a fake three-config sweep: every config, its rate, the n/a note and every plot."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from vqkit.modalities.image.report import write_report
from vqkit.plotting import pyplot, text_overflow


def _metrics(psnr: float, lpips: Any, stages: list[float] | None = None) -> dict[str, Any]:
    return {"images": 8, "l1": 0.1, "mse": 0.02, "psnr": psnr, "ssim": 0.6, "batch_psnr": psnr + 1, "lpips": lpips,
            "rfid": {"unavailable": "not requested"}, "usage": 0.5, "perplexity": 300.0,
            "usage_per_stage": stages or [0.5], "perplexity_per_stage": [300.0] * len(stages or [0.5]),
            "bits_per_token": 12.0, "bits_per_pixel": 0.05}


def _config(root: Path, name: str, family: str, bits: float, metrics: dict[str, Any],
            paper: dict[str, float] | None) -> dict[str, Any]:
    run_dir, eval_dir = root / "runs" / name, root / "runs" / name / "eval-val"
    eval_dir.mkdir(parents=True)
    records = [{"split": "train", "step": s, "loss": 1.0 / s, "l1": 0.5 / s} for s in range(1, 6)]
    records.append({"split": "val", "step": 5, "psnr": metrics["psnr"]})
    (run_dir / "log.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    Image.new("RGB", (40, 22), (int(bits) * 10, 80, 120)).save(eval_dir / "reconstructions.png")
    return {"name": name, "family": family, "quantizer": family.lower(), "quantizer_args": {},
            "bits_per_token": bits, "run_dir": str(run_dir), "eval_dir": str(eval_dir), "train_seconds": 12.0,
            "steps": 5, "metrics": metrics, "paper": paper}


def test_write_report(tmp_path: Path) -> None:
    configs = [
        _config(tmp_path, "RFSQ-4x1024-LayerNorm", "RFSQ", 40.0, _metrics(23.1, 0.12, [0.9, 0.8, 0.7, 0.6]),
                {"l1": 0.102, "lpips": 0.100, "psnr": 22.9}),
        _config(tmp_path, "FSQ-8x8x8x5x5x5", "FSQ", 15.965784, _metrics(21.0, {"unavailable": "no LPIPS weights"}),
                None),
        _config(tmp_path, "FSQ-8x8x8x8", "FSQ", 12.0, _metrics(20.0, 0.2), None),
    ]
    results = {"preset": "rfsq-table1", "title": "RFSQ Table 1", "scale": "cpu", "data": "photos", "steps": 5,
               "seed": 0, "image_size": 64, "wall_seconds": 99.0, "train_seconds_total": 36.0,
               "configs": configs}
    paths = write_report(tmp_path / "report", results)

    report = (tmp_path / "report" / "report.md").read_text()
    assert paths[0].name == "report.md"
    for name, bits in (("RFSQ-4x1024-LayerNorm", "40.0"), ("FSQ-8x8x8x5x5x5", "15.97"), ("FSQ-8x8x8x8", "12.0")):
        row = next(line for line in report.splitlines() if line.startswith(f"| {name} |"))
        assert f"| {bits} |" in row
    assert "n/a" in report and "LPIPS n/a: no LPIPS weights" in report
    assert "wall time of this command: 99 s (1.6 min)" in report
    assert "training time, all configurations: 36 s (0.6 min)" in report
    assert "paper L1" in report and "Per-stage" in report
    names = {p.name for p in paths}
    assert {"curves.png", "psnr.png", "usage.png", "rate_distortion.png", "best_reconstructions.png"} <= names
    for path in paths[1:]:
        assert path.is_file()
        with Image.open(path) as im:
            im.verify()
        assert f"({path.name})" in report
    with Image.open(tmp_path / "report" / "best_reconstructions.png") as im:
        assert im.height == 16 + 2 * (22 + 16)  # a legend line, then one panel per family


def test_write_report_single_config_missing_files(tmp_path: Path) -> None:
    metrics = _metrics(20.0, {"unavailable": "not requested"})
    config = {"name": "VQ-1024", "family": "VQ", "bits_per_token": 10.0, "run_dir": str(tmp_path / "missing"),
              "eval_dir": str(tmp_path / "missing"), "train_seconds": 1.0, "metrics": metrics, "paper": None}
    paths = write_report(tmp_path, {"preset": "p", "configs": [config]})
    report = paths[0].read_text()
    assert "VQ-1024" in report and "paper L1" not in report
    assert not (tmp_path / "best_reconstructions.png").exists()
    for path in paths[1:]:
        with Image.open(path) as im:
            im.verify()


def test_paper_columns_follow_what_the_preset_quotes(tmp_path: Path) -> None:
    """SimVQ rows quote usage, rFID, LPIPS, PSNR and SSIM (no L1): each gets its own column."""
    from vqkit.experiments.presets import PRESETS

    entry = PRESETS["simvq-codebook-sweep"].entries[0]
    assert entry.paper is not None
    configs = [_config(tmp_path, entry.name, entry.family, 10.0, _metrics(20.0, 0.2), entry.paper)]
    report = write_report(tmp_path / "r", {"preset": "simvq-codebook-sweep", "configs": configs})[0].read_text()
    header = next(line for line in report.splitlines() if line.startswith("| Method |"))
    assert header.endswith("| paper LPIPS | paper rFID | paper PSNR | paper SSIM | paper codebook usage (%) |")
    row = next(line for line in report.splitlines() if line.startswith(f"| {entry.name} |"))
    assert row.endswith("| 0.16 | 3.67 | 22.34 | 0.708 | 100.0 |")  # SimVQ Table 3, 1k codes
    assert "(max " not in report  # no usage_ceiling recorded: no ceiling


def test_usage_ceiling_column_when_the_set_is_smaller_than_a_codebook(tmp_path: Path) -> None:
    small, big = _metrics(20.0, 0.2), _metrics(21.0, 0.2)
    small.update(usage=0.3, usage_ceiling=1.0)
    big.update(usage=0.05, usage_ceiling=0.25)  # 16k tokens, 65k codes
    configs = [_config(tmp_path, "SimVQ-1k", "SimVQ", 10.0, small, None),
               _config(tmp_path, "SimVQ-65k", "SimVQ", 16.0, big, None)]
    report = write_report(tmp_path / "r", {"preset": "p", "configs": configs})[0].read_text()
    assert _column(report, "codebook usage (% of K)", "SimVQ-65k") == "5.0 (max 25.0)"
    assert _column(report, "codebook usage (% of K)", "SimVQ-1k") == "30.0"  # every code could be used
    assert _column(report, "codes (K)", "SimVQ-65k") == "65536"
    assert "a larger set is needed" in report


def test_side_information_is_counted_in_a_note(tmp_path: Path) -> None:
    metrics = _metrics(22.4, 0.2)
    metrics.update(side_bits_per_image=512, bits_per_pixel=0.84375)
    configs = [_config(tmp_path, "RFSQ-LN-instance", "RFSQ", 22.0, metrics, None)]
    report = write_report(tmp_path / "r", {"preset": "p", "configs": configs})[0].read_text()
    assert "RFSQ-LN-instance: decoding also needs 512 bits of side information per image, 0.8438 bits" in report


# --- the report must not mislead: usage columns, eval set and noise, rate plot, labels, paths, atomic files ---

def _quick_like(root: Path) -> list[dict[str, Any]]:
    """Seven configurations at 12 bits per token, as the quick preset: four single codebooks, three 2 × 64 RFSQ."""
    configs = []
    for i, (name, family) in enumerate([("FSQ [8,8,8,8]", "FSQ"), ("LFQ 12 bits", "LFQ"), ("VQ-EMA 4096", "VQ-EMA"),
                                        ("SimVQ 4096", "SimVQ"), ("RFSQ 2x[8,8]-None", "RFSQ"),
                                        ("RFSQ 2x[8,8]-Scale", "RFSQ"), ("RFSQ 2x[8,8]-LayerNorm", "RFSQ")]):
        staged = family == "RFSQ"
        metrics = _metrics(20.0 + 0.01 * i, 0.2, [0.9, 0.8] if staged else None)
        metrics.update(images=14, mse=4 * 10 ** (-(20.0 + 0.01 * i) / 10) * 1.2,  # a spread of image errors
                       usage=0.85 if staged else 0.05 + 0.01 * i, perplexity=50.0 if staged else 150.0)
        configs.append(_config(root, name.replace(" ", "_"), family, 12.0, metrics, None) | {"name": name})
    return configs


def _column(report: str, header: str, name: str) -> str:
    lines = report.splitlines()
    head = next(line for line in lines if line.startswith("| Method |"))
    columns = [cell.strip() for cell in head.strip("|").split("|")]
    row = next(line for line in lines if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in row.strip("|").split("|")][columns.index(header)]


def test_per_stage_usage_has_its_own_column_and_panel(tmp_path: Path) -> None:
    from vqkit.reporting.plots import usage_figure

    configs = _quick_like(tmp_path)
    report = write_report(tmp_path / "r", {"preset": "quick", "configs": configs})[0].read_text()
    assert _column(report, "codes (K)", "FSQ [8,8,8,8]") == "4096"
    assert _column(report, "codes (K)", "RFSQ 2x[8,8]-None") == "2 × 64"
    assert _column(report, "codebook usage (% of K)", "FSQ [8,8,8,8]") == "5.0"
    assert _column(report, "codebook usage (% of K)", "RFSQ 2x[8,8]-None") == "—"  # 85 % of 64 codes: not here
    assert _column(report, "per-stage usage (% of a stage's codes, mean)", "RFSQ 2x[8,8]-None") == "85.0"
    assert _column(report, "per-stage usage (% of a stage's codes, mean)", "FSQ [8,8,8,8]") == "—"
    assert _column(report, "perplexity", "RFSQ 2x[8,8]-None") == "—"
    assert "| RFSQ 2x[8,8]-None | 64 | 90.0, 80.0 | 300.0, 300.0 |" in report  # the per-stage table, K per stage
    fig = usage_figure(configs, "the evaluation set")
    try:
        panels = [{t.get_text() for t in ax.get_yticklabels()} for ax in fig.axes]
        assert panels == [{"FSQ [8,8,8,8]", "LFQ 12 bits", "VQ-EMA 4096", "SimVQ 4096"},
                          {"RFSQ 2x[8,8]-None", "RFSQ 2x[8,8]-Scale", "RFSQ 2x[8,8]-LayerNorm"}]
        labels = [t.get_text() for ax in fig.axes for t in ax.texts]
        assert any("of 4096 codes" in t for t in labels) and any("of 64 codes per stage" in t for t in labels)
        assert text_overflow(fig) == []
    finally:
        pyplot().close(fig)


def test_report_states_the_eval_set_and_does_not_rank_noise(tmp_path: Path) -> None:
    from vqkit.modalities.image.report import _ranking
    from vqkit.reporting.noise import psnr_ranks

    configs = _quick_like(tmp_path)
    clear = _metrics(25.0, 0.2)  # 5 dB above the rest: measurably better
    clear.update(images=14, mse=4 * 10 ** (-25.0 / 10) * 1.2)
    configs.append(_config(tmp_path, "SimVQ-big", "SimVQ", 12.0, clear, None))
    results = {"preset": "quick", "data": "photos", "image_size": 32, "configs": configs}
    report = write_report(tmp_path / "r", results)[0].read_text()
    assert "evaluation set: 14 images of photos (its val split), 32×32 px each" in report
    ranked = report[report.index("## Ranked by PSNR"):]
    assert "| 1 | SimVQ-big | 25.00 ± " in ranked  # alone on top
    for c in configs[:7]:  # 0.01 dB apart: one shared rank, said to be within noise
        assert f"| 2= | {c['name']} |" in ranked
    assert "within noise" in ranked
    assert "± " in _column(report, "PSNR (dB) ± s.e.", "FSQ [8,8,8,8]")
    assert psnr_ranks(configs[:7]) == [1] * 7
    assert "All 7 configurations are within noise of one another" in "\n".join(_ranking(configs[:7]))


def test_psnr_standard_error_matches_the_spread_of_per_image_psnr() -> None:
    """From means only (metrics.json has no per-image values), for log-normal per-image MSE."""
    import math
    import random

    from vqkit.reporting.noise import psnr_standard_error

    rng = random.Random(0)
    mses = [4 * 10 ** (-rng.gauss(22.0, 3.0) / 10) for _ in range(4000)]
    psnrs = [10 * math.log10(4 / m) for m in mses]
    n, mean = len(psnrs), sum(psnrs) / len(psnrs)
    true_se = math.sqrt(sum((p - mean) ** 2 for p in psnrs) / (n - 1) / n)
    estimate = psnr_standard_error({"images": n, "psnr": mean, "mse": sum(mses) / n})
    assert estimate is not None and abs(estimate / true_se - 1) < 0.1
    assert psnr_standard_error({"images": 1, "psnr": mean, "mse": sum(mses) / n}) is None
    assert psnr_standard_error({"images": n, "psnr": mean}) is None  # no MSE: unknown, not zero


def test_configs_sharing_a_rate_get_a_dot_plot_not_stacked_labels(tmp_path: Path) -> None:
    from vqkit.reporting.plots import rate_distortion_figure

    fig = rate_distortion_figure(_quick_like(tmp_path))
    try:
        ax = fig.axes[0]
        assert "12.0 bits/token" in ax.get_title()
        assert [t.get_text() for t in ax.get_yticklabels()][:1] == ["RFSQ 2x[8,8]-LayerNorm"]  # best first
        assert len({round(x, 6) for x in ax.get_xlim()}) == 2 and ax.get_xlabel().startswith("PSNR")
        assert text_overflow(fig) == []  # old: seven names annotated at one point
    finally:
        pyplot().close(fig)


def test_rate_distortion_at_several_rates_names_configs_in_a_legend(tmp_path: Path) -> None:
    from vqkit.reporting.plots import rate_distortion_figure

    configs = _quick_like(tmp_path)[:3]
    configs.append(_config(tmp_path, "FSQ-16", "FSQ", 16.0, _metrics(23.0, 0.2), None))
    fig = rate_distortion_figure(configs)
    try:
        ax = fig.axes[0]
        assert not ax.texts  # no name written at a point
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [
            "FSQ [8,8,8,8] (FSQ)", "LFQ 12 bits (LFQ)", "VQ-EMA 4096 (VQ-EMA)", "FSQ-16 (FSQ)"]
        xs = [float(container.lines[0].get_xdata()[0]) for container in ax.containers]  # one per errorbar
        assert len(set(xs)) == len(xs) == 4  # three at 12 bits spread sideways, not on one point
        assert text_overflow(fig) == []
    finally:
        pyplot().close(fig)


def test_bar_labels_stay_inside_the_axes() -> None:
    from vqkit.reporting.plots import barh_figure

    names = ["a", "a much longer configuration name", "c"]
    values: list[float | None] = [31.5, 30.0, None]
    labels = ["31.50 ± 0.40 dB at 12.0 bits/token, a long label"] * 2 + ["n/a"]
    for xlim in (None, (0.0, 32.0)):  # a growing axis, and a fixed one (labels then go inside the bars)
        fig = barh_figure(names, values, labels, "PSNR (dB)", "PSNR", errors=[0.4, 0.4, 0.0], xlim=xlim)
        try:
            assert text_overflow(fig) == []
        finally:
            pyplot().close(fig)


def test_relative_paths_are_read_against_the_report_folder(tmp_path: Path) -> None:
    from vqkit.experiments.compare import load_results

    configs = _quick_like(tmp_path)[:2]
    relative = [c | {"run_dir": f"runs/{c['run_dir'].split('/runs/')[1]}",
                     "eval_dir": f"runs/{c['eval_dir'].split('/runs/')[1]}"} for c in configs]
    paths = write_report(tmp_path, {"preset": "quick", "configs": relative})
    assert tmp_path / "best_reconstructions.png" in paths  # found through the relative eval_dir
    (tmp_path / "results.json").write_text(json.dumps({"configs": [relative[0], configs[1]]}))  # new, old
    loaded = load_results(tmp_path / "results.json")["configs"]
    assert [Path(c["run_dir"]) for c in loaded] == [tmp_path / "runs" / n for n in ("FSQ_[8,8,8,8]", "LFQ_12_bits")]
    assert all((Path(c["eval_dir"]) / "reconstructions.png").is_file() for c in loaded)


def test_every_file_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    replaced: list[Path] = []
    real = os.replace

    def replace(src: Any, dst: Any) -> None:
        replaced.append(Path(dst))
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    paths = write_report(tmp_path / "r", {"preset": "quick", "configs": _quick_like(tmp_path)})
    assert sorted(paths) == sorted(replaced)
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.startswith(".")]  # no temporary file left


def test_speech_report_states_its_test_set_and_noise_and_keeps_labels_inside(tmp_path: Path) -> None:
    from vqkit.modalities.audio.report import noise_threshold, quality_figure, write_audio_report

    def speech(name: str, pesq: float, stoi: float, usage: float, stages: int = 1) -> dict[str, Any]:
        metrics = {"utterances": 100, "seconds": 767.0, "sample_rate": 16000, "tokens_per_second": 50.0,
                   "pesq_wb": pesq, "stoi": stoi, "estoi": stoi - 0.3, "mel_distance": 1.1, "si_sdr": -40.0,
                   "usage": usage, "usage_per_stage": [usage] * stages, "usage_ceiling": 1.0, "perplexity": 90.0,
                   "kbps": 0.6}
        return {"name": name, "bits_per_token": 12.0, "metrics": metrics, "run_dir": "runs/none"}

    configs = [speech("VQ-EMA 4096", 1.07, 0.663, 0.06), speech("SimVQ 4096", 1.08, 0.98, 0.22),
               speech("RFSQ 2x64", 1.5, 0.70, 0.9, stages=2)]
    paths = write_audio_report(tmp_path, {"preset": "simvq-audio", "modality": "audio", "val_data": "test-other",
                                          "configs": configs})
    report = paths[0].read_text()
    assert "test set: 100 utterances of test-other, 767 s in all (7.7 s on average) at 16000 Hz" in report
    assert _column(report, "codebook usage (% of K)", "RFSQ 2x64") == "—"
    assert _column(report, "per-stage usage (% of a stage's codes, mean)", "RFSQ 2x64") == "90.0"
    assert "PESQ-WB: RFSQ 2x64 (1.500) is ahead of every other configuration by 0.14 or more" in report
    assert "STOI: SimVQ 4096 (0.980) is ahead" in report
    assert "Differences below 0.14 in PESQ-WB, 0.014 in STOI, 0.02 in ESTOI are read as within noise" in report
    assert noise_threshold("stoi", 400) == pytest.approx(noise_threshold("stoi", 100) / 2)  # a larger set, finer
    fig = quality_figure(configs, "the 100 test utterances")
    try:
        assert text_overflow(fig) == []  # STOI 0.98 on a 0-to-1 axis: its label goes inside the bar
    finally:
        pyplot().close(fig)


# --- per-image scores (metrics.json's per_image): exact standard errors and paired comparisons ---

def _paired_pair(root: Path, n: int = 100, gap: float = 0.44) -> list[dict[str, Any]]:
    """Two configurations on the same ``n`` images whose per-image PSNR spreads by ~3 dB over images
    (hard images are hard for both) and differs by ``gap`` dB give or take 0.3 dB per image."""
    import math
    import random

    rng = random.Random(1)
    base = [rng.gauss(22.0, 3.0) for _ in range(n)]
    scores = {"FSQ": [b + gap + rng.gauss(0.0, 0.3) for b in base], "RFSQ-None": base}
    ids = [f"img{i:03d}.png" for i in range(n)]
    configs = []
    for name, psnrs in scores.items():
        metrics = _metrics(sum(psnrs) / n, 0.2)
        metrics.update(images=n, mse=sum(4 * 10 ** (-p / 10) for p in psnrs) / n,
                       per_image={"ids": ids, "psnr": [round(p, 4) for p in psnrs]})
        assert math.isfinite(metrics["psnr"])
        configs.append(_config(root, name, name.split("-")[0], 12.0, metrics, None))
    return configs


def _without_per_image(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c | {"metrics": {k: v for k, v in c["metrics"].items() if k != "per_image"}} for c in configs]


def test_paired_differences_separate_what_the_unpaired_estimate_calls_a_tie(tmp_path: Path) -> None:
    import math

    from vqkit.reporting.noise import (
        estimated_psnr_standard_error,
        measurably_better,
        paired_items,
        psnr_ranks,
        psnr_standard_error,
    )

    fsq, rfsq = configs = _paired_pair(tmp_path)
    assert paired_items(configs, "psnr")
    unpaired = math.hypot(*(estimated_psnr_standard_error(c["metrics"]) or 0.0 for c in configs))
    gap = fsq["metrics"]["psnr"] - rfsq["metrics"]["psnr"]
    assert 0.3 < gap < 2 * unpaired  # independent errors: a tie
    assert not measurably_better(fsq, rfsq, paired=False) and measurably_better(fsq, rfsq)  # same images: not
    assert psnr_ranks(configs) == [1, 2] and psnr_ranks(_without_per_image(configs)) == [1, 1]
    psnrs = fsq["metrics"]["per_image"]["psnr"]
    mean = sum(psnrs) / len(psnrs)
    exact = math.sqrt(sum((p - mean) ** 2 for p in psnrs) / (len(psnrs) - 1) / len(psnrs))
    assert psnr_standard_error(fsq["metrics"]) == pytest.approx(exact)  # from per-image values, not estimated

    report = write_report(tmp_path / "r", {"preset": "p", "configs": configs})[0].read_text()
    ranked = report[report.index("## Ranked by PSNR"):]
    assert "| rank | Method | PSNR (dB) ± s.e. | bits/token | paired Δ to the row above (dB) ± s.e. |" in ranked
    assert f"| 1 | FSQ | {fsq['metrics']['psnr']:.2f} ± {exact:.2f} | 12.0 | — |" in ranked
    row = next(line for line in ranked.splitlines() if line.startswith("| 2 | RFSQ-None |"))
    delta, se = (float(x) for x in row.split("|")[5].split("±"))
    assert delta == pytest.approx(gap, abs=0.006) and 0 < se < 0.05 and delta > 2 * se  # printed to 0.01
    assert "|mean paired difference| < 2 × s.e. of the paired differences" in ranked  # the rule, stated
    assert "same 100 images" in ranked and "within noise of one another" not in ranked
    assert "exact: the standard deviation of the per-image PSNR" in report


def test_results_without_per_image_psnr_fall_back_to_the_estimate_and_say_so(tmp_path: Path) -> None:
    from vqkit.reporting.noise import psnr_standard_error

    configs = _without_per_image(_paired_pair(tmp_path))
    assert psnr_standard_error(configs[0]["metrics"]) is not None  # estimated from the means
    report = write_report(tmp_path / "r", {"preset": "p", "configs": configs})[0].read_text()
    ranked = report[report.index("## Ranked by PSNR"):]
    assert "| 1= | FSQ |" in ranked and "| 1= | RFSQ-None |" in ranked  # the old, unpaired verdict: a tie
    assert "paired Δ" not in ranked and "| rank | Method | PSNR (dB) ± s.e. | bits/token |\n" in ranked
    assert "these results hold no per-image PSNR" in ranked and "combined as if independent" in ranked
    assert "metrics.json holds no per-image PSNR here" in report and "estimated from the gap" in report


def test_per_image_psnr_of_other_images_or_of_some_configs_only_is_not_paired(tmp_path: Path) -> None:
    from vqkit.reporting.noise import paired_items, psnr_ranks, psnr_standard_error_is_exact

    fsq, rfsq = _paired_pair(tmp_path)
    shifted = dict(rfsq["metrics"]["per_image"], ids=[f"other{i}" for i in range(100)])
    other = [fsq, rfsq | {"metrics": rfsq["metrics"] | {"per_image": shifted}}]
    assert not paired_items(other, "psnr") and psnr_ranks(other) == [1, 1]
    report = write_report(tmp_path / "a", {"preset": "p", "configs": other})[0].read_text()
    assert "not of the same images" in report and "paired Δ" not in report
    mixed = [fsq, *_without_per_image([rfsq])]
    assert psnr_standard_error_is_exact(fsq["metrics"]) and not psnr_standard_error_is_exact(mixed[1]["metrics"])
    assert psnr_ranks(mixed) == [1, 1]
    report = write_report(tmp_path / "b", {"preset": "p", "configs": mixed})[0].read_text()
    assert "exact (the standard deviation of the per-image PSNR (stored in metrics.json) / √images) except for " \
           "RFSQ-None" in report
    assert "no per-image PSNR for RFSQ-None" in report


def test_paired_report_plots_keep_labels_inside(tmp_path: Path) -> None:
    from vqkit.reporting.plots import psnr_figure, rate_distortion_figure

    configs = _paired_pair(tmp_path)
    for fig in (psnr_figure(configs, " (100 images)"), rate_distortion_figure(configs)):
        try:
            assert "paired differences" in fig.axes[0].get_xlabel()  # whiskers that overlap are not a tie
            assert text_overflow(fig) == []
        finally:
            pyplot().close(fig)


def test_speech_report_compares_utterance_by_utterance_when_scores_are_stored(tmp_path: Path) -> None:
    import random

    from vqkit.modalities.audio.report import write_audio_report

    rng = random.Random(2)
    n = 60
    ids = [f"spk{i % 6}/utt{i:02d}.flac" for i in range(n)]
    base = {"pesq_wb": [rng.gauss(2.0, 0.5) for _ in range(n)], "stoi": [rng.gauss(0.85, 0.05) for _ in range(n)],
            "estoi": [rng.gauss(0.65, 0.07) for _ in range(n)], "mel_distance": [rng.gauss(1.0, 0.2) for _ in range(n)],
            "si_sdr": [rng.gauss(5.0, 4.0) for _ in range(n)]}
    shifts = {"A": {"pesq_wb": 0.0, "stoi": 0.006, "estoi": 0.0, "mel_distance": 0.0, "si_sdr": 0.0},
              "B": {k: 0.0 for k in base}}

    def speech(name: str) -> dict[str, Any]:
        scores = {k: [v + shifts[name][k] + rng.gauss(0.0, 0.002 if k == "stoi" else 0.05) for v in values]
                  for k, values in base.items()}
        scores["pesq_wb"][3] = None  # type: ignore[call-overload]  # PESQ failed on one utterance: left out
        means = {k: sum(v for v in values if v is not None) / len([v for v in values if v is not None])
                 for k, values in scores.items()}
        metrics = {"utterances": n, "seconds": 400.0, "sample_rate": 16000, "tokens_per_second": 50.0, **means,
                   "usage": 0.5, "usage_per_stage": [0.5], "usage_ceiling": 1.0, "perplexity": 90.0, "kbps": 0.6,
                   "per_utterance": {"ids": ids, **{k: [None if v is None else round(v, 4) for v in values]
                                                    for k, values in scores.items()}}}
        return {"name": name, "bits_per_token": 12.0, "metrics": metrics, "run_dir": "runs/none"}

    configs = [speech("A"), speech("B")]
    stoi_gap = configs[0]["metrics"]["stoi"] - configs[1]["metrics"]["stoi"]
    from vqkit.modalities.audio.report import noise_threshold

    assert 0 < stoi_gap < noise_threshold("stoi", n)  # the assumed spread would call STOI a tie
    report = write_audio_report(tmp_path, {"preset": "simvq-audio", "modality": "audio", "configs": configs})[0]
    noise = report.read_text().split("## Noise")[1]
    assert "same 60 test utterances" in noise and "|mean paired difference| < 2 × s.e." in noise
    assert "- STOI: A (" in noise and "is ahead of every other configuration by more than twice the paired" in noise
    assert "- PESQ-WB: all 2 configurations are within noise of the best" in noise
    assert "- mel distance:" in noise and "- SI-SDR (dB):" in noise
    assert ("| Method | PESQ-WB ± s.e. | STOI ± s.e. | ESTOI ± s.e. | mel distance ± s.e. | SI-SDR (dB) ± s.e. |"
            in noise)
    assert "assumed" not in noise.split("| B |")[1]  # no assumed spread left
    stale = [c | {"metrics": {k: v for k, v in c["metrics"].items() if k != "per_utterance"}} for c in configs]
    old = write_audio_report(tmp_path / "old", {"preset": "simvq-audio", "modality": "audio", "configs": stale})[0]
    text = old.read_text()
    assert "Per-utterance scores are not stored in these results" in text and "assumed per-utterance" in text
    assert "- STOI: all 2 configurations are within" in text  # the fallback cannot tell them apart


def test_ranking_rows_are_in_rank_order_when_noise_is_not_transitive(tmp_path: Path) -> None:
    """A (best) is measurably better than C; B is noisy, within noise of both, with a mean just below C's:
    B shares rank 1 with A although C, ranked 2, has the higher mean. Rows must read 1=, 1=, 2."""
    import random

    from vqkit.modalities.image.report import _ranking

    rng = random.Random(3)
    n = 60
    base = [rng.gauss(22.0, 3.0) for _ in range(n)]
    noise = [rng.gauss(0.0, 6.0) for _ in range(n)]
    noise = [e - sum(noise) / n for e in noise]  # B's mean is exactly C's - 0.05
    scores = {"A": [b + 0.3 + rng.gauss(0.0, 0.05) for b in base], "C": base,
              "B": [b - 0.05 + e for b, e in zip(base, noise, strict=True)]}
    ids = [f"img{i:03d}.png" for i in range(n)]
    configs = []
    for name, psnrs in scores.items():
        metrics = _metrics(sum(psnrs) / n, 0.2)
        metrics.update(images=n, per_image={"ids": ids, "psnr": [round(p, 4) for p in psnrs]})
        configs.append(_config(tmp_path, name, name, 12.0, metrics, None))
    rows = [line.split("|")[1:3] for line in _ranking(configs) if line.startswith("| ") and "rank" not in line]
    assert [(r.strip(), m.strip()) for r, m in rows] == [("1=", "A"), ("1=", "B"), ("2", "C")], rows
