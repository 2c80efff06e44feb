"""Files that are written whole or not at all, and that prove their integrity when read back.

:func:`atomic_write` writes to a temporary file beside the target (named after it and the writing
process), flushes it to disk and renames it over the target, so a reader sees the old file or
the new one, never a part. The temporary file is named ``.vqkit-tmp-<target>-<host>-<pid>-<random>``,
a name no user file has; a writer killed mid-write leaves it behind, and the next write into that
folder removes it once it is *provably* vqkit's debris (see :func:`is_debris`). Nothing else in the
folder is ever touched: not a user's ``.notes.tmp``, not another user's or another machine's
temporary file, not the ``.NAME.PID.HEX.tmp`` files of vqkit 0.1 (left in place: remove by hand).

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
import socket
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class IntegrityError(ValueError):
    """A file is truncated, corrupt, or not the kind of file expected."""


TMP_PREFIX = ".vqkit-tmp-"
"""Start of every temporary file vqkit writes: no user file is expected to carry it."""
_HOST = hashlib.sha256(socket.gethostname().encode(errors="replace")).hexdigest()[:8]
_NAME_MAX = 255  # bytes in one file name on every common file system
_TMP = re.compile(r"^\.vqkit-tmp-(?P<name>.+)-(?P<host>[0-9a-f]{8})-(?P<pid>[1-9][0-9]{0,9})-[0-9a-f]{16}$", re.DOTALL)


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists here (another user's counts: it cannot be signalled but exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process; a PID beyond this system's range
        return True
    return True


def temporary_name(target: str) -> str:
    """The name of a fresh temporary file for ``target`` (a file name): ``.vqkit-tmp-<target>-<host>-<pid>-
    <16 random hex>``, the target shortened if needed so that the whole fits in 255 bytes."""
    tail = f"-{_HOST}-{os.getpid()}-{secrets.token_hex(8)}"
    room = _NAME_MAX - len(TMP_PREFIX) - len(tail)
    name = target.encode(errors="surrogateescape")[:room].decode(errors="ignore") or "_"
    return f"{TMP_PREFIX}{name}{tail}"


def is_temporary(name: str) -> bool:
    """Whether ``name`` is the name of a vqkit temporary file (:func:`temporary_name`), whoever wrote it."""
    return _TMP.match(name) is not None


def is_debris(entry: os.DirEntry[str]) -> bool:
    """Whether ``entry`` is provably left by a killed vqkit writer and may be deleted: a regular file
    (not a link) named by :func:`temporary_name` on this machine, owned by this user, whose writing
    process no longer exists. A name that merely looks like it from another host (a shared folder),
    another user, or a PID that is alive (the writer, or a new process that reuses its PID) is left
    alone: a leftover costs disk space, a wrong deletion costs a user's file or a running write."""
    match = _TMP.match(entry.name)
    if match is None or match["host"] != _HOST or not entry.is_file(follow_symlinks=False):
        return False
    pid = int(match["pid"])
    if pid == os.getpid() or _alive(pid):
        return False
    try:
        owner = entry.stat(follow_symlinks=False).st_uid
    except FileNotFoundError:
        return False
    return not hasattr(os, "getuid") or owner == os.getuid()


def remove_debris(folder: Path) -> list[Path]:
    """Delete the temporary files that killed vqkit writers left in ``folder`` (:func:`is_debris`);
    returns them. One directory scan."""
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(folder):
            if entry.name.startswith(TMP_PREFIX) and is_debris(entry):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


_SWEPT: set[tuple[int, str]] = set()  # (pid, folder) already swept: one scan per folder and process


def atomic_write(path: Path, data: bytes | memoryview | Sequence[bytes | memoryview]) -> None:
    """Write ``data`` (bytes, or chunks written one after the other) to ``path`` so that a reader sees
    the old file or the new one, never a part. The first write into a folder by this process removes
    the debris of killed vqkit writers there (one scan per folder, not per file: batch encodes stay
    linear)."""
    path = Path(path)
    folder = (os.getpid(), os.path.abspath(path.parent))
    if folder not in _SWEPT:
        remove_debris(path.parent)
        _SWEPT.add(folder)
    tmp = path.parent / temporary_name(path.name)
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


__all__ = ["LOG_FILE", "TMP_PREFIX", "IntegrityError", "atomic_write", "is_debris", "is_sealed", "is_temporary",
           "read_json", "read_records", "remove_debris", "seal", "temporary_name", "unseal"]


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
