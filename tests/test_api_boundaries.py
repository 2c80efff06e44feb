"""Every public quantizer constructor checks its arguments strictly, at construction, and a bad one is a
ValueError naming the class and the argument (issue 18: ``FSQ(8)`` was a TypeError, ``FSQ("88")`` built
levels [8, 8], ``VQ(beta=nan)`` was accepted, ``FSQ(dim=10**9)`` failed inside torch's allocator)."""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from vqkit.quantizers import (
    EMAVQ,
    FSQ,
    LFQ,
    VQ,
    FactorizedVQ,
    Quantizer,
    ResidualFSQ,
    ResidualQuantizer,
    ResidualSimVQ,
    ResidualVQ,
    SimVQ,
)

BUILDERS: dict[str, tuple[Callable[..., Quantizer], dict[str, Any]]] = {
    "FSQ": (FSQ, {"levels": [8, 5]}),
    "LFQ": (LFQ, {"dim": 6}),
    "VQ": (VQ, {"dim": 4, "codebook_size": 16}),
    "EMAVQ": (EMAVQ, {"dim": 4, "codebook_size": 16}),
    "FactorizedVQ": (FactorizedVQ, {"dim": 4, "codebook_size": 16}),
    "SimVQ": (SimVQ, {"dim": 4, "codebook_size": 16}),
    "ResidualQuantizer": (ResidualQuantizer, {"stages": [FSQ([5, 5]), FSQ([5, 5])]}),
    "ResidualFSQ": (ResidualFSQ, {"levels": [5, 5], "num_stages": 2}),
    "ResidualVQ": (ResidualVQ, {"dim": 4, "codebook_size": 16, "num_stages": 2}),
    "ResidualSimVQ": (ResidualSimVQ, {"dim": 4, "codebook_size": 16, "num_stages": 2}),
}
SIZES = {"dim", "codebook_size", "code_dim", "bits", "num_stages", "kmeans_iters", "search_bytes"}


def _bad_values(name: str, annotation: str) -> list[Any]:
    """Values of the wrong type (or non-finite, or negative sizes) for a parameter with this annotation."""
    if annotation.startswith("int"):
        return [True, 2.5, "8", [8], *([-1] if name in SIZES else [])]
    if annotation == "float":
        return [math.nan, math.inf, "0.1", True, None]
    if annotation == "bool":
        return [1, "yes", None]
    return ["no-such-option", 3]  # a Literal of strings


def _cases() -> list[tuple[str, str, Any]]:
    cases = []
    for cls_name, (build, _) in BUILDERS.items():
        for p in inspect.signature(build).parameters.values():
            if p.name in ("levels", "stages") or p.kind is inspect.Parameter.VAR_KEYWORD:
                continue
            cases += [(cls_name, p.name, v) for v in _bad_values(p.name, str(p.annotation))]
    return cases


@pytest.mark.parametrize(("cls_name", "name", "value"), _cases(), ids=lambda v: repr(v)[:20])
def test_a_bad_argument_is_a_value_error_naming_it(cls_name: str, name: str, value: Any) -> None:
    build, base = BUILDERS[cls_name]
    with pytest.raises(ValueError, match=rf"\b{name}\b") as info:
        build(**{**base, name: value})
    assert "Traceback" not in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("cls_name", list(BUILDERS))
def test_the_defaults_and_numpy_integers_are_accepted(cls_name: str) -> None:
    build, base = BUILDERS[cls_name]
    assert isinstance(build(**base), Quantizer)
    numpy_base = {k: np.int64(v) if isinstance(v, int) else v for k, v in base.items()}
    assert isinstance(build(**numpy_base), Quantizer)


@pytest.mark.parametrize("levels", [8, "88", "8,8", [8, True], [8.0, 8], [8, "8"], [], None, {8: 8}])
def test_fsq_levels_must_be_a_list_of_integers(levels: Any) -> None:
    for build in (lambda: FSQ(levels), lambda: ResidualFSQ(levels, 2)):
        with pytest.raises(ValueError, match=r"FSQ: .*levels"):
            build()


def test_fsq_levels_from_numpy_and_torch_are_plain_ints() -> None:
    assert FSQ(np.array([8, 5])).levels == (8, 5) and FSQ(torch.tensor([4, 4])).levels == (4, 4)
    assert all(type(v) is int for v in FSQ(np.array([8, 5])).levels)


@pytest.mark.parametrize("build", [
    lambda: FSQ([8, 8], dim=10**9), lambda: LFQ(10**9), lambda: VQ(10**9, 16), lambda: SimVQ(10**9, 16),
    lambda: FactorizedVQ(8, 16, code_dim=10**9), lambda: ResidualFSQ([8, 8], 10**9), lambda: ResidualVQ(8, 16, 10**9),
])
def test_absurd_sizes_are_refused_by_a_size_check_before_any_allocation(build: Callable[[], Quantizer]) -> None:
    began = time.perf_counter()
    with pytest.raises(ValueError, match=r"invalid (dim|code_dim|num_stages) = 1000000000 .*less than or equal to"):
        build()
    assert time.perf_counter() - began < 1.0


@pytest.mark.parametrize("stages", [[FSQ([5, 5]), "FSQ"], "FSQ", FSQ([5, 5]), 3, None])
def test_residual_stages_must_be_quantizers(stages: Any) -> None:
    with pytest.raises(ValueError, match=r"ResidualQuantizer: invalid stages"):
        ResidualQuantizer(stages)


def test_vq_beta_nan_is_refused_and_numpy_floats_accepted() -> None:
    with pytest.raises(ValueError, match=r"VQ: invalid beta = nan"):
        VQ(4, 16, beta=math.nan)
    with pytest.raises(ValueError, match=r"VQ: invalid beta = .*nan"):
        VQ(4, 16, beta=np.float32("nan"))
    assert VQ(4, 16, beta=np.float32(0.5)).beta == 0.5 and type(VQ(4, 16, beta=np.float32(0.5)).beta) is float
    with pytest.raises(ValueError, match=r"VQ: invalid dim = .*4\.0.*valid integer"):
        VQ(np.float32(4.0), 16)  # type: ignore[arg-type]


@pytest.mark.parametrize("build", [ResidualVQ, ResidualSimVQ])
def test_an_unknown_stage_option_is_a_value_error_naming_it(build: Callable[..., Quantizer]) -> None:
    with pytest.raises(ValueError, match=r"unknown stage option\(s\) \['betta'\]"):
        build(4, 16, 2, betta=0.5)
    with pytest.raises(ValueError, match=r"invalid beta = nan"):
        build(4, 16, 2, beta=math.nan)
