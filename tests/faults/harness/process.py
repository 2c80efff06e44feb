"""Running vqkit commands as real child processes, through a fork server or a fresh interpreter.

The fork server (``cli_server.py``) imports vqkit once, which saves 3-4 s a command: that is what lets
hundreds of cases fit in the test budget. :class:`SubprocessRunner` runs ``python -m vqkit.cli`` as a
user does, for the kills that must hit a real interpreter.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[3]
SRC = ROOT / "src"
SERVER = Path(__file__).resolve().parents[1] / "cli_server.py"
SIGKILL = int(signal.SIGKILL)
R = TypeVar("R", bound="Runner")


def child_env(**extra: str) -> dict[str, str]:
    """Environment of every child: one intra-op thread, no progress bars, vqkit from src/."""
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1",
            "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **extra}


@dataclass
class Outcome:
    """What one command did."""

    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    timeout: float = 0.0

    @property
    def command(self) -> str:
        return "vqkit " + shlex.join(self.argv)

    def excerpt(self, lines: int = 6) -> str:
        """The end of stderr (the part that says what happened)."""
        tail = [line for line in self.stderr.rstrip().splitlines() if line.strip()][-lines:]
        return "\n".join(tail) if tail else "(stderr empty)"


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class Handle:
    """A started command: ``pid`` can be SIGKILLed; :meth:`wait` collects the outcome."""

    pid: int
    argv: list[str]
    out: Path
    err: Path
    waiter: Callable[[float], tuple[int, bool, float]]

    def wait(self, timeout: float = 300) -> Outcome:
        rc, timed_out, seconds = self.waiter(timeout)
        return Outcome(self.argv, rc, _text(self.out), _text(self.err), seconds, timed_out, timeout)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


class Runner:
    """Starts ``vqkit`` command lines, each with its own stdout/stderr files under ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._n = 0

    def _files(self) -> tuple[Path, Path]:
        self._n += 1
        return self.workdir / f"cmd{self._n:04d}.out", self.workdir / f"cmd{self._n:04d}.err"

    def start(self, argv: Sequence[str], cwd: Path | None = None) -> Handle:
        raise NotImplementedError

    def run(self, argv: Sequence[str], timeout: float = 300, cwd: Path | None = None) -> Outcome:
        return self.start(argv, cwd).wait(timeout)

    def must_succeed(self, argv: Sequence[str], what: str, timeout: float = 300, cwd: Path | None = None) -> Outcome:
        """Run a set-up command; its failure is the harness's, so raise instead of returning a record."""
        out = self.run(argv, timeout=timeout, cwd=cwd)
        if out.rc != 0:
            raise RuntimeError(f"{what} failed: {out.command}\n{out.excerpt(20)}")
        return out

    def close(self) -> None:
        pass

    def __enter__(self: R) -> R:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SubprocessRunner(Runner):
    """``python -m vqkit.cli ARGV`` in a new process (and session), as a user runs it."""

    def start(self, argv: Sequence[str], cwd: Path | None = None) -> Handle:
        out, err = self._files()
        with open(out, "wb") as o, open(err, "wb") as e:
            proc = subprocess.Popen([sys.executable, "-m", "vqkit.cli", *argv], stdout=o, stderr=e,
                                    stdin=subprocess.DEVNULL, env=child_env(), cwd=cwd or self.workdir,
                                    start_new_session=True)
        started = time.monotonic()

        def waiter(timeout: float) -> tuple[int, bool, float]:
            try:
                rc = proc.wait(timeout)
                return rc, False, time.monotonic() - started
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                return proc.wait(), True, time.monotonic() - started

        return Handle(proc.pid, list(argv), out, err, waiter)


class CliServer(Runner):
    """Commands as children of ``cli_server.py`` (vqkit imported once, then ``fork`` per command)."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self._log = open(self.workdir / "server.log", "wb")  # noqa: SIM115
        self._proc = subprocess.Popen([sys.executable, str(SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._log, env=child_env(), cwd=self.workdir, text=True, bufsize=1)
        hello = self._read()
        if not hello.get("ready"):
            raise RuntimeError(f"fault-campaign CLI server did not start: {hello}")

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            log = (self.workdir / "server.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"fault-campaign CLI server died:\n{log}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def _send(self, request: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        self._send(request)
        return self._read()

    def start(self, argv: Sequence[str], cwd: Path | None = None) -> Handle:
        out, err = self._files()
        reply = self._ask({"op": "start", "argv": list(argv), "stdout": str(out), "stderr": str(err),
                           "cwd": str(cwd or self.workdir)})
        pid = int(reply["pid"])

        def waiter(timeout: float) -> tuple[int, bool, float]:
            answer = self._ask({"op": "wait", "pid": pid, "timeout": timeout})
            return int(answer["rc"]), bool(answer["timed_out"]), float(answer["seconds"])

        return Handle(pid, list(argv), out, err, waiter)

    def close(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self._send({"op": "quit"})
                assert self._proc.stdin is not None
                self._proc.stdin.close()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
