"""The training harness on real photos, small: loss falls, kill + resume, torchrun DDP, bad checkpoints."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from vqkit.models import Tokenizer
from vqkit.train import load_config, train
from vqkit.train.checkpoint import CHECKPOINT, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY: dict[str, Any] = dict(
    data="photos", image_size=32, batch_size=8, arch="rfsq_conv", conv_channels=(16, 32), quantizer="rfsq",
    quantizer_args=json.dumps(dict(levels=[8, 5, 5, 5], num_stages=2, conditioning="layernorm")),
    lr=2e-3, warmup=0.0, log_every=1, eval_every=1000, ckpt_every=5, max_val_images=8,
)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}


def _cli(out: Path, steps: int, *extra: str) -> list[str]:
    args = [sys.executable, "-m", "vqkit.cli", "train", "--out", str(out), "--steps", str(steps)]
    for key, value in TINY.items():
        flag = "--" + key.replace("_", "-")
        args += [flag, ",".join(map(str, value)) if isinstance(value, tuple) else str(value)]
    return args + list(extra)


def _log(run: Path, split: str = "train") -> list[dict[str, Any]]:
    lines = (run / "log.jsonl").read_text().split("\n")[:-1]  # complete lines only: the run may be writing
    return [r for r in map(json.loads, lines) if r["split"] == split]


def test_loss_falls_on_real_photos(tmp_path: Path) -> None:
    summary = train(load_config(**TINY, steps=40, out=str(tmp_path / "run")))
    losses = [r["loss"] for r in _log(tmp_path / "run")]
    assert summary["steps"] == 40 and len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
    assert summary["val"]["psnr"] > 10
    model = Tokenizer.from_pretrained(tmp_path / "run" / "final")
    assert model.bits_per_token == pytest.approx(2 * (3 + 3 * torch.log2(torch.tensor(5.0)).item()))


def test_killed_run_resumes_to_the_same_result(tmp_path: Path) -> None:
    steps = 60  # killed after ~12: the remaining steps keep the kill from racing the run's end
    reference = tmp_path / "reference"
    subprocess.run(_cli(reference, steps), check=True, env=_env(), capture_output=True)

    run = tmp_path / "killed"
    proc = subprocess.Popen(_cli(run, steps), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill once a checkpoint exists and training has moved past it
        if (run / CHECKPOINT).exists() and (run / "log.jsonl").exists() and len(_log(run)) >= 12:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "summary.json").exists(), "the run finished before it was killed"
    leftovers = [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    state = load_checkpoint(run, load_config(**TINY, steps=steps, out=str(run)).to_dict())  # not corrupt
    assert 5 <= state["step"] < steps, f"checkpoint at step {state['step']}"

    subprocess.run(_cli(run, steps, "--resume"), check=True, env=_env(), capture_output=True)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == steps, summary
    assert [r["step"] for r in _log(run)] == list(range(1, steps + 1)), "log has gaps or duplicated steps"
    resumed = Tokenizer.from_pretrained(run / "final").state_dict()
    expected = Tokenizer.from_pretrained(reference / "final").state_dict()
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)


def test_torchrun_two_ranks_hold_identical_models(tmp_path: Path) -> None:
    overrides = {**TINY, "steps": 8, "out": str(tmp_path), "quantizer": "rvq",
                 "quantizer_args": json.dumps(dict(dim=8, codebook_size=64, num_stages=2, dead_code_threshold=1.0))}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "ddp_train_worker.py"), json.dumps(overrides)]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    s0, s1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for key in s0:
        assert torch.equal(s0[key], s1[key]), f"'{key}' differs between ranks"
    fresh = Tokenizer(load_config(**overrides).tokenizer_config()).state_dict()
    assert not torch.equal(s0["quantizer.stages.0.codebook"], fresh["quantizer.stages.0.codebook"])
    assert json.loads((tmp_path / "summary.json").read_text())["world_size"] == 2


def test_corrupt_and_foreign_checkpoints_are_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(load_config(**TINY, steps=5, out=str(run)))
    with pytest.raises(ValueError, match="already holds a run"):
        train(load_config(**TINY, steps=10, out=str(run)))
    other = {**TINY, "arch": "fsq_conv", "conv_channels": (8, 16, 16)}
    with pytest.raises(ValueError, match=r"checkpoint of another model.*arch"):
        train(load_config(**other, steps=10, out=str(run)), resume=True)
    data = (run / CHECKPOINT).read_bytes()
    (run / CHECKPOINT).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        train(load_config(**TINY, steps=10, out=str(run)), resume=True)


def test_config_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown preset"):
        load_config("nope")
    with pytest.raises(ValueError, match="unknown option"):
        load_config(learning_rate=1.0)
    with pytest.raises(ValueError, match="quantizer_args is not JSON"):
        load_config(quantizer_args="{levels")
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps({"steps": 7, "betas": [0.5, 0.9]}))
    cfg = load_config("rfsq-cpu", cfg_file, lr=1e-3)
    assert (cfg.optim.steps, cfg.optim.betas, cfg.optim.lr, cfg.model.arch) == (7, (0.5, 0.9), 1e-3, "rfsq_conv")


def test_resumed_log_is_cut_to_the_checkpoint_and_survives_a_torn_line(tmp_path: Path) -> None:
    """A kill mid-write leaves half a JSON line; resuming must cut the log back, not crash on it."""
    from vqkit.train.log import LOG_FILE, RunLog, read_records

    lines = [json.dumps({"split": "train", "step": s, "loss": 1.0 / s}) for s in (10, 20, 30)]
    (tmp_path / LOG_FILE).write_text("\n".join(lines) + '\n{"split": "train", "st')
    with RunLog(tmp_path, total_steps=40, enabled=True, resume_step=20) as log:
        log.write({"split": "train", "step": 21, "loss": 0.04})
    assert [r["step"] for r in read_records(tmp_path / LOG_FILE)] == [10, 20, 21]
    assert read_records(tmp_path / "missing.jsonl") == []


def _poisoned_trainer(run: Path, policy: str, bad_steps: set[int], steps: int = 6, where: str = "output") -> Any:
    """A tiny trainer whose decoder output (or encoder output: ``where="encoder"``) is NaN at the
    given (0-based) steps."""
    from vqkit.train.loop import Trainer

    trainer = Trainer(load_config(**{**TINY, "prior_images": 0}, steps=steps, nonfinite=policy, out=str(run)))

    def poison(module: torch.nn.Module, args: Any, output: Any) -> Any:
        if not (module.training and trainer.step in bad_steps):
            return output
        if where == "encoder":
            return output * float("nan")
        recon, out = output
        return recon * float("nan"), out

    (trainer.model.encoder if where == "encoder" else trainer.model).register_forward_hook(poison)
    return trainer


@pytest.mark.parametrize("where", ["output", "encoder"])
def test_a_nonfinite_step_is_skipped_and_counted_without_touching_the_weights(tmp_path: Path, where: str) -> None:
    trainer = _poisoned_trainer(tmp_path / "run", "skip", {2}, where=where)
    weights: list[dict[str, torch.Tensor]] = []
    step = trainer._train_step

    def watched(images: torch.Tensor) -> dict[str, float]:
        record = step(images)
        state = trainer.model.state_dict() if where == "encoder" else dict(trainer.model.named_parameters())
        weights.append({k: v.detach().clone() for k, v in state.items()})
        return record

    trainer._train_step = watched
    with pytest.warns(UserWarning, match=r"step 3: .*not finite.*skipped \(1 so far\)"):
        summary = trainer.run()
    assert summary["nonfinite_steps"] == 1 and summary["steps"] == 6
    # step 3 changed no weight; a NaN encoder output also left the quantizer's statistics untouched
    # (a NaN decoder output comes after the quantizer's forward, whose finite-input statistics stand)
    assert all(torch.equal(weights[1][k], weights[2][k]) for k in weights[1])
    assert not all(torch.equal(weights[2][k], weights[3][k]) for k in weights[2])  # step 4 trained again
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values())


def test_nonfinite_stop_policy_ends_the_run_with_a_message_and_keeps_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vqkit.train import loop
    from vqkit.train.loop import NonFiniteTrainingError

    run = tmp_path / "run"
    trainer = _poisoned_trainer(run, "stop", {6}, steps=10)
    with pytest.raises(NonFiniteTrainingError, match=r"step 7: .*not finite.*--nonfinite stop.*checkpoint is intact"):
        trainer.run()
    assert load_checkpoint(run, trainer.cfg.to_dict())["step"] == 5
    monkeypatch.setattr(loop, "MAX_CONSECUTIVE_NONFINITE", 3)  # a diverged run under 'skip' still ends
    diverged = _poisoned_trainer(tmp_path / "diverged", "skip", set(range(2, 1000)), steps=8)
    with pytest.warns(UserWarning), pytest.raises(NonFiniteTrainingError, match="3 such steps in a row"):
        diverged.run()


def test_resume_takes_this_runs_learning_rate(tmp_path: Path) -> None:
    """'lower --lr, then --resume' (the non-finite stop's advice) must act: the optimizer state restored
    from the checkpoint carries the old lr; an unchanged lr gives the same floats as before."""
    from vqkit.train.loop import Trainer, lr_factor

    run = tmp_path / "run"
    first = Trainer(load_config(**{**TINY, "prior_images": 0}, steps=5, out=str(run)))
    first.run()
    unchanged = load_config(**{**TINY, "prior_images": 0}, steps=5, out=str(run))
    same = Trainer(unchanged, resume=True)  # nothing changed: exactly the lr the run ended with
    assert same.opt.param_groups[0]["lr"] == first.opt.param_groups[0]["lr"] == TINY["lr"] * lr_factor(unchanged, 5)
    lowered = load_config(**{**TINY, "prior_images": 0, "lr": 1e-5}, steps=8, out=str(run))
    resumed = Trainer(lowered, resume=True)
    assert resumed.step == 5
    assert resumed.opt.param_groups[0]["lr"] == 1e-5 * lr_factor(lowered, 5)
    resumed.run()
    assert resumed.opt.param_groups[0]["lr"] == 1e-5 * lr_factor(lowered, 8)


def test_cpu_training_flushes_subnormals_and_restores_the_default() -> None:
    """Subnormal Adam moments put a CPU run on the slow path (4x a step measured): training flushes them, and
    leaves the process as it found it (other code may rely on subnormals)."""
    from vqkit.train.loop import flushed_subnormals

    tiny = torch.tensor([1e-40], dtype=torch.float32)  # subnormal in float32
    with flushed_subnormals(torch.device("cpu")):
        assert float(tiny * 1.0) == 0.0
    assert float(tiny * 1.0) > 0.0


def test_init_starts_from_a_saved_models_weights(tmp_path: Path) -> None:
    """--init: the first step starts from the saved weights (its loss is the saved model's), not random ones;
    a model of another shape is refused by name."""
    train(load_config(**TINY, steps=30, out=str(tmp_path / "base"), prior_items=0))
    fresh = train(load_config(**TINY, steps=1, seed=3, out=str(tmp_path / "fresh"), prior_items=0))
    tuned = train(load_config(**TINY, steps=1, seed=3, out=str(tmp_path / "tuned"), prior_items=0,
                              init=str(tmp_path / "base")))
    assert _log(tmp_path / "tuned")[0]["loss"] < 0.8 * _log(tmp_path / "fresh")[0]["loss"]
    assert tuned["val"]["psnr"] > fresh["val"]["psnr"]
    with pytest.raises(ValueError, match=r"--init .*conv_channels"):
        train(load_config(**{**TINY, "conv_channels": (8, 16)}, steps=1, out=str(tmp_path / "other"),
                          init=str(tmp_path / "base")))


def test_stage_cuts_train_every_cut_of_a_residual_model(tmp_path: Path) -> None:
    """--stage-cuts: the training loss is the mean of the distortions of every stage cut, the last cut being the
    forward's own reconstruction (the stages' kept contributions sum to the quantizer's output); refused for a
    quantizer without stages."""
    from vqkit.train.loop import Trainer

    cfg = load_config(**TINY, steps=1, prior_items=0, stage_cuts=True, out=str(tmp_path / "cuts"))
    trainer = Trainer(cfg)
    model, quantizer = trainer.model.train(), trainer.model.quantizer
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    recon, out = model(images)
    parts = quantizer.stage_parts
    assert len(parts) == 2 and quantizer.keep_stage_codes
    torch.testing.assert_close(parts[0] + parts[1], out.quantized)
    torch.testing.assert_close(model.reconstruct(parts[0] + parts[1]), recon)
    full, _ = trainer.objective(recon, images)
    first, _ = trainer.objective(model.reconstruct(parts[0]), images)
    mean = trainer._cut_distortion(full, images)
    torch.testing.assert_close(mean, (full + first) / 2)
    assert not torch.allclose(first, full)  # a cut of one stage is another reconstruction
    mean.backward()
    assert model.encoder.blocks[0].weight.grad is not None
    trainer._train_step(images)  # the step lets go of the stage tensors (and their graph) after backward
    assert quantizer.stage_codes == [] and quantizer.stage_parts == []
    copy.deepcopy(trainer.model)
    summary = train(cfg)
    assert summary["steps"] == 1 and "cut_mean" in _log(tmp_path / "cuts")[0]
    with pytest.raises(ValueError, match="stage_cuts"):
        train(load_config(**{**TINY, "quantizer": "fsq", "quantizer_args": json.dumps({"levels": [8, 5, 5]})},
                          steps=1, stage_cuts=True, out=str(tmp_path / "fsq")))
