"""Fuzzed training configs (every field x edge values — NaN, Infinity, 2**63, -1, "7", true, null, ... —
then hypothesis cases), flags and image files (hypothesis, fixed seeds): only documented errors —
a ValueError through the API, exit 2 (1 for a per-file codec error) with a one-line message through
the CLI — or a clean success for valid input; never a traceback, a hang, a crash, or an invalid value
accepted. Most cases run in-process, a sample through the CLI; the script runs many more."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from .harness import (
    CliServer,
    FuzzResult,
    describe_groups,
    fuzz_configs_api,
    fuzz_configs_cli,
    fuzz_flags_cli,
    fuzz_images_api,
    fuzz_images_cli,
    have,
)


def _report(results: Sequence[FuzzResult]) -> str:
    bad = sum(not r.clean for r in results)
    return "\n".join([f"{bad} of {len(results)} cases not clean:", *describe_groups(results)])


def _check(results: Sequence[FuzzResult]) -> None:
    if not all(r.clean for r in results):
        pytest.fail(_report(results), pytrace=False)


def test_fuzzed_config_files_through_the_api(tmp_path: Path) -> None:
    _check(fuzz_configs_api(150, tmp_path, seed=1))


def test_fuzzed_config_files_through_the_cli(cli_server: CliServer, tmp_path: Path) -> None:
    _check(fuzz_configs_cli(cli_server, 6, tmp_path, seed=2))


def test_fuzzed_train_flags(cli_server: CliServer, tmp_path: Path) -> None:
    _check(fuzz_flags_cli(cli_server, 8, tmp_path, seed=3))


def test_fuzzed_images_through_the_api(tmp_path: Path) -> None:
    _check(fuzz_images_api(40, tmp_path, seed=4))


def test_fuzzed_images_through_the_cli(cli_server: CliServer, tmp_path: Path) -> None:
    _check(fuzz_images_cli(cli_server, 6, tmp_path, seed=5))


def test_yaml_config_error_is_a_value_error(tmp_path: Path) -> None:
    """Without PyYAML a .yaml config must be refused saying so; with it, malformed YAML must be refused."""
    from vqkit.train import load_config

    path = tmp_path / "train.yaml"
    path.write_text("steps: [1,\n  lr: : :\n\t- x\n")
    try:
        load_config(file=path)
    except ValueError as err:
        assert str(path) in str(err), f"the error does not name {path}: {err}"
        if not have("yaml"):
            assert "PyYAML" in str(err), err
    except Exception as err:
        raise AssertionError(f"{type(err).__name__} (not a ValueError): {err}") from err
    else:
        raise AssertionError("malformed YAML accepted")
