"""What a documented refusal looks like, and how to tell in one line why something is not one.

A refusal is the user-facing contract: exit 2 (usage/value errors) or 1 (per-file codec errors), one
``vqkit: error: ...`` line naming the file, no traceback; through the API a ValueError subclass.
"""

from __future__ import annotations

import json
import re
import signal
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .process import Outcome

TRACEBACK = "Traceback (most recent call last)"
ERROR_LINE = re.compile(r"^vqkit: error: ")
USAGE_ERROR_LINE = re.compile(r"^vqkit(?: [\w-]+)?: error: ")
WARNING_LINE = re.compile(r":\d+: \w*Warning: ")
API_ACCEPTED = "API accepted it (no exception)"


def _traceback_summary(stderr: str) -> str:
    """The traceback's last frame and exception line."""
    lines = stderr.splitlines()
    start = max(i for i, line in enumerate(lines) if TRACEBACK in line)
    body = [line for line in lines[start:] if line.strip()]
    frames = [line.strip() for line in body if line.strip().startswith("File ")]
    last = next((line for line in reversed(body) if not line.startswith(" ")), body[-1])
    where = frames[-1] if frames else ""
    return f"{last}  [{where}]" if where else last


def _names(line: str, path: Path) -> bool:
    return any(str(p) in line for p in {path, path.resolve()})


def _extra_lines(lines: Sequence[str], pattern: re.Pattern[str]) -> list[str]:
    """stderr lines that are neither the error line nor a Python warning (with its source line)."""
    extra, skip = [], False
    for line in lines:
        if skip:
            skip = False
            continue
        if WARNING_LINE.search(line):
            skip = True  # the warning's source line follows
            continue
        if line.strip() and not pattern.match(line):
            extra.append(line)
    return extra


def refusal_problems(out: Outcome, path: Path | None, codes: Sequence[int] = (1, 2),
                     usage_errors: bool = False) -> list[str]:
    """Why ``out`` is not a documented refusal of ``path`` (empty list: it is one).

    Documented: exit status in ``codes``, a ``vqkit: error: ...`` line naming ``path``, no Python
    traceback, and nothing else on stderr but Python warnings. ``usage_errors`` also admits
    argparse's ``usage: ...`` + ``vqkit train: error: ...`` (exit 2) for bad flags."""
    problems: list[str] = []
    if out.timed_out:
        problems.append(f"hung: still running after {out.timeout:.0f} s (killed)")
    elif out.rc == 0:
        problems.append("accepted (exit 0)")
    elif out.rc < 0:
        problems.append(f"crashed: killed by signal {-out.rc} ({signal.Signals(-out.rc).name})")
    elif out.rc not in codes:
        problems.append(f"exit {out.rc}, documented {' or '.join(map(str, codes))}")
    if TRACEBACK in out.stderr:
        problems.append(f"Python traceback on stderr: {_traceback_summary(out.stderr)}")
    if out.rc == 0 or out.timed_out or TRACEBACK in out.stderr:
        return problems
    lines = out.stderr.splitlines()
    pattern = USAGE_ERROR_LINE if usage_errors else ERROR_LINE
    errors = [line for line in lines if pattern.match(line)]
    if not errors:
        problems.append(f"no 'vqkit: error: ...' line on stderr ({out.excerpt(2)!r})")
    elif path is not None and not any(_names(line, path) for line in errors):
        problems.append(f"error line does not name {path}: {errors[0]!r}")
    if not (usage_errors and any(line.startswith("usage:") for line in lines)):
        extra = _extra_lines(lines, pattern)
        if extra:
            problems.append(f"not a one-line message: {len(extra)} more stderr line(s), e.g. {extra[0][:160]!r}")
    return problems


def api_problems(call: Callable[[], Any]) -> tuple[list[str], Any]:
    """([], None) if ``call`` raises a ValueError subclass; else why not, and its return value."""
    try:
        value = call()
    except ValueError:
        return [], None
    except Exception as err:
        return [f"API raised {type(err).__name__} (not a ValueError): {str(err)[:200]}  [{where(err)}]"], None
    return [API_ACCEPTED], value


def where(err: BaseException) -> str:
    """The innermost vqkit frame of ``err`` (file:line in function): where a fix would go."""
    frames = traceback.extract_tb(err.__traceback__)
    ours = [f for f in frames if "vqkit" in f.filename] or frames
    if not ours:
        return "?"
    f = ours[-1]
    return f"{Path(f.filename).name}:{f.lineno} in {f.name}"


def short(value: Any, n: int = 90) -> str:
    """``value`` as JSON (a string: its repr), cut to ``n`` characters, for one-line messages."""
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def indent(text: str, prefix: str = "      ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())
