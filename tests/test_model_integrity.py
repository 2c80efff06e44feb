"""A saved model's ``config.json`` is covered by its own digest (``config_sha256``), and ``from_pretrained``
checks its arguments: issue 18 found an edited config loading silently (``"symmetric": true`` added to an
FSQ's arguments costs 1.6 dB), ``from_pretrained(None)`` a TypeError and ``device="cuda"`` without CUDA an
AssertionError."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from vqkit.models import Tokenizer, TokenizerConfig, pretrained
from vqkit.storage import IntegrityError

MODEL = TokenizerConfig(arch="rfsq_conv", quantizer="fsq", conv_channels=(4, 8), quantizer_args={"levels": [5, 5]})


def _saved(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    Tokenizer(MODEL).save_pretrained(tmp_path)
    return tmp_path / "config.json", json.loads((tmp_path / "config.json").read_text())


def _one_line_naming(err: BaseException, path: Path) -> None:
    assert str(path) in str(err) and "\n" not in str(err), str(err)


@pytest.mark.parametrize("edit", [
    lambda m: m["config"]["quantizer_args"].update(symmetric=True),
    lambda m: m["config"].update(norm_groups=4),
    lambda m: m.update(vqkit_version="9.9"),
    lambda m: m.update(config_sha256=m["config_sha256"].upper()),
    lambda m: m.update(config_sha256=None),
])
def test_an_edited_config_is_refused_in_one_line_naming_the_file(tmp_path: Path, edit: Any) -> None:
    path, meta = _saved(tmp_path)
    edit(meta)
    path.write_text(json.dumps(meta, indent=2))
    with pytest.raises(IntegrityError, match="config_sha256") as info:
        Tokenizer.from_pretrained(tmp_path)
    _one_line_naming(info.value, path)


def test_the_digest_ignores_layout_only(tmp_path: Path) -> None:
    path, meta = _saved(tmp_path)
    path.write_text(json.dumps(dict(reversed(list(meta.items()))), separators=(",", ":")))  # reordered, no spaces
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(Tokenizer.from_pretrained(tmp_path), Tokenizer)


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"format": ' + "[" * 50_000])
def test_a_deeply_nested_config_is_one_line(tmp_path: Path, text: str) -> None:
    path, _ = _saved(tmp_path)
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        Tokenizer.from_pretrained(tmp_path)
    _one_line_naming(info.value, path)


def test_a_nested_value_inside_a_consistent_config_is_refused(tmp_path: Path) -> None:
    """Digest recomputed (a careless tool, not damage): the config check still refuses it, naming the file."""
    path, meta = _saved(tmp_path)
    deep: Any = 1
    for _ in range(900):
        deep = [deep]
    meta["config"]["quantizer_args"]["levels"] = deep
    path.write_bytes(pretrained.config_json(meta))
    with pytest.raises(ValueError) as info:
        Tokenizer.from_pretrained(tmp_path)
    _one_line_naming(info.value, path)


def test_a_model_saved_by_vqkit_0_1_loads_with_a_warning(tmp_path: Path) -> None:
    path, meta = _saved(tmp_path)
    del meta["config_sha256"]
    path.write_text(json.dumps(meta, indent=2))
    with pytest.warns(UserWarning, match=r"without config_sha256: its config cannot be verified"):
        model = Tokenizer.from_pretrained(tmp_path)
    assert isinstance(model, Tokenizer)


def test_the_shipped_default_carries_its_config_digest() -> None:
    meta = json.loads((pretrained.resolve("default") / "config.json").read_text())
    assert meta["config_sha256"] == pretrained.config_digest(meta)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Tokenizer.from_pretrained("default")


@pytest.mark.parametrize("directory", [None, 5, b"default", "", "  ", ["default"]])
def test_from_pretrained_refuses_a_directory_that_is_not_a_path(directory: Any) -> None:
    with pytest.raises(ValueError, match=r"^directory = "):
        Tokenizer.from_pretrained(directory)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda")])
def test_a_device_this_machine_lacks_is_a_value_error(device: Any) -> None:
    with pytest.raises(ValueError, match=r"device 'cuda(:0)?': this machine has no CUDA device"):
        Tokenizer.from_pretrained("default", device=device)


@pytest.mark.parametrize("device", [3, None, "gpu", "cuda:x"])
def test_a_device_that_is_not_one_is_a_value_error(device: Any) -> None:
    with pytest.raises(ValueError, match=r"device"):
        Tokenizer.from_pretrained("default", device=device)
