"""One validation layer: every config checked for type, range and known keys, with clear messages."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vqkit.cli.main import build_parser, field_docs, main
from vqkit.experiments.compare import CompareConfig
from vqkit.experiments.demo import DemoConfig
from vqkit.experiments.rd import RDConfig
from vqkit.models import TokenizerConfig
from vqkit.models.speech import SpeechConfig
from vqkit.train import PRESETS, TrainConfig, load_config
from vqkit.train.convert import options
from vqkit.validation import ConfigError, resolve_device

BAD_TRAIN_VALUES = [  # (field, value, words the message must contain)
    ("steps", "abc", "valid integer"),
    ("data", 5, "valid string"),
    ("quantizer_args", [1, 2], "JSON object"),
    ("log_every", 2.5, "valid integer"),
    ("grad_clip", -1, "greater than or equal to 0"),
    ("lr", float("inf"), "finite number"),
    ("lr", float("nan"), "finite number"),
    ("lr", 0, "greater than 0"),
    ("steps", True, "valid integer"),
    ("steps", 0, "greater than or equal to 1"),
    ("warmup", 1.0, "less than 1"),
    ("betas", [0.9], "too few items"),
    ("betas", [0.9, 1.5], "less than 1"),
    ("ch_mult", [1, 0], "greater than or equal to 1"),
    ("schedule", "cosine", "'linear' or 'constant'"),
    ("device", "gpu", "pattern"),
    ("seed", -1, "greater than or equal to 0"),
    ("bad_files", "ignore", "'skip' or 'fail'"),
    ("arch", "", "at least 1 character"),
    ("steps", 2**63, "less than or equal to 1099511627776"),  # no loop asked to run for ever
    ("image_size", 2**63, "less than or equal to 65536"),
    ("workers", 10**6, "less than or equal to 1024"),
]
CONTEXT = {"ch_mult": {"arch": "vqgan"}}
"""Other options a bad value needs beside it to be an option of the config at all (ch_mult: a vqgan option)."""


@pytest.mark.parametrize(("field", "value", "words"), BAD_TRAIN_VALUES)
def test_bad_config_file_values_are_refused_naming_field_value_and_expectation(
    tmp_path: Path, field: str, value: object, words: str
) -> None:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({field: value, **CONTEXT.get(field, {})}))  # NaN / Infinity: JSON's extensions
    with pytest.raises(ConfigError) as info:
        load_config(file=path)
    message = str(info.value)
    assert field in message and words in message, message
    assert repr(value if not isinstance(value, list) else tuple(value)) in message or field == "quantizer_args"


def test_every_bad_field_is_reported_at_once() -> None:
    with pytest.raises(ConfigError, match=r"optim.steps = 'abc'.*optim.grad_clip = -1.*run.log_every = 2\.5"):
        load_config(steps="abc", log_every=2.5, grad_clip=-1)


def test_unknown_keys_are_refused_with_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['stpes'\] \(did you mean 'stpes' -> 'steps'\?\)"):
        load_config(stpes=3)
    path = tmp_path / "cfg.json"
    path.write_text('{"steps": 3,')  # a broken file names the file
    with pytest.raises(ConfigError, match=r"cfg\.json: not valid JSON"):
        load_config(file=path)
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"cfg\.json: expected a mapping of option names to values, got list"):
        load_config(file=path)
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(file=path)


def test_valid_values_are_normalised() -> None:
    cfg = load_config(lr=1, betas=[0.5, 0.9], arch="vqgan", ch_mult=[1, 2])  # int -> float, JSON lists -> tuples
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.betas == (0.5, 0.9) and cfg.model.args.ch_mult == (1, 2)
    assert cfg.replace(optim=dataclasses.replace(cfg.optim, steps=5)).optim.steps == 5
    with pytest.raises(ConfigError, match="steps"):
        dataclasses.replace(cfg.optim, steps=-5)  # every construction is checked, not only files


def test_every_preset_is_valid() -> None:
    for name in PRESETS:
        assert isinstance(load_config(name), TrainConfig)


def test_saved_model_configs_and_arch_args_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"ch = '128' \(str\)"):
        TokenizerConfig.from_dict({"arch": "vqgan", "ch": "128"})
    with pytest.raises(ConfigError, match="unknown field"):
        TokenizerConfig.from_dict({"arch": "vqgan", "width": 3})
    with pytest.raises(ConfigError, match="quantizer_args must be a mapping"):
        TokenizerConfig(quantizer_args=[1, 2])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"strides = \(\) .*at least 1 item"):
        SpeechConfig(strides=())
    with pytest.raises(ConfigError, match="input_norm"):
        SpeechConfig(input_norm=1)  # type: ignore[arg-type]
    assert SpeechConfig(strides=[2, 4]).strides == (2, 4)  # type: ignore[arg-type]


def test_command_configs_are_validated() -> None:
    with pytest.raises(ConfigError, match="scale"):
        CompareConfig(scale="huge")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"qualities = \(5, 101\)"):
        RDConfig(data="x", qualities=(5, 101))
    with pytest.raises(ConfigError, match="priors"):
        RDConfig(data="x", priors=("gzip",))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="batch"):
        DemoConfig(batch=0)


def test_devices_are_checked_against_this_machine() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ConfigError, match="expected 'auto', 'cpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")
    else:
        with pytest.raises(ConfigError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_device_cuda_without_cuda_is_one_clean_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "vqkit.cli", "train", "--steps", "1", "--device", "cuda",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("vqkit: error: device 'cuda': this machine has no CUDA")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_cli_bad_config_file_is_one_clean_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cfg.json"
    path.write_text('{"steps": "abc", "lr": Infinity}')
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vqkit: error: TrainConfig: invalid optim.steps = 'abc' (str)") and "optim.lr = inf" in err
    assert not (tmp_path / "run").exists()  # refused before any work started


def test_train_help_describes_every_option_with_the_presets_defaults() -> None:
    for option in options().values():
        docs = {k: v for cls in option.cls.__mro__ for k, v in field_docs(cls).items()}
        assert docs.get(option.field), f"--{option.name} needs a description"
    plain = build_parser().format_help()
    assert "vqkit" in plain
    parser = build_parser("speech-cpu")
    train_parser = parser._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    text = " ".join(train_parser.format_help().split())
    assert "Defaults shown: preset speech-cpu's values" in text
    assert "(default: 1500)" in text  # speech-cpu's steps, not the dataclass's 300
    assert "(default: 0.0005)" in text


def test_tuple_of_choices_parses_from_the_command_line() -> None:
    args = build_parser().parse_args(["rd", "--data", "x", "--priors", "static,uniform"])
    assert RDConfig(data=args.data, priors=args.priors).priors == ("static", "uniform")
    with pytest.raises(ConfigError, match=r"priors = \('gzip',\)"):
        RDConfig(data="x", priors=build_parser().parse_args(["rd", "--data", "x", "--priors", "gzip"]).priors)
