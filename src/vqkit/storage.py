"""Files that are written whole or not at all, and that prove their integrity when read back.

:func:`atomic_write` writes to a temporary file beside the target (named after it and the writing
process), flushes it to disk and renames it over the target, so a reader sees the old file or
the new one, never a part. A writer killed mid-write leaves its temporary file behind; the next
write of the same target removes such debris once its process is gone.

:func:`seal` / :func:`unseal` frame a payload whose format has no checksum of its own (torch's
zip checkpoints: a flipped byte in tensor data loads silently) with a magic, the payload length
and its SHA-256, so damage becomes an error instead of a weight changed by 1e37.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class IntegrityError(ValueError):
    """A file is truncated, corrupt, or not the kind of file expected."""


_STALE_S = 600.0  # debris without a process id (older vqkit) is removed once this old


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


_DEBRIS = re.compile(r"^\..+?\.(?:(\d+)\.[0-9a-f]{8}|(\d+)|[a-z0-9_]{8})\.tmp$")
""".NAME.PID.HEX.tmp (this writer), .NAME.PID.tmp (older checkpoints), .NAME.XXXXXXXX.tmp (older mkstemp)."""


def remove_debris(folder: Path) -> list[Path]:
    """Delete the temporary files that killed writers left in ``folder``; returns them."""
    pattern = _DEBRIS
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(folder):
            match = pattern.match(entry.name)
            if match is None or not entry.is_file(follow_symlinks=False):
                continue
            pid_text = match.group(1) or match.group(2)
            if pid_text is not None:
                pid = int(pid_text)
                stale = pid != os.getpid() and not _alive(pid)
            else:
                stale = time.time() - entry.stat().st_mtime > _STALE_S
            if stale:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


_SWEPT: set[tuple[int, str]] = set()  # (pid, folder) already swept: one scan per folder and process


def atomic_write(path: Path, data: bytes | memoryview | Sequence[bytes | memoryview]) -> None:
    """Write ``data`` (bytes, or chunks written one after the other) to ``path`` so that a reader sees
    the old file or the new one, never a part. The first write into a folder by this process removes
    the debris of killed writers there (one scan per folder, not per file: batch encodes stay linear)."""
    path = Path(path)
    folder = (os.getpid(), os.path.abspath(path.parent))
    if folder not in _SWEPT:
        remove_debris(path.parent)
        _SWEPT.add(folder)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    chunks = [data] if isinstance(data, bytes | memoryview) else list(data)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json(path: Path, hint: str = "") -> Any:
    """A JSON file vqkit wrote, parsed; :class:`IntegrityError` naming the file if it is unreadable,
    not UTF-8 or not JSON (``hint`` says what to do about it)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise IntegrityError(f"{path}: corrupt or unreadable JSON ({err}){'; ' + hint if hint else ''}") from err


_FRAME = struct.Struct("<Q32s")  # payload length, SHA-256 of the payload


def seal(magic: bytes, payload: bytes | memoryview) -> list[bytes | memoryview]:
    """``[magic + length + SHA-256, payload]``: the chunks (payload not copied) whose concatenation
    :func:`unseal` verifies; :func:`atomic_write` writes them."""
    return [magic + _FRAME.pack(len(payload), hashlib.sha256(payload).digest()), payload]


def is_sealed(data: bytes, magic: bytes) -> bool:
    return data[: len(magic)] == magic


def unseal(data: bytes, magic: bytes, where: str) -> memoryview:
    """The payload of :func:`seal`'s bytes; :class:`IntegrityError` naming ``where`` if anything is off."""
    if not is_sealed(data, magic):
        raise IntegrityError(f"{where}: not a {magic.rstrip(bytes(1)).decode(errors='replace')} file (bad magic)")
    head = len(magic) + _FRAME.size
    if len(data) < head:
        raise IntegrityError(f"{where}: truncated ({len(data)} bytes, shorter than its {head}-byte header)")
    length, digest = _FRAME.unpack_from(data, len(magic))
    payload = memoryview(data)[head:]  # a view: a checkpoint is not copied to be checked
    if len(payload) != length:
        what = "truncated" if len(payload) < length else "has trailing bytes"
        raise IntegrityError(f"{where}: {what} (payload of {len(payload)} bytes, the header says {length})")
    if hashlib.sha256(payload).digest() != digest:
        raise IntegrityError(f"{where}: corrupt (the contents differ from the SHA-256 recorded in the file)")
    return payload


__all__ = ["IntegrityError", "atomic_write", "is_sealed", "read_json", "remove_debris", "seal", "unseal"]


LOG_FILE = "log.jsonl"


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL log, [] if it does not exist; a torn line (a kill mid-write) is skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
