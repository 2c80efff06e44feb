"""Fuzzed training configs (config files through ``load_config`` and ``vqkit train --config``) and fuzzed
``vqkit train`` flags, judged against the oracle.

Every field first gets each :data:`SWEEP` edge value alone (what a random sample may miss), then
hypothesis draws mixes of valid values, type junk, range junk and unknown keys.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from .checks import where
from .fuzz import FuzzResult, cli_fuzz_result, control, draw_cases, folder, given, signature
from .oracle import INT64, category, config_violations, field_kinds, invalid_reason, json_reason
from .process import Runner
from .runs import TINY, cli_base, cli_config, flags, tiny_data

COSTLY_IF_ACCEPTED = {"steps", "workers", "image_size", "segment", "resize", "ch", "num_res_blocks", "ch_mult",
                      "conv_channels"}
"""Fields a command-line sample never gets huge values for: accepted, they would run for hours or fork
thousands of loader workers (the in-process fuzz covers them through ``load_config``)."""
JUNK_ANY: list[Any] = [None, True, False, [], {}, "", "junk", [1, "x"], {"a": [1, {"b": None}]}, [[1, 2], [3]]]
VALID: dict[str, list[Any]] = {
    "data": ["photos"], "val_data": [""], "image_size": [16, 32], "segment": [8000, 16000], "resize": [0, 40],
    "max_train_images": [0, 5], "max_val_images": [4, 8], "max_train_items": [0, 5], "max_val_items": [4, 8],
    "workers": [0], "arch": ["rfsq_conv", "fsq_conv"],
    "quantizer": ["rfsq", "fsq"], "quantizer_args": ["{}", TINY["quantizer_args"]], "arch_args": ["{}"],
    "conv_channels": [[16, 32], []], "ch": [32, 64], "ch_mult": [[1, 2]], "num_res_blocks": [1, 2],
    "steps": [1, 2], "batch_size": [4, 8], "lr": [1e-3, 2e-3, 1], "betas": [[0.9, 0.99], [0.5, 0.9]],
    "weight_decay": [0.0, 1e-5], "warmup": [0.0, 0.5], "schedule": ["linear", "constant"], "grad_clip": [0.0, 1.0],
    "ema_decay": [0.0, 0.9], "l1_weight": [1.0, 0], "mse_weight": [0.0, 0.5], "lpips_weight": [0.0],
    "gan_weight": [0.0], "gan_start": [0, 3], "disc_lr": [1e-4], "mel_weight": [0.0], "stft_weight": [0.0],
    "fm_weight": [0.0], "out": ["runs/x"], "seed": [0, 7], "log_every": [1, 5], "eval_every": [1, 100],
    "ckpt_every": [1, 50], "prior_images": [0, 2], "prior_items": [0, 2], "amp": ["auto", "none"],
    "device": ["cpu", "auto"],
}
JUNK_STR = {"arch": ["nope", "RFSQ_CONV"], "quantizer": ["nope", " fsq"], "schedule": ["Linear", "cosine"],
            "amp": ["fp16", "BF16"], "device": ["gpu", "cuda:x", "cpu ", "tpu:0"],
            "quantizer_args": ["{", "[]", "1", "null", '"x"'], "arch_args": ["{", "[1]", '{"x": 1}']}
UNKNOWN_KEYS = ["learning_rate", "Steps", "step", "lr ", "", "x" * 300, "train_config", "__class__", "ü"]
SWEEP: list[Any] = [float("nan"), float("inf"), float("-inf"), INT64, 2**64, -(2**64), 10**400, -1, 0, 1.5, "7", True,
                    None, [], {}, [1, "x"]]
"""Values every field gets once, alone, before the random cases (edges a random sample may miss)."""


def _json_values(draw: Any, st: Any, name: str, kind: str, cli_safe: bool) -> Any:
    """One value for field ``name``: valid, type junk, range junk, or NaN/Infinity/huge."""
    huge = not (cli_safe and name in COSTLY_IF_ACCEPTED)
    numbers: list[Any] = [float("nan"), float("inf"), float("-inf"), -1, 0, -0.5, 1.5, 2.5, 1e300]
    if huge:
        numbers += [INT64, 2**64, -(INT64 + 1), 10**30, 10**400]
    pools: list[list[Any]] = [VALID.get(name, [None]), JUNK_ANY, numbers, ["7", "1e3", "nan", "0x10"]]
    if kind in ("ints", "floats"):
        pools.append([[0], [-1], [1.5], ["a"], [True], [[1]], [float("nan"), 0.9], [0.9], [0.9, 0.99, 0.5],
                      [1.0, 0.9], "16,32", *([[2**64, 1]] if huge else [])])
    if name in JUNK_STR:
        pools.append(JUNK_STR[name])
    pool = draw(st.sampled_from(pools))
    return draw(st.sampled_from(pool))


def _config_strategy(cli_safe: bool = False) -> Any:
    from hypothesis import strategies as st

    kinds = field_kinds()
    names = sorted(kinds)

    @st.composite
    def build(draw: Any) -> tuple[Any, str | None]:
        shape = draw(st.sampled_from(["mapping"] * 8 + ["nested", "top-level junk"]))
        if shape == "top-level junk":
            return draw(st.sampled_from([[], 1, "steps: 5", None, [{"steps": 5}], 1.5])), "not a JSON object"
        chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=4, unique=True))
        values: dict[str, Any] = {}
        reasons: list[str] = []
        for name in chosen:
            value = _json_values(draw, st, name, kinds[name], cli_safe)
            values[name] = value
            why = json_reason(name, value, kinds[name])
            if why:
                reasons.append(f"{name}: {why}")
        if draw(st.integers(0, 4)) == 0:
            key = draw(st.sampled_from(UNKNOWN_KEYS))
            values[key] = draw(st.sampled_from([*JUNK_ANY, 1, 1.5]))
            reasons.append(f"unknown key {key[:20]!r}")
        if shape == "nested":
            values = {"train": values}
        return values, "; ".join(reasons) or None

    return build()


def sweep_cases() -> list[tuple[Any, str | None]]:
    cases = []
    for name, kind in sorted(field_kinds().items()):
        for value in SWEEP:
            why = json_reason(name, value, kind)
            cases.append(({name: value}, f"{name}: {why}" if why else None))
    return cases


def fuzz_configs_api(n: int, workdir: Path, seed: int = 0, sweep: bool = True) -> list[FuzzResult]:
    """``vqkit.train.load_config(file=F)`` on every field x :data:`SWEEP` value (``sweep``), then on ``n``
    fuzzed JSON config files."""
    from vqkit.train import load_config

    workdir = folder(workdir)
    results: list[FuzzResult] = []

    def body(case: tuple[Any, str | None]) -> None:
        values, reason = case
        text = json.dumps(values, allow_nan=True)
        path = workdir / f"cfg{len(results):05d}.json"
        path.write_text(text)
        expected = "refuse" if reason else "either"
        label = text if len(text) < 200 else text[:197] + "..."
        try:
            cfg = load_config(file=path)
        except ValueError:
            results.append(FuzzResult("config (API)", label, True, "refused", expected=expected))
            return
        except Exception as err:
            results.append(FuzzResult("config (API)", label, False, f"{type(err).__name__}: {str(err)[:160]}",
                                      f"at {where(err)}", expected, f"config API: {signature(err)}"))
            return
        bad = config_violations(cfg)
        if reason or bad:
            why = reason or "; ".join(bad)
            results.append(FuzzResult("config (API)", label, False, "accepted invalid config", why, expected,
                                      f"config API: accepted a value that {category(why)}"))
        else:
            results.append(FuzzResult("config (API)", label, True, "accepted", expected=expected))

    for case in sweep_cases() if sweep else []:
        body(case)
    given(_config_strategy(), n, seed, body)
    return results


def fuzz_configs_cli(runner: Runner, n: int, workdir: Path, seed: int = 0) -> list[FuzzResult]:
    """``vqkit train --config F --out DIR`` with F = a tiny 1-step config overlaid with fuzz."""
    workdir = folder(workdir)
    base = cli_config()
    (workdir / "control.json").write_text(json.dumps(base))
    control(runner, ["train", "--config", str(workdir / "control.json"), "--out", str(workdir / "control")], workdir)
    results = []
    for i, (values, reason) in enumerate(draw_cases(_config_strategy(cli_safe=True), n, seed)):
        if isinstance(values, dict) and "train" in values and isinstance(values["train"], dict):
            merged: Any = {"train": {**base, **values["train"]}}
        elif isinstance(values, dict):
            merged = {**base, **values}
        else:
            merged = values
        path = workdir / f"cli{i:04d}.json"
        path.write_text(json.dumps(merged, allow_nan=True))
        out = runner.run(["train", "--config", str(path), "--out", str(workdir / f"run{i:04d}")], timeout=60,
                         cwd=workdir)
        results.append(cli_fuzz_result("config (CLI)", json.dumps(values, allow_nan=True)[:200], out, reason, None))
    return results


def _flag_strategy() -> Any:
    from hypothesis import strategies as st

    names = sorted(field_kinds())
    junk = ["", "abc", "nan", "inf", "-inf", "-1", "0", "1.5", "1e999", "99999999999999999999999", ",", "1,,2", "{",
            "[]", "null", "ü", " 7", "0x10", "-0", "1e-400"]

    @st.composite
    def build(draw: Any) -> list[tuple[str, str | None]]:
        count = draw(st.integers(1, 3))
        chosen: list[tuple[str, str | None]] = []
        for _ in range(count):
            what = draw(st.sampled_from(["field"] * 6 + ["unknown", "preset", "config", "resume"]))
            if what == "field":
                name = draw(st.sampled_from(names))
                pool = junk + [str(v) if not isinstance(v, list) else ",".join(map(str, v)) for v in
                               VALID.get(name, [])] + JUNK_STR.get(name, [])
                value = draw(st.sampled_from(pool))
                if name in COSTLY_IF_ACCEPTED and value in ("99999999999999999999999",):
                    value = "-1"
                if name == "out":
                    value = "junk/out"
                chosen.append(("--" + name.replace("_", "-"), value))
            elif what == "unknown":
                chosen.append((draw(st.sampled_from(["--nope", "-x", "--learning-rate", "--step", "---steps"])),
                               draw(st.sampled_from(["1", ""]))))
            elif what == "preset":
                chosen.append(("--preset", draw(st.sampled_from(["nope", "", "rfsq-cpu "]))))
            elif what == "config":
                chosen.append(("--config", draw(st.sampled_from(["missing.json", "", "."]))))
            else:
                chosen.append(("--resume", None))
        return chosen

    return build()


def _parse_flag(kind: str, text: str) -> Any:
    """``text`` as vqkit's argparse types read a ``kind`` field (ValueError: it does not parse)."""
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if kind in ("ints", "floats"):
        cast = int if kind == "ints" else float
        return tuple(cast(v) for v in text.split(",") if v.strip())
    return text


def _flag_reason(flag: str, value: str | None, kinds: dict[str, str]) -> str | None:
    """Why argparse + vqkit must refuse ``flag value`` (None: the value is valid)."""
    if flag == "--resume":
        return None
    if flag == "--preset":
        from vqkit.train import PRESETS

        return None if value in PRESETS else f"--preset: unknown preset {value!r}"
    if flag == "--config":  # an empty --config is "no config file"
        return None if not value or Path(value).is_file() else f"--config: no such file {value!r}"
    name = flag[2:].replace("-", "_") if flag.startswith("--") else ""
    if name not in kinds:
        return f"{flag}: not an option"
    text = value or ""
    try:
        parsed = _parse_flag(kinds[name], text)
    except ValueError:
        return f"{flag}: {text!r} does not parse"
    if name == "data" and text not in ("photos", str(tiny_data())):
        return f"{flag}: no such data {text!r}"
    if name == "val_data" and text not in ("", "photos", str(tiny_data())):
        return f"{flag}: no such data {text!r}"
    why = invalid_reason(name, parsed, kinds[name])
    return f"{flag}: {why}" if why else None


def fuzz_flags_cli(runner: Runner, n: int, workdir: Path, seed: int = 0) -> list[FuzzResult]:
    """``vqkit train`` with a tiny 1-step run's flags plus 1-3 fuzzed flags."""
    workdir = folder(workdir)
    cases: list[list[tuple[str, str | None]]] = draw_cases(_flag_strategy(), n, seed)
    kinds = field_kinds()
    control(runner, ["train", "--out", str(workdir / "control"), *flags(cli_base())], workdir)
    results = []
    for i, chosen in enumerate(cases):
        extra: list[str] = []
        final: dict[str, str | None] = {}  # argparse: the last of a repeated option wins
        for flag, value in chosen:
            extra += [flag] if value is None else [flag, value]
            final[flag] = value
        reasons = [why for flag, value in final.items() if (why := _flag_reason(flag, value, kinds))]
        out = runner.run(["train", "--out", str(workdir / f"run{i:04d}"), *flags(cli_base()), *extra], timeout=60,
                         cwd=workdir)
        results.append(cli_fuzz_result("flags (CLI)", shlex.join(extra), out, "; ".join(reasons) or None, None))
    return results
