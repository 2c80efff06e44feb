"""Run logs: JSONL records (always), TensorBoard scalars (when installed), a progress display.

Only rank 0 logs. On resume the JSONL file is cut back to the checkpoint's step, so the log of a
killed-and-resumed run reads like that of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from ..storage import LOG_FILE, read_records


class RunLog:
    """Append-only JSONL log with optional TensorBoard mirror and a one-line progress display."""

    def __init__(self, run_dir: Path, total_steps: int, enabled: bool, resume_step: int = 0) -> None:
        self.path = run_dir / LOG_FILE
        self.enabled, self.total = enabled, total_steps
        self._writer: Any = None
        self._bar: Any = None
        if not enabled:
            return
        if resume_step:
            self._truncate(resume_step)
        else:
            self.path.write_text("")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:  # tensorboard is optional
            self._writer = None
        try:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=resume_step, desc="train", dynamic_ncols=True,
                             disable=not sys.stderr.isatty())
        except ImportError:
            self._bar = None
        self._last_print = 0.0

    def _truncate(self, step: int) -> None:
        keep = [r for r in read_records(self.path) if r.get("step", 0) <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in keep))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({k: _finite_or_none(v) for k, v in record.items()}) + "\n")
        if self._writer is not None:
            split = record.get("split", "train")
            for key, value in record.items():
                if isinstance(value, int | float) and key != "step":
                    self._writer.add_scalar(f"{split}/{key}", value, record["step"])

    def progress(self, step: int, text: str) -> None:
        """Advance the bar to ``step``; without a terminal, print a line at most every 10 s."""
        if not self.enabled:
            return
        if self._bar is not None and not self._bar.disable:
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix_str(text)
        elif time.monotonic() - self._last_print > 10 or step == self.total:
            self._last_print = time.monotonic()
            print(f"step {step}/{self.total} {text}", flush=True)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


def _finite_or_none(value: Any) -> Any:
    """NaN/inf become null: log.jsonl stays strict JSON that any reader parses."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


COLLAPSED_USAGE = 0.01
COLLAPSED_PERPLEXITY = 2.0


def collapse_warning(val: dict[str, float]) -> str:
    """A sentence when the final validation shows a collapsed codebook (< 1% of codes used, or perplexity
    < 2: the tokens carry almost no information), else ''."""
    usage, perplexity = val.get("usage"), val.get("perplexity")
    if usage is None or perplexity is None:
        return ""
    if usage < COLLAPSED_USAGE or perplexity < COLLAPSED_PERPLEXITY:
        return (f"the codebook collapsed: {usage:.2%} of codes used, perplexity {perplexity:.2f} on the validation "
                "set; check the learning rate, the quantizer's settings and the data, or train longer")
    return ""
