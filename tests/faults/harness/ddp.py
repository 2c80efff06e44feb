"""A 2-rank gloo ``torchrun`` job: a SIGKILLed rank must bring the whole job down within a bound (not hang
it, not leave a rank behind), and an uninterrupted job must end with identical ranks.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .process import ROOT, alive, child_env
from .runs import TINY, tiny_data, train_argv, train_records

DDP_STEPS = 3000
DDP_WORKER = ROOT / "tests" / "ddp_train_worker.py"  # trains on JSON overrides, saves OUT/rank{N}.pt


def _torchrun(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            kids.append(int(entry))
    return kids


def _rank_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
        return int(env[b"RANK"]) if b"RANK" in env else None
    except (OSError, ValueError):
        return None


def _kill(pid: int, group: bool = False) -> None:
    with contextlib.suppress(ProcessLookupError):
        (os.killpg if group else os.kill)(pid, signal.SIGKILL)


@dataclass
class DdpKill:
    rank: int
    rc: int | None
    seconds: float | None  # from the SIGKILL to the job's exit
    bound: float
    problems: list[str]
    excerpt: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


def ddp_kill(workdir: Path, rank: int = 1, bound: float = 60.0, after_steps: int = 15) -> DdpKill:
    """``torchrun --nproc_per_node 2 -m vqkit.cli train ...`` (gloo), SIGKILL rank ``rank`` once rank 0
    has logged ``after_steps`` steps; the job must exit non-zero within ``bound`` seconds, no rank left."""
    workdir = Path(workdir)
    run = workdir / f"ddp-kill-rank{rank}"
    shutil.rmtree(run, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    argv = _torchrun(["-m", "vqkit.cli", *train_argv(run, DDP_STEPS, ckpt_every=100, eval_every=1000)])
    err_path = workdir / f"ddp-kill-rank{rank}.err"
    with open(err_path, "wb") as err, open(workdir / f"ddp-kill-rank{rank}.out", "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=child_env(), cwd=workdir, start_new_session=True)
    problems: list[str] = []
    deadline = time.monotonic() + 300
    ranks: dict[int, int] = {}
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            ranks = {r: p for p in _children(proc.pid) if (r := _rank_of(p)) is not None}
            if len(ranks) == 2 and len(train_records(run)) >= after_steps:
                break
            time.sleep(0.05)
        if proc.poll() is not None or len(ranks) != 2:
            return DdpKill(rank, proc.poll(), None, bound,
                           [f"the job never reached step {after_steps} with 2 ranks (exit {proc.poll()})"],
                           err_path.read_text(errors="replace")[-1500:])
        _kill(ranks[rank])
        killed = time.monotonic()
        try:
            rc: int | None = proc.wait(bound + 60)
            seconds: float | None = time.monotonic() - killed
        except subprocess.TimeoutExpired:
            rc, seconds = None, None
            problems.append(f"hung: the job was still running {bound + 60:.0f} s after rank {rank} was killed")
        if rc == 0:
            problems.append("the job exited 0 although a rank was killed")
        if seconds is not None and seconds > bound:
            problems.append(f"the job took {seconds:.1f} s to fail, more than the bound {bound:.0f} s")
        time.sleep(1.0)
        left = [p for r, p in ranks.items() if r != rank and alive(p)]
        if left:
            problems.append(f"rank process(es) {left} still running after the job ended")
        if (run / "summary.json").exists():
            problems.append("the run finished (summary.json) although a rank was killed")
        return DdpKill(rank, rc, seconds, bound, problems, err_path.read_text(errors="replace")[-1500:])
    finally:
        if proc.poll() is None:
            _kill(proc.pid, group=True)
            proc.wait()
        for p in ranks.values():
            if alive(p):
                _kill(p)


@dataclass
class DdpSame:
    identical: bool
    problems: list[str]
    seconds: float


def ddp_identical(workdir: Path, steps: int = 12) -> DdpSame:
    """An uninterrupted 2-rank gloo run (codebook statistics all-reduced: an EMA residual VQ with dead
    code restarts); every tensor of both ranks' models must be equal."""
    import torch

    run = Path(workdir) / "ddp-same"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    overrides = {**TINY, "data": str(tiny_data()), "conv_channels": list(TINY["conv_channels"]), "steps": steps,
                 "out": str(run), "quantizer": "rvq", "eval_every": steps, "ckpt_every": steps // 2,
                 "quantizer_args": json.dumps(dict(dim=8, codebook_size=64, num_stages=2, dead_code_threshold=1.0))}
    began = time.monotonic()
    done = subprocess.run(_torchrun([str(DDP_WORKER), json.dumps(overrides)]), env=child_env(), capture_output=True,
                          text=True, timeout=600, cwd=run)
    seconds = time.monotonic() - began
    if done.returncode != 0:
        return DdpSame(False, [f"torchrun exited {done.returncode}: {done.stderr[-1500:]}"], seconds)
    s0, s1 = (torch.load(run / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    problems = []
    if set(s0) != set(s1):
        problems.append(f"ranks hold other tensors: {sorted(set(s0) ^ set(s1))[:5]}")
    differ = [k for k in s0 if k in s1 and not torch.equal(s0[k], s1[k])]
    if differ:
        problems.append(f"{len(differ)}/{len(s0)} tensors differ between the ranks, e.g. {differ[:4]}")
    return DdpSame(not problems, problems, seconds)
