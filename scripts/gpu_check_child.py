"""Child processes of ``scripts/gpu_check.py`` under a hard time budget.

Each child runs in its own process group (so its DataLoader workers and compile workers die with it)
and is told to die with the supervisor (``PR_SET_PDEATHSIG``: a kill of the supervisor from outside
leaves nothing running on the GPU). At its budget it gets SIGTERM, then SIGKILL 5 s later.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_live: list[subprocess.Popen[bytes]] = []  # the running child, for the supervisor's signal handler


@dataclass(frozen=True)
class ChildResult:
    """How a child ended: its exit code, whether the budget killed it (or ``poll`` stopped it), its wall time,
    its output's tail."""

    returncode: int
    killed: bool
    wall_s: float
    stdout: str
    stderr: str
    stopped: bool = False  # killed because ``poll`` asked for it, before the budget

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.killed


def child_env() -> dict[str, str]:
    """This environment with the repository's ``src`` first on PYTHONPATH: the children import this checkout."""
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _die_with_parent() -> None:
    os.setpgrp()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _kill_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError, PermissionError):  # stragglers of the group
        os.killpg(proc.pid, signal.SIGKILL)


def kill_running() -> None:
    """Kill the running child's process group (the supervisor's SIGTERM / SIGINT handler calls this)."""
    for proc in list(_live):
        _kill_group(proc, grace=2.0)


def _tail(path: Path, chars: int = 20000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-chars:].decode("utf-8", errors="replace")


def run_child(cmd: Sequence[str], budget_s: float, logs: Path, name: str,
              poll: Callable[[float], bool] | None = None, poll_every: float = 1.0) -> ChildResult:
    """Run ``cmd`` (cwd: the repository root) for at most ``budget_s`` seconds; stdout and stderr go to
    ``logs/name.out|err``. ``poll(seconds since launch)`` is called about every ``poll_every`` seconds; the
    child is killed as at its budget when it returns True."""
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / f"{name}.out", logs / f"{name}.err"
    start = time.monotonic()
    killed = stopped = False
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(list(cmd), cwd=ROOT, env=child_env(), stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        _live.append(proc)
        try:
            next_poll = start + poll_every
            while proc.poll() is None:
                now = time.monotonic()
                if now - start >= budget_s:
                    killed = True
                    _kill_group(proc)
                    break
                if poll is not None and now >= next_poll:
                    if poll(now - start):
                        killed = stopped = True
                        _kill_group(proc)
                        break
                    next_poll = now + poll_every
                time.sleep(min(0.2, max(0.01, budget_s - (now - start))))
            proc.wait()
        finally:
            _live.remove(proc)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # workers the child left behind
    wall = time.monotonic() - start
    if poll is not None:
        poll(wall)
    return ChildResult(proc.returncode, killed, wall, _tail(out_path), _tail(err_path), stopped)


def python() -> str:
    return sys.executable
