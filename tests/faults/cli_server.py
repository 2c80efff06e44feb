"""A fork server for the fault campaign: import vqkit once, run each ``vqkit`` command line in a forked child.

A forked child is a real process running ``vqkit.cli.main(argv)`` exactly as ``python -m vqkit.cli``
would (``raise SystemExit(main())``; an escaping exception prints its traceback and exits 1), with
its own stdout/stderr files, exit status and pid, so it can be SIGKILLed, timed out, and crash
without taking the campaign down. What it saves is the 3-4 s of interpreter start and ``import torch``
per command, which is what lets hundreds of corrupt-input and kill cases fit in the test budget.

The server never computes with torch itself (one intra-op thread, no OpenMP pool before a fork), so
its children are fork-safe. Protocol: one JSON object per line on stdin, one reply per line on stdout::

    {"op": "start", "argv": [...], "stdout": PATH, "stderr": PATH, "cwd": DIR|null, "env": {...}}
        -> {"pid": N}
    {"op": "wait", "pid": N, "timeout": SECONDS}
        -> {"rc": CODE, "timed_out": BOOL, "seconds": S}   (rc < 0: killed by signal -rc)
    {"op": "quit"}

Run by :class:`faults.harness.CliServer`; not a test module.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import sys
import time
import traceback


def _child(request: dict) -> None:  # never returns
    code = 1
    try:
        os.setpgid(0, 0)  # its own process group: a kill of the group takes loader workers too
        for fd, path, flags in ((0, os.devnull, os.O_RDONLY),
                                (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
            opened = os.open(path, flags, 0o644)
            os.dup2(opened, fd)
            os.close(opened)
        if request.get("cwd"):
            os.chdir(request["cwd"])
        os.environ.update(request.get("env") or {})
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        sys.argv = ["vqkit", *request["argv"]]
        from vqkit.cli import main

        try:
            code = main(request["argv"])
        except SystemExit as exit_:
            if exit_.code is None:
                code = 0
            elif isinstance(exit_.code, int):
                code = exit_.code
            else:
                print(exit_.code, file=sys.stderr)
                code = 1
        except BaseException:  # what the interpreter does with an uncaught exception
            traceback.print_exc()
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(int(code) & 0xFF if isinstance(code, int) else 1)


def _wait(pid: int, timeout: float, started: float) -> dict:
    deadline = time.monotonic() + timeout
    timed_out = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            break
        time.sleep(0.002)
    rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return {"rc": rc, "timed_out": timed_out, "seconds": round(time.monotonic() - started, 3)}


def serve() -> None:
    import torch

    torch.set_num_threads(1)
    # everything the commands import lazily (torch.optim pulls in torch._dynamo: ~2 s), so that children
    # start at once
    for name in ("torch._dynamo", "vqkit.cli", "vqkit.codec.tiled", "vqkit.evaluate", "vqkit.runs",
                 "vqkit.experiments.compare", "vqkit.cli.files", "vqkit.train", "vqkit.train.loop",
                 "vqkit.modalities", "vqkit.modalities.audio.scorer", "vqkit.plotting"):
        with contextlib.suppress(ImportError):  # the audio extra is optional
            importlib.import_module(name)
    started: dict[int, float] = {}
    out = sys.stdout
    print(json.dumps({"ready": True, "pid": os.getpid()}), file=out, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        op = request.get("op")
        if op == "start":
            out.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(request)
            started[pid] = time.monotonic()
            reply = {"pid": pid}
        elif op == "wait":
            pid = int(request["pid"])
            reply = _wait(pid, float(request.get("timeout", 600)), started.pop(pid, time.monotonic()))
        elif op == "quit":
            break
        else:
            reply = {"error": f"unknown op {op!r}"}
        print(json.dumps(reply), file=out, flush=True)


if __name__ == "__main__":
    serve()
