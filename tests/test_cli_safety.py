"""What ordinary use of `vqkit encode` / `decode` / `fit-prior` must never do: destroy or misread a user's
files. Each test here failed on the vqkit before this behaviour existed (the repros of issue 18)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_compress import image_codec, photo, tokenizer
from vqkit.cli import main
from vqkit.codec import TokenFile, TokenFileError
from vqkit.codec.priors import PRIOR_FILE, save_prior
from vqkit.modalities import open_codec


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    codec = image_codec(tokenizer("fsq"))
    codec.model.save_pretrained(root)
    save_prior(root, codec.fit_prior([photo(24, 24, seed=s) for s in range(3)]))
    return root


def _image(folder: Path, name: str = "x.png", seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo(20, 28, seed=seed)).save(folder / name)
    return folder / name


def test_decode_into_the_input_folder_never_replaces_the_original(model_dir: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`vqkit encode p -o p; vqkit decode p -o p` used to replace p/x.png by its lossy decode, exit 0."""
    folder = tmp_path / "p"
    original = _image(folder).read_bytes()
    assert main(["encode", str(folder), "-o", str(folder), "--model", str(model_dir)]) == 0
    capsys.readouterr()
    assert main(["decode", str(folder), "-o", str(folder), "--model", str(model_dir)]) == 2
    err = capsys.readouterr().err
    assert "exist already" in err and "--overwrite" in err and "x.png" in err
    assert (folder / "x.png").read_bytes() == original  # untouched
    assert main(["decode", str(folder), "-o", str(folder), "--model", str(model_dir), "--skip-existing"]) == 0
    assert "0 written, 1 skipped (exist), 0 failed" in capsys.readouterr().out
    assert (folder / "x.png").read_bytes() == original
    assert main(["decode", str(folder), "-o", str(folder), "--model", str(model_dir), "--overwrite"]) == 0
    assert (folder / "x.png").read_bytes() != original  # the user asked for it


def test_encode_refuses_to_overwrite_a_vqt_unless_asked(model_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    src = _image(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["encode", str(src), "-o", str(out), "--model", str(model_dir)]) == 0
    before = (out / "x.vqt").read_bytes()
    Image.fromarray(photo(16, 12)).save(src)  # the source changes; its old .vqt must not be silently replaced
    assert main(["encode", str(src), "-o", str(out), "--model", str(model_dir)]) == 2
    assert (out / "x.vqt").read_bytes() == before
    assert main(["encode", str(src), "-o", str(out), "--model", str(model_dir), "--overwrite"]) == 0
    assert (out / "x.vqt").read_bytes() != before
    with pytest.raises(SystemExit) as usage:  # argparse: the two policies exclude each other
        main(["encode", str(src), "-o", str(out), "--overwrite", "--skip-existing"])
    assert usage.value.code == 2


def test_a_target_that_is_an_input_is_refused_even_with_overwrite(model_dir: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A link makes the output path name an input file: --overwrite must not write through it."""
    folder = tmp_path / "in"
    src = _image(folder)
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.vqt").symlink_to(src)
    assert main(["encode", str(src), "-o", str(out), "--model", str(model_dir), "--overwrite"]) == 2
    assert "is one of the inputs" in capsys.readouterr().err
    assert np.asarray(Image.open(src)).shape == (20, 28, 3)


def test_out_naming_a_file_fails_once_before_any_work(model_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    sources = [str(_image(tmp_path / "in", f"{i}.png", seed=i)) for i in range(3)]
    (tmp_path / "file").write_text("not a folder")
    assert main(["encode", *sources, "-o", str(tmp_path / "file"), "--model", str(model_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("is a file") == 1 and (tmp_path / "file").read_text() == "not a folder"


def test_a_batch_ends_with_a_summary_and_exit_code_1_when_some_fail(model_dir: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    _image(folder, "good.png")
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert main(["encode", str(folder), "-o", str(tmp_path / "out"), "--model", str(model_dir)]) == 1
    out = capsys.readouterr()
    assert "encode: 1 written, 0 skipped (exist), 1 failed" in out.out and "bad.png" in out.err


def test_refitting_a_prior_never_strands_old_files(model_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`vqkit fit-prior M` used to replace prior.safetensors and make every file encoded with M undecodable."""
    src = _image(tmp_path / "in")
    assert main(["encode", str(src), "-o", str(tmp_path / "v1"), "--model", str(model_dir)]) == 0
    data = tmp_path / "photos"
    for i in range(3):
        _image(data, f"{i}.png", seed=10 + i)
    assert main(["fit-prior", str(model_dir), "--data", str(data), "--max-images", "3"]) == 0
    assert "still decode" in capsys.readouterr().err
    codec, _ = open_codec(model_dir)
    old = TokenFile.from_bytes((tmp_path / "v1" / "x.vqt").read_bytes())
    assert old.model_id != codec.model_id  # new tables, new id for new files ...
    assert main(["decode", str(tmp_path / "v1"), "-o", str(tmp_path / "png"), "--model", str(model_dir)]) == 0
    assert np.asarray(Image.open(tmp_path / "png" / "x.png")).shape == (20, 28, 3)  # ... and the old file decodes
    assert len(list((model_dir / "prior-archive").glob("*.safetensors"))) == 1
    assert (model_dir / PRIOR_FILE).is_file()


def test_encode_refuses_what_decode_would_refuse(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An image above the decode cap used to encode (exit 0) into a file that could never be decoded. The
    cap is lowered here so that the check, not an hour of encoding, decides."""
    from vqkit.modalities.image import codec as image_codec_module

    codec, _ = open_codec(model_dir)
    data = codec.encode(photo(20, 20)).data
    monkeypatch.setattr(image_codec_module, "MAX_PIXELS", 399)
    with pytest.raises(TokenFileError, match=r"a \.vqt file may hold"):
        codec.tokens(photo(20, 20))
    with pytest.raises(TokenFileError, match=r"a \.vqt file may hold"):
        codec.decode(data)  # the same limit, both ways
    assert codec.tokens(photo(19, 21))[0].shape[1:] == (5, 6)  # 399 pixels: at the limit, fine


def test_nan_side_information_is_refused_not_decoded_to_black(tmp_path: Path) -> None:
    codec = image_codec(tokenizer("rfsq_ln_instance"))
    data = codec.encode(photo(16, 16), "uniform").data
    file = TokenFile.from_bytes(data)
    side = np.frombuffer(file.side_info, "<f4").copy()
    side[3] = np.nan
    forged = TokenFile(file.modality, file.prior, file.model_id, file.signal_shape, file.grid, file.codebook_sizes,
                       file.payload, side.tobytes(), file.tile)
    with pytest.raises(TokenFileError, match="NaN or Inf"):
        codec.decode(forged.to_bytes())


def test_info_describes_a_file_without_a_model(model_dir: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    src = _image(tmp_path / "in")
    main(["encode", str(src), "-o", str(tmp_path / "v"), "--model", str(model_dir)])
    capsys.readouterr()
    vqt = tmp_path / "v" / "x.vqt"
    assert main(["info", str(vqt), "--json"]) == 0
    (info,) = json.loads(capsys.readouterr().out)
    assert info["modality"] == "image" and info["signal_shape"] == [3, 20, 28] and info["prior"] == "context"
    assert info["bytes"] == vqt.stat().st_size and info["bits_per_sample"] == pytest.approx(8 * info["bytes"] / 560)
    assert main(["info", str(vqt), "--model", str(model_dir)]) == 0
    assert f"{model_dir}: yes" in capsys.readouterr().out
    tokenizer("fsq", seed=5).save_pretrained(tmp_path / "other")
    assert main(["info", str(vqt), "--model", str(tmp_path / "other")]) == 0
    assert "no: this file was encoded with model" in capsys.readouterr().out
    (tmp_path / "junk.vqt").write_bytes(b"junk")
    assert main(["info", str(tmp_path / "junk.vqt")]) == 1


def test_a_speech_file_with_the_image_default_says_what_to_do(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"RIFF")  # never read: the suffix decides
    assert main(["encode", str(wav), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "takes images, and no audio model ships with vqkit" in err and "vqkit train --preset speech-cpu" in err


def test_encode_check_goes_on_after_a_too_short_utterance(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`encode --check` used to abort the whole batch, unnamed, on one utterance too short to measure."""
    sf = pytest.importorskip("soundfile")
    from test_speech_pipeline import RATE, speech_like
    from test_speech_pipeline import tokenizer as speech_tokenizer

    speech_tokenizer().save_pretrained(tmp_path / "m")
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "a.wav", speech_like(0.5, 1), RATE)
    sf.write(tmp_path / "in" / "b.wav", speech_like(0.005, 2), RATE)  # 80 samples
    argv = ["encode", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "m"),
            "--prior", "uniform", "--check"]
    code = main(argv)
    out = capsys.readouterr()
    assert (tmp_path / "out" / "a.vqt").is_file() and "SI-SDR" in out.out  # the others go on
    assert code == 1 and "b.wav: mel_distance needs more than" in out.err and "Traceback" not in out.err
    assert "1 written, 0 skipped (exist), 1 failed" in out.out


def test_a_first_fit_keeps_files_encoded_before_any_tables(tmp_path: Path) -> None:
    """A model saved without prior tables encodes with the uniform prior; fitting its first tables must not
    strand those files (their model id is the one without tables)."""
    root = tmp_path / "bare"
    tokenizer("fsq").save_pretrained(root)
    bare, _ = open_codec(root)
    data = bare.encode(photo(16, 16), "uniform").data
    save_prior(root, bare.fit_prior([photo(24, 24, seed=s) for s in range(2)]))
    fitted, _ = open_codec(root)
    assert fitted.tables is not None and fitted.model_id != bare.model_id
    assert np.array_equal(fitted.decode(data), bare.decode(data))


def test_rgba_pictures_round_trip_through_the_api() -> None:
    """Alpha is not coded: a 4-channel picture decodes to RGB (it used to fail to decode)."""
    codec = image_codec(tokenizer("fsq"))
    rgba = np.dstack([photo(20, 30), np.full((20, 30), 9, np.uint8)])
    data = codec.encode(rgba, "uniform").data
    assert TokenFile.from_bytes(data).signal_shape == (4, 20, 30)
    assert np.array_equal(codec.decode(data), codec.decode(image_codec(codec.model).encode(rgba[..., :3],
                                                                                         "uniform").data))


def test_the_default_models_id_and_tables_are_pinned() -> None:
    """Every .vqt file written with the shipped default names its id: a change to how it is computed (the
    config, the weights' digest, the tables' digest) would strand them all. The tables were refitted once
    with the learned prior (2026-12-05): the earlier tables stay in the package's prior-archive, so files of
    the earlier id decode as before (a committed one, to the same pixels)."""
    codec, _ = open_codec("default")
    assert codec.model_id.hex() == "760fddc3936ddb832e82319cd1dc9050"
    assert codec.tables is not None and codec.tables.learned is not None
    assert codec.tables.digest() == "49875b42e55a5347f36660d7c7a5a5468826f9959a0c804a27b7340a4a9f74f0"
    earlier = codec.tables_for(bytes.fromhex("6f375fe1f314d9bbbd91ad8b17467f8d"))
    assert earlier is not None
    assert earlier.digest() == "418a4e92dd56253692763ff7152801ca8e6cda853e9fb12b268c790bc44a983c"
    legacy = Path(__file__).parent / "data" / "legacy"
    old_file = (legacy / "default-context-v1.vqt").read_bytes()
    assert TokenFile.from_bytes(old_file).model_id.hex() == "6f375fe1f314d9bbbd91ad8b17467f8d"
    assert np.array_equal(codec.decode(old_file), np.load(legacy / "default-context-v1.npy"))
