"""The training config of sections: round trips, the converter from the flat form of older versions (old run
folders and checkpoints resume), options of another modality or arch refused by name, typed quantizer args."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from vqkit.cli.main import build_parser, main
from vqkit.experiments.compare import CompareConfig, _check_same_settings, entry_config
from vqkit.experiments.presets import PRESETS as SWEEPS
from vqkit.models import Tokenizer, TokenizerConfig
from vqkit.runs import evaluate_run, run_config
from vqkit.storage import unseal
from vqkit.train import PRESETS, TrainConfig, load_config, read_run_config, train
from vqkit.train.checkpoint import CHECKPOINT, MAGIC, load_checkpoint, save_checkpoint
from vqkit.validation import ConfigError

QUANTIZER_ARGS = {"levels": [8, 5, 5, 5], "num_stages": 2, "conditioning": "layernorm"}


def _old_flat_config(out: Path, **changes: Any) -> dict[str, Any]:
    """A run's config.json as vqkit wrote it before configs had sections: every one of the 44 options, image
    and audio alike, old names, the quantizer's and the arch's arguments as JSON text."""
    config = {
        "data": "photos", "val_data": "", "image_size": 32, "segment": 16000, "resize": 0, "max_train_images": 0,
        "max_val_images": 8, "workers": 0, "bad_files": "skip", "arch": "rfsq_conv", "quantizer": "rfsq",
        "quantizer_args": json.dumps(QUANTIZER_ARGS), "arch_args": "{}", "conv_channels": [16, 32], "ch": 128,
        "ch_mult": [1, 2, 2, 4], "num_res_blocks": 2, "steps": 5, "batch_size": 8, "lr": 0.002,
        "betas": [0.9, 0.999], "weight_decay": 5e-05, "warmup": 0.0, "schedule": "linear", "grad_clip": 1.0,
        "ema_decay": 0.0, "nonfinite": "skip", "l1_weight": 1.0, "mse_weight": 0.0, "lpips_weight": 0.0,
        "gan_weight": 0.0, "gan_start": 0, "disc_lr": 0.0001, "mel_weight": 0.0, "stft_weight": 0.0,
        "fm_weight": 0.0, "out": str(out), "seed": 0, "log_every": 1, "eval_every": 1000, "ckpt_every": 5,
        "prior_images": 0, "amp": "auto", "device": "cpu",
    }
    assert len(config) == 44
    return {**config, **changes}


def test_an_old_flat_run_folder_and_checkpoint_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    old = _old_flat_config(run)
    train(load_config(None, _write(tmp_path / "old.json", old)))  # 5 steps; then as an older vqkit left it:
    (run / "config.json").write_text(json.dumps(old, indent=2))
    payload = torch.load(io.BytesIO(unseal((run / CHECKPOINT).read_bytes(), MAGIC, "ckpt")), weights_only=True)
    assert isinstance(payload["config"]["optim"], dict)  # checkpoints store the nested form now
    payload["config"] = old  # ...and stored the flat one before
    save_checkpoint(run, {k: v for k, v in payload.items() if k not in ("format", "version")})

    cfg = run_config(run)  # vqkit eval / compare read the old config.json
    metrics = evaluate_run(run, None, "val", tmp_path / "eval", max_items=2, device="cpu")
    assert metrics["images"] == 2 and json.loads((tmp_path / "eval" / "metrics.json").read_text())["image_size"] == 32
    assert cfg.data.max_val_items == 8 and cfg.run.prior_items == 0 and cfg.model.args.conv_channels == (16, 32)
    assert dict(cfg.quantizer.args) == {**QUANTIZER_ARGS, "levels": (8, 5, 5, 5)}
    assert cfg.crop.image_size == 32  # type: ignore[attr-defined]
    resumed = load_config(None, run / "config.json", steps=8)  # `vqkit train --config run/config.json --resume`
    assert load_checkpoint(run, resumed.to_dict())["step"] == 5
    summary = train(resumed, resume=True)
    assert summary["steps"] == 8
    assert json.loads((run / "config.json").read_text())["optim"]["steps"] == 8  # rewritten in the nested form


def test_old_flat_form_gives_the_same_tokenizer_as_before(tmp_path: Path) -> None:
    cfg = read_run_config(_write(tmp_path / "config.json", _old_flat_config(tmp_path)))
    assert cfg.tokenizer_config() == TokenizerConfig(arch="rfsq_conv", quantizer="rfsq", quantizer_args=QUANTIZER_ARGS,
                                                     conv_channels=(16, 32))
    vqgan = load_config("simvq-cpu")
    assert vqgan.tokenizer_config() == TokenizerConfig(arch="vqgan", quantizer="simvq", ch=32, ch_mult=(1, 2, 2, 4),
                                                       num_res_blocks=1,
                                                       quantizer_args={"dim": 64, "codebook_size": 8192})
    speech = load_config("speech-cpu", None, arch_args=json.dumps({"channels": 24, "backbone_dim": 192}))
    old_speech = TokenizerConfig(arch="speech", quantizer="simvq", quantizer_args={"dim": 64, "codebook_size": 4096},
                                 arch_args={"channels": 24, "backbone_dim": 192})
    assert speech.tokenizer_config().resolved() == old_speech.resolved()  # the config a saved model stores
    assert isinstance(Tokenizer(vqgan.tokenizer_config()).quantizer.codebook_size, int)


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_loads_and_round_trips(name: str) -> None:
    cfg = load_config(name)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert list(cfg.to_dict()) == ["data", "crop", "model", "quantizer", "objective", "optim", "run"]
    flat = {k: json.dumps(v) if k.endswith("_args") else v for k, v in PRESETS[name].items()}
    assert load_config(None, None, **flat) == cfg  # the same values as JSON text


def test_every_sweep_configuration_loads(tmp_path: Path) -> None:
    for preset in SWEEPS.values():
        for scale in preset.base:
            for entry in preset.rows(scale):
                cfg = entry_config(preset, entry, CompareConfig(scale=scale), tmp_path / "r")  # type: ignore[arg-type]
                assert cfg.quantizer.name == entry.quantizer


def test_a_nested_file_overrides_a_preset_section_by_section(tmp_path: Path) -> None:
    path = _write(tmp_path / "cfg.json", {"optim": {"lr": 1e-3}, "objective": {"lpips_weight": 0.5}})
    cfg = load_config("rfsq-cpu", path, steps=7)
    assert (cfg.optim.lr, cfg.optim.steps, cfg.objective.lpips_weight) == (1e-3, 7, 0.5)  # type: ignore[attr-defined]
    assert cfg.optim.betas == (0.9, 0.999)  # the preset's, kept
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['optim.lrr'\] \(did you mean 'optim.lrr' -> "
                                          r"'optim.lr'\?\)"):
        load_config(None, _write(tmp_path / "bad.json", {"optim": {"lrr": 1}}))


@pytest.mark.parametrize(("options", "words"), [
    ({"arch": "vqgan", "mel_weight": 1.0}, "--mel-weight (objective.mel_weight) is an audio option; arch vqgan "
                                           "trains images"),
    ({"arch": "speech", "image_size": 32}, "--image-size (crop.image_size) is an image option; arch speech trains "
                                           "utterances"),
    ({"arch": "speech", "mse_weight": 0.0}, "--mse-weight (objective.mse_weight) is an image option"),  # even at 0
    ({"ch": 64}, "--ch (model.args.ch) is an option of arch vqgan; rfsq_conv takes --conv-channels"),
    ({"arch": "vqgan", "arch_args": {"channels": 8}}, "--arch-args (model.args) is an option of arch speech"),
    ({"channels": 16}, "--channels (model.args.channels) is an option of arch speech; rfsq_conv takes "
                       "--conv-channels"),
])
def test_an_option_of_another_modality_or_arch_is_refused_by_name(options: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, None, **options)
    assert words in str(info.value)


def test_speech_fields_are_options_and_arch_args_still_replaces_them_all() -> None:
    one = load_config("speech-cpu", None, channels=16, strides=(4, 80)).model.args
    assert (one.channels, one.strides, one.backbone_dim) == (16, (4, 80), 192)  # the preset's other sizes kept
    whole = load_config("speech-cpu", None, arch_args='{"channels": 16}').model.args
    assert (whole.channels, whole.backbone_dim) == (16, 256)  # the object replaces the section, as it always did
    both = load_config("speech-cpu", None, arch_args={"channels": 16}, backbone_dim=64).model.args
    assert (both.channels, both.backbone_dim) == (16, 64)
    with pytest.raises(ConfigError, match=r"model.args.channels = 0 \(int\): Input should be greater than or equal"):
        load_config("speech-cpu", None, channels=0)
    args = build_parser().parse_args(["train", "--arch", "speech", "--no-input-norm", "--channels", "8"])
    assert (args.input_norm, args.channels) == (False, 8)


def test_files_may_hold_other_options_at_their_defaults_and_stored_runs_drop_them(tmp_path: Path) -> None:
    assert load_config(None, _write(tmp_path / "a.json", {"segment": 16000, "mel_weight": 0}))
    with pytest.raises(ConfigError, match=r"--mel-weight \(objective.mel_weight\) is an audio option"):
        load_config(None, _write(tmp_path / "b.json", {"mel_weight": 1.0}))
    cfg = read_run_config(_write(tmp_path / "c.json", _old_flat_config(tmp_path, mel_weight=1.0, ch=64)))
    assert cfg.model.arch == "rfsq_conv" and not hasattr(cfg.objective, "mel_weight")  # it never applied


def test_the_cli_refuses_a_flag_of_the_other_modality(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--arch", "vqgan", "--mel-weight", "0", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--mel-weight (objective.mel_weight) is an audio option; arch vqgan trains images" in err
    assert not (tmp_path / "run").exists()


def test_preset_help_shows_the_presets_values_under_the_new_names() -> None:
    parser = build_parser("speech-cpu")
    text = " ".join(parser._subparsers._group_actions[0].choices["train"].format_help().split())  # type: ignore[union-attr]
    assert "--max-val-items INT, --max-val-images INT Validation items" in text and "(default: 100)" in text
    assert '(default: {"dim": 64, "codebook_size": 4096})' in text  # --quantizer-args, as JSON


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_nested_file_sets_the_arch_and_quantizer_sections(tmp_path: Path, suffix: str) -> None:
    nested = {"model": {"arch": "vqgan", "args": {"ch": 64, "ch_mult": [1, 2]}},
              "quantizer": {"name": "fsq", "args": {"levels": [8, 5, 5]}}, "optim": {"steps": 3}}
    if suffix == ".yaml":
        yaml = pytest.importorskip("yaml")
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump(nested))
    else:
        path = _write(tmp_path / "cfg.json", nested)
    cfg = load_config(None, path)
    assert cfg.model.args.ch == 64 and cfg.model.args.ch_mult == (1, 2) and cfg.optim.steps == 3
    assert dict(cfg.quantizer.args) == {"levels": (8, 5, 5)}


def test_old_and_new_flag_names_are_one_option() -> None:
    parser = build_parser()
    old = parser.parse_args(["train", "--max-train-images", "3", "--max-val-images", "4", "--prior-images", "5"])
    new = parser.parse_args(["train", "--max-train-items", "3", "--max-val-items", "4", "--prior-items", "5"])
    assert (old.max_train_items, old.max_val_items, old.prior_items) == (3, 4, 5) == \
        (new.max_train_items, new.max_val_items, new.prior_items)
    with pytest.raises(ConfigError, match="max_val_images is the old name of max_val_items"):
        load_config(max_val_images=3, max_val_items=4)


@pytest.mark.parametrize(("quantizer", "args", "words"), [
    ("simvq", {"dim": 64, "codebook_size": "4096"}, "quantizer.args.codebook_size = '4096' (str): Input should be a "
                                                    "valid integer"),
    ("simvq", '{"dim": 64, "codebook_size": 4096.5}', "quantizer.args.codebook_size = 4096.5 (float)"),
    ("simvq", {"dim": 64, "codebook_size": 8, "init": "zeros"}, "quantizer.args.init = 'zeros'"),
    ("fsq", {"levels": [8, "x"]}, "quantizer.args.levels"),
    ("simvq", {"dim": 64}, "missing a required argument: 'codebook_size'"),
    ("fsq", {"levels": [8, 8], "num_stages": 2}, "unexpected keyword argument 'num_stages'"),
    ("nope", {}, "quantizer.name = 'nope'"),
])
def test_quantizer_args_are_typed_and_errors_name_the_argument(quantizer: str, args: Any, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(quantizer=quantizer, quantizer_args=args)
    assert words in str(info.value)


def test_checkpoint_of_another_model_is_still_refused_across_forms(tmp_path: Path) -> None:
    old = _old_flat_config(tmp_path)
    save_checkpoint(tmp_path, {"config": old, "step": 3})
    same = load_config(None, _write(tmp_path / "old.json", old))
    assert load_checkpoint(tmp_path, same.to_dict())["step"] == 3
    other = same.replace(model=dataclasses.replace(same.model, args=dataclasses.replace(same.model.args,
                                                                                          conv_channels=(8, 16))))
    with pytest.raises(ValueError, match=r"checkpoint of another model.*conv_channels"):
        load_checkpoint(tmp_path, other.to_dict())


def test_a_sweep_run_of_an_older_version_is_reused_only_with_the_same_settings(tmp_path: Path) -> None:
    preset = SWEEPS["quick"]
    entry = preset.rows("cpu")[0]
    wanted = entry_config(preset, entry, CompareConfig(steps=4), tmp_path)
    flat = _old_flat_config(tmp_path)
    nested = wanted.to_dict()
    flat.update(image_size=nested["crop"]["image_size"], quantizer=entry.quantizer,
                quantizer_args=json.dumps(entry.args), conv_channels=nested["model"]["args"]["conv_channels"],
                **{k: nested["optim"][k] for k in ("steps", "batch_size", "lr", "warmup", "betas", "weight_decay")},
                max_val_images=nested["data"]["max_val_items"], prior_images=nested["run"]["prior_items"],
                seed=0, log_every=10, eval_every=4, ckpt_every=1)
    _write(tmp_path / "config.json", flat)
    _check_same_settings(tmp_path, wanted)  # the old flat config.json holds these very settings
    _write(tmp_path / "config.json", {**flat, "lr": 1.0})
    with pytest.raises(ValueError, match=r"other settings \(optim.lr\)"):
        _check_same_settings(tmp_path, wanted)
