"""`vqkit encode` / `decode` / `fit-prior` / `rd` on real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_compress import image_codec, photo, tokenizer
from vqkit.cli import main
from vqkit.codec.priors import PRIOR_FILE, save_prior
from vqkit.metrics import psnr
from vqkit.modalities import open_codec
from vqkit.modalities.image.codec import to_tensor
from vqkit.models import Tokenizer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("model")
    codec = image_codec(tokenizer("rfsq_ln"))
    codec.model.save_pretrained(root)
    save_prior(root, codec.fit_prior([photo(32, 32, seed=s) for s in range(4)]))
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    Image.fromarray(photo(333, 517)).save(root / "odd.png")
    Image.fromarray(photo(1, 500)).save(root / "line.png")
    Image.fromarray(photo(40, 30)).save(root / "photo.jpg", quality=90)
    Image.fromarray(photo(21, 13, c=1)[..., 0]).save(root / "grey.png")
    rgba = np.dstack([photo(17, 19), np.full((17, 19), 128, np.uint8)])
    Image.fromarray(rgba).save(root / "alpha.png")
    (root / "sub").mkdir()
    Image.fromarray(photo(16, 16, seed=5)).save(root / "sub" / "nested.png")
    return root


def test_encode_decode_folder(model_dir: Path, images: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["encode", str(images), "-o", str(tmp_path / "vqt"), "--model", str(model_dir), "--check"]) == 0
    out = capsys.readouterr().out
    assert "bpp" in out and "PSNR" in out and "overall" in out
    files = sorted(p.relative_to(tmp_path / "vqt").as_posix() for p in (tmp_path / "vqt").rglob("*.vqt"))
    assert files == ["alpha.vqt", "grey.vqt", "line.vqt", "odd.vqt", "photo.vqt", "sub/nested.vqt"]
    assert main(["decode", str(tmp_path / "vqt"), "-o", str(tmp_path / "png"), "--model", str(model_dir)]) == 0
    for name, shape in [("odd", (333, 517)), ("line", (1, 500)), ("grey", (21, 13)), ("alpha", (17, 19))]:
        with Image.open(tmp_path / "png" / f"{name}.png") as im:
            assert (im.height, im.width) == shape
            assert im.mode == ("L" if name == "grey" else "RGB")
    original = np.asarray(Image.open(images / "odd.png"))
    decoded = np.asarray(Image.open(tmp_path / "png" / "odd.png"))
    assert float(psnr(to_tensor(original), to_tensor(decoded))[0]) > 5  # an untrained model, but a real image


def test_decode_errors_are_one_line_and_others_go_on(model_dir: Path, images: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    sources = [str(images / "photo.jpg"), str(images / "grey.png")]
    main(["encode", *sources, "-o", str(tmp_path), "--model", str(model_dir)])
    data = (tmp_path / "photo.vqt").read_bytes()
    (tmp_path / "photo.vqt").write_bytes(data[:-10])
    capsys.readouterr()
    assert main(["decode", str(tmp_path), "-o", str(tmp_path / "out"), "--model", str(model_dir)]) == 1
    err = capsys.readouterr().err
    assert "photo.vqt: token file is corrupt or truncated" in err and "Traceback" not in err
    assert (tmp_path / "out" / "grey.png").is_file() and not (tmp_path / "out" / "photo.png").exists()
    capsys.readouterr()
    wrong = ["decode", str(tmp_path / "grey.vqt"), "-o", str(tmp_path / "o2"), "--model", str(model_dir.parent)]
    assert main(wrong) == 2
    assert "config.json: missing" in capsys.readouterr().err


def test_wrong_model_is_named(model_dir: Path, images: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other"
    tokenizer("rfsq_ln", seed=7).save_pretrained(other)
    (other / PRIOR_FILE).write_bytes((model_dir / PRIOR_FILE).read_bytes())
    main(["encode", str(images / "grey.png"), "-o", str(tmp_path), "--model", str(model_dir)])
    capsys.readouterr()
    assert main(["decode", str(tmp_path / "grey.vqt"), "-o", str(tmp_path), "--model", str(other)]) == 1
    assert "was encoded with model" in capsys.readouterr().err


def test_missing_input(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["encode", str(tmp_path / "nope.png"), "-o", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_fit_prior_command(tmp_path: Path, images: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tokenizer("simvq").save_pretrained(tmp_path / "m")
    assert main(["fit-prior", str(tmp_path / "m"), "--data", str(images), "--max-images", "3"]) == 0
    assert (tmp_path / "m" / PRIOR_FILE).is_file()
    assert open_codec(tmp_path / "m")[0].tables is not None


def test_rd_report(model_dir: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "rd"
    assert main(["rd", "--model", str(model_dir), "--data", str(images / "sub"), "--out", str(out),
                 "--qualities", "20,80"]) == 0
    result = json.loads((out / "rd.json").read_text())
    rows = {(r["codec"], r["setting"]) for r in result["summary"]}
    assert {(str(model_dir), "static"), (str(model_dir), "context"), ("JPEG", "20"), ("JPEG", "80")} <= rows
    tok = next(r for r in result["summary"] if r["codec"] == str(model_dir) and r["setting"] == "context")
    pixels = 16 * 16  # the one image of images/sub
    # every stage cut of the multi-stage model is a point of its curve, and each curve has its BD-rate rows
    stage_rows = sorted(r["stages"] for r in result["summary"] if r["codec"] == str(model_dir)
                        and r["setting"] == "context")
    assert stage_rows == list(range(1, len(stage_rows) + 1)) and len(stage_rows) > 1
    bd = [b for b in result["bd"] if b["model"] == str(model_dir) and b["prior"] == "context"]
    assert {b["against"] for b in bd} == {"JPEG", "WebP", "AVIF"} & {r["codec"] for r in result["summary"]}
    assert all(b["points"] == len(stage_rows) for b in bd)
    assert "Bjøntegaard" in (out / "report.md").read_text()
    tok = max((r for r in result["summary"] if r["codec"] == str(model_dir) and r["setting"] == "context"),
              key=lambda r: r["stages"])
    # a layered payload (one stream per stage): per stage at most a 64-bit stream end and a 1-byte length
    stages = len(Tokenizer.from_pretrained(model_dir).symbol_layout())
    slack = stages * (64 + 8)
    assert tok["bpp_cross_entropy"] - 1e-9 <= tok["bpp_payload"] <= tok["bpp_cross_entropy"] + slack / pixels
    assert tok["bpp_file"] - tok["bpp_payload"] >= 8 * 30 / pixels  # magic, ids, shapes, CRC: never free
    jpeg = sorted((r for r in result["summary"] if r["codec"] == "JPEG"), key=lambda r: r["bpp_file"])
    assert jpeg[0]["psnr"] < jpeg[1]["psnr"]  # more bits, better fidelity
    report = (out / "report.md").read_text()
    assert "| JPEG | 80 |" in report and "cross-entropy" in report
    assert (out / "rd.png").stat().st_size > 10_000


def test_rd_draws_the_family_as_one_curve(model_dir: Path, images: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`--model family`: the --quality ladder's points, relabelled as one model whose 'stages' is Q, with the
    same numbers as the member's own stage cuts; a member measured only for the family is not reported."""
    import vqkit.experiments.rd as rd

    monkeypatch.setattr(rd, "QUALITY", ((str(model_dir), 2), ("default", 1), (str(model_dir), 1)))
    out = tmp_path / "rd"
    assert main(["rd", "--model", "family", "--model", "default", "--data", str(images / "sub"), "--out", str(out),
                 "--qualities", "20,80", "--priors", "context"]) == 0
    result = json.loads((out / "rd.json").read_text())
    assert result["models"] == ["family", "default"]
    assert {r["codec"] for r in result["summary"]} == {"family", "default", "JPEG", "WebP", "AVIF"}
    family = {r["stages"]: r for r in result["summary"] if r["codec"] == "family"}
    assert sorted(family) == [1, 2, 3]
    assert family[2]["bpp_file"] == next(r for r in result["summary"] if r["codec"] == "default")["bpp_file"]
    own = [r for r in result["records"] if r["codec"] == "family" and r["stages"] == 3]
    assert len(own) == 1 and family[3]["bpp_file"] < family[1]["bpp_file"]  # 1 stage of 2: a smaller file
    assert any(b["model"] == "family" for b in result["bd"])
    assert "`family` is the shipped codec family's ladder" in (out / "report.md").read_text()
