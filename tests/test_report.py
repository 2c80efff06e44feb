"""write_report on a fake three-config sweep: every config, its rate, the n/a note and every plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

from vqkit.experiments.report import write_report


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
        assert im.height == 2 * (22 + 16)  # one panel per family


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
    assert header.endswith("| paper LPIPS | paper rFID | paper PSNR | paper SSIM | paper usage (%) |")
    row = next(line for line in report.splitlines() if line.startswith(f"| {entry.name} |"))
    assert row.endswith("| 0.16 | 3.67 | 22.34 | 0.708 | 100.0 |")  # SimVQ Table 3, 1k codes
    assert "max usage" not in report  # no usage_ceiling recorded: no column


def test_usage_ceiling_column_when_the_set_is_smaller_than_a_codebook(tmp_path: Path) -> None:
    small, big = _metrics(20.0, 0.2), _metrics(21.0, 0.2)
    small.update(usage=0.3, usage_ceiling=1.0)
    big.update(usage=0.05, usage_ceiling=0.25)  # 16k tokens, 65k codes
    configs = [_config(tmp_path, "SimVQ-1k", "SimVQ", 10.0, small, None),
               _config(tmp_path, "SimVQ-65k", "SimVQ", 16.0, big, None)]
    report = write_report(tmp_path / "r", {"preset": "p", "configs": configs})[0].read_text()
    header = next(line for line in report.splitlines() if line.startswith("| Method |"))
    assert "| usage (%) | max usage (%) | perplexity |" in header
    assert "| 5.0 | 25.0 |" in next(line for line in report.splitlines() if line.startswith("| SimVQ-65k |"))
    assert "| 30.0 | 100.0 |" in next(line for line in report.splitlines() if line.startswith("| SimVQ-1k |"))
    assert "a larger set is needed" in report


def test_side_information_is_counted_in_a_note(tmp_path: Path) -> None:
    metrics = _metrics(22.4, 0.2)
    metrics.update(side_bits_per_image=512, bits_per_pixel=0.84375)
    configs = [_config(tmp_path, "RFSQ-LN-instance", "RFSQ", 22.0, metrics, None)]
    report = write_report(tmp_path / "r", {"preset": "p", "configs": configs})[0].read_text()
    assert "RFSQ-LN-instance: decoding also needs 512 bits of side information per image, 0.8438 bits" in report
