"""`vqkit eval` end to end on a tiny trained run, and `evaluate` against the per-image metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from vqkit.cli import main
from vqkit.evaluate import evaluate as evaluate_loop
from vqkit.metrics import psnr
from vqkit.modalities import Evaluation
from vqkit.modalities.image.scorer import NOT_REQUESTED, ImageScorer
from vqkit.models import Tokenizer
from vqkit.train import load_config, train

TINY: dict[str, Any] = dict(
    data="photos", image_size=32, batch_size=8, arch="rfsq_conv", conv_channels=(16, 32), quantizer="rfsq",
    quantizer_args=json.dumps(dict(levels=[8, 5, 5, 5], num_stages=2, conditioning="layernorm")),
    lr=2e-3, warmup=0.0, log_every=1, eval_every=1000, ckpt_every=5, max_val_images=8,
)
KEYS = {"images", "l1", "mse", "psnr", "batch_psnr", "batch_psnr_note", "ssim", "lpips", "rfid", "usage",
        "perplexity", "usage_per_stage", "perplexity_per_stage", "tokens", "usage_ceiling", "bits_per_token",
        "side_bits_per_image", "bits_per_pixel"}



def run_evaluation(model: Tokenizer, batches: list[torch.Tensor], device: str) -> Evaluation:
    """Images through the one evaluation loop with the image scorer (no LPIPS, no rFID)."""
    return evaluate_loop(model, batches, device, ImageScorer())


def evaluate(model: Tokenizer, batches: list[torch.Tensor], device: str) -> dict[str, Any]:
    return run_evaluation(model, batches, device).metrics

@pytest.fixture(autouse=True)
def no_pretrained_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every place LPIPS / FID weights are looked for points at an empty folder."""
    for var in ("VQKIT_WEIGHTS", "HOME", "TORCH_HOME"):
        monkeypatch.setenv(var, str(tmp_path / "no-weights"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "run"
    summary = train(load_config(**TINY, steps=10, out=str(out)))
    assert {"psnr", "l1", "usage", "perplexity", "images", "ssim"} <= set(summary["val"])
    return out


def test_vqkit_eval_writes_metrics_and_pictures(run_dir: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(run_dir), "--data", "photos", "--batch-size", "4", "--max-images", "12"]) == 0
    out = run_dir / "eval-val"
    record = json.loads((out / "metrics.json").read_text())
    metrics = record["metrics"]
    assert set(metrics) >= KEYS
    assert metrics["images"] == 12
    assert metrics["tokens"] == 12 * 8 * 8  # 32 px, f = 4
    assert metrics["usage_ceiling"] == pytest.approx(768 / 1000)  # 768 tokens, 2 stages of 8·5·5·5 codes
    assert len(metrics["usage_per_stage"]) == 2 and 0 < metrics["usage"] <= 1
    assert metrics["bits_per_pixel"] == pytest.approx(metrics["bits_per_token"] / 16)  # f = 4
    assert "pt_inception-2015-12-05-6726825d.pth" in metrics["rfid"]["unavailable"]
    assert "vgg16-397923af.pth" in metrics["lpips"]["unavailable"]
    assert str(tmp_path / "no-weights") in metrics["lpips"]["unavailable"]  # says where it looked
    assert 0 < metrics["ssim"] < 1 and metrics["psnr"] > 5
    with Image.open(out / "reconstructions.png") as grid:
        assert grid.size[1] > 2 * 32 and grid.size[0] > 8 * 32
    with Image.open(out / "code_usage.png") as plot:
        plot.load()
    assert "psnr" in capsys.readouterr().out


def test_vqkit_eval_defaults_to_the_runs_own_validation_data(run_dir: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    assert main(["eval", str(run_dir), "--max-images", "4", "--out", str(out)]) == 0
    assert "--data not given, using the run's val data: photos" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["metrics"]["images"] == 4


def test_vqkit_eval_needs_a_finished_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tmp_path), "--data", "photos"]) == 2
    assert "final" in capsys.readouterr().err


def test_evaluate_averages_per_image_psnr_over_the_split(run_dir: Path) -> None:
    model = Tokenizer.from_pretrained(run_dir / "final")
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    batches = [images[:4], images[4:]]
    metrics = evaluate(model, batches, "cpu")
    with torch.no_grad():
        recon = model(images)[0].clamp(-1, 1)
    assert metrics["images"] == 6
    assert metrics["psnr"] == pytest.approx(psnr(recon, images).mean().item(), abs=1e-4)
    assert metrics["lpips"] == {"unavailable": NOT_REQUESTED} and metrics["rfid"] == {"unavailable": NOT_REQUESTED}
    assert not model.training


def test_bits_per_pixel_counts_the_side_information_of_instance_layernorm() -> None:
    """Instance-LayerNorm RFSQ needs 2·dim·stages float32 per image besides its indices: counted."""
    from vqkit.models import TokenizerConfig

    args = dict(levels=[8, 5, 5, 5], num_stages=2, conditioning="layernorm")
    images = [torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1]
    for stats, side in (("running", 0), ("instance", 32 * 2 * 4 * 2)):
        torch.manual_seed(0)
        model = Tokenizer(TokenizerConfig(arch="rfsq_conv", quantizer="rfsq", conv_channels=(16, 32),
                                          quantizer_args={**args, "layernorm_stats": stats}))
        metrics = evaluate(model, images, "cpu")
        assert metrics["side_bits_per_image"] == side
        assert metrics["bits_per_pixel"] == pytest.approx(metrics["bits_per_token"] / 16 + side / (32 * 32))


def test_vqkit_eval_stores_each_images_psnr_by_name(run_dir: Path, tmp_path: Path) -> None:
    """metrics.json's per_image: one PSNR (4 decimals) per named image, in the dataset's order, whose mean
    is the reported psnr; one line per list, so 50k images stay a few MB."""
    import math

    out = tmp_path / "eval"
    assert main(["eval", str(run_dir), "--data", "photos", "--batch-size", "5", "--max-images", "12",
                 "--out", str(out)]) == 0
    text = (out / "metrics.json").read_text()
    metrics = json.loads(text)["metrics"]
    per_image = metrics["per_image"]
    assert set(per_image) == {"ids", "psnr"} and set(metrics) >= KEYS  # the old keys are all still there
    ids, psnrs = per_image["ids"], per_image["psnr"]
    assert len(ids) == len(set(ids)) == len(psnrs) == metrics["images"] == 12
    assert ids[0] == "chelsea@y0x0"  # the bundled photos: photo and crop corner
    assert all(p == round(p, 4) for p in psnrs)
    assert sum(psnrs) / 12 == pytest.approx(metrics["psnr"], abs=1e-4)
    assert math.sqrt(sum((p - metrics["psnr"]) ** 2 for p in psnrs) / 11) > 0  # images differ
    assert len(text.splitlines()) < 60  # each list on one line, not one line per image
    again = tmp_path / "again"  # deterministic: the same images, in the same order, with the same scores
    assert main(["eval", str(run_dir), "--data", "photos", "--batch-size", "3", "--max-images", "12",
                 "--out", str(again)]) == 0
    assert json.loads((again / "metrics.json").read_text())["metrics"]["per_image"]["ids"] == ids


def test_the_training_loops_evaluation_stays_flat(run_dir: Path) -> None:
    """The metrics (what validation logs) hold no per-image list; the evaluation keeps it beside them."""
    model = Tokenizer.from_pretrained(run_dir / "final")
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    assert "per_image" not in evaluate(model, [images[:2], images[2:]], "cpu")
    result = run_evaluation(model, [images[:2], images[2:]], "cpu")
    with torch.no_grad():
        expected = psnr(model(images)[0].clamp(-1, 1), images)
    assert result.per_item["psnr"] == pytest.approx(expected.tolist(), abs=1e-4)
    assert "per_image" not in result.metrics


def test_item_ids_name_files_crops_and_subsets(tmp_path: Path) -> None:
    from torch.utils.data import Subset, TensorDataset

    from vqkit.modalities.image.datasets import ImageFolder, PhotoDataset
    from vqkit.reporting.evaluation import item_ids, metrics_json, per_item_record

    for name in ("b/2.png", "a/1.png", "a/3.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", (40, 40), "gray").save(tmp_path / name)
    folder = ImageFolder(tmp_path, size=32, train=False)
    assert item_ids(folder) == ["a/1.png", "a/3.png", "b/2.png"]
    assert item_ids(Subset(folder, [2, 0])) == ["b/2.png", "a/1.png"]
    photos = PhotoDataset(32, train=False)
    assert len(item_ids(photos)) == len(photos) and len(set(item_ids(photos))) == len(photos)
    assert item_ids(TensorDataset(torch.zeros(3, 1))) == ["0", "1", "2"]
    record = per_item_record(["x", "y", "z"], {"psnr": [20.123456, float("inf"), float("nan")]})
    assert record == {"ids": ["x", "y", "z"], "psnr": [20.1235, None, None]}  # JSON has no inf / NaN
    assert '"psnr": [20.1235, null, null]' in metrics_json({"metrics": {"per_image": record}}).decode()
    with pytest.raises(ValueError, match="2 per-item psnr scores for 3 items"):
        per_item_record(["x", "y", "z"], {"psnr": [1.0, 2.0]})
