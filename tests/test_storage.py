"""Files vqkit writes and reads back: atomic, sealed with a digest, and leaving no debris when killed."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vqkit import storage
from vqkit.models import Tokenizer, TokenizerConfig, pretrained
from vqkit.storage import IntegrityError, atomic_write, remove_debris, seal, unseal
from vqkit.train.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint

MAGIC = b"TEST\x00"
MODEL = TokenizerConfig(arch="rfsq_conv", quantizer="fsq", conv_channels=(4, 8), quantizer_args={"levels": [5, 5]})


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_seal_round_trip_and_every_damage_is_refused() -> None:
    payload = bytes(range(256)) * 8
    sealed = b"".join(seal(MAGIC, payload))
    assert unseal(sealed, MAGIC, "f") == payload
    for i in range(len(sealed)):  # every single-bit flip, header included
        damaged = bytearray(sealed)
        damaged[i] ^= 1 << (i % 8)
        with pytest.raises(IntegrityError, match=r"^f: "):
            unseal(bytes(damaged), MAGIC, "f")
    for n in (0, 3, len(MAGIC) + 5, len(sealed) - 1):
        with pytest.raises(IntegrityError, match=r"truncated|bad magic"):
            unseal(sealed[:n], MAGIC, "f")
    with pytest.raises(IntegrityError, match="trailing bytes"):
        unseal(sealed + b"\0", MAGIC, "f")


def _tmp(target: str, pid: int, host: str = storage._HOST) -> str:
    return f"{storage.TMP_PREFIX}{target}-{host}-{pid}-0123456789abcdef"


def test_atomic_write_removes_the_debris_of_killed_writers_only(tmp_path: Path) -> None:
    storage._SWEPT.clear()  # other tests of this process swept other folders
    target = tmp_path / "checkpoint.pt"
    dead, alive = _dead_pid(), os.getpid()
    debris = [tmp_path / _tmp("checkpoint.pt", dead), tmp_path / _tmp("other-name.pt", dead)]  # any target's
    keep = [tmp_path / _tmp("checkpoint.pt", alive),  # a live writer's file
            tmp_path / _tmp("checkpoint.pt", dead, host="0badc0de"),  # another machine's (a shared folder)
            tmp_path / (_tmp("checkpoint.pt", dead) + "x"),  # not exactly the pattern
            tmp_path / "notes.tmp", tmp_path / ".notes.tmp"]  # not a writer's temporary file
    for path in debris + keep:
        path.write_bytes(b"partial")
    (tmp_path / _tmp("link", dead)).symlink_to(tmp_path / "notes.tmp")  # a link is never followed nor removed
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert not any(p.exists() for p in debris)
    assert all(p.exists() for p in keep) and (tmp_path / _tmp("link", dead)).is_symlink()
    assert remove_debris(tmp_path) == []


def test_a_write_never_removes_the_users_own_hidden_files(tmp_path: Path) -> None:
    """Issue 18: `.notes.20240101.tmp` (digits read as a dead PID) and an old `.thesis.draft_v2.tmp` were
    deleted by the sweep of an encode into their folder."""
    storage._SWEPT.clear()
    dead = _dead_pid()
    users = [".notes.20240101.tmp", ".thesis.draft_v2.tmp", f".x.png.{dead}.tmp", f".x.png.{dead}.0123abcd.tmp",
             f".vqkit-tmp-x.png-{dead}", f"vqkit-tmp-x.png-{storage._HOST}-{dead}-0123456789abcdef"]
    for name in users:
        (tmp_path / name).write_bytes(b"mine")
        os.utime(tmp_path / name, (0, 0))  # 1970: as old as a file gets
    atomic_write(tmp_path / "x.vqt", b"tokens")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*users, "x.vqt"])


def test_temporary_names_fit_the_file_system_and_are_recognised(tmp_path: Path) -> None:
    for target in ("a", "x-1-2", "é" * 127, "n" * 255):  # up to 255 bytes, the most a name holds
        name = storage.temporary_name(target)
        assert len(name.encode()) <= 255 and name.startswith(storage.TMP_PREFIX) and storage.is_temporary(name)
        atomic_write(tmp_path / target, b"ok")
        assert (tmp_path / target).read_bytes() == b"ok"
    assert not storage.is_temporary(".notes.20240101.tmp")
    assert storage.temporary_name("a") != storage.temporary_name("a")  # a random part


def test_only_one_scan_per_folder_and_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage._SWEPT.clear()
    scans: list[Path] = []
    real = storage.remove_debris
    monkeypatch.setattr(storage, "remove_debris", lambda folder: scans.append(folder) or real(folder))
    for i in range(20):
        atomic_write(tmp_path / f"{i}.vqt", b"x")
    assert scans == [tmp_path]


def test_a_writer_killed_mid_write_leaves_the_old_file_and_its_debris_is_removed_later(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    atomic_write(target, b"old")
    code = ("import os, sys, signal\n"
            "import vqkit.storage as s\n"
            "real = os.replace\n"
            "def die(*a): os.kill(os.getpid(), signal.SIGKILL)\n"
            "s.os.replace = die\n"
            f"s.atomic_write(__import__('pathlib').Path({str(target)!r}), b'new' * 1000)\n")
    done = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert done.returncode == -9
    assert target.read_bytes() == b"old"
    assert len(list(tmp_path.glob(".vqkit-tmp-data.bin-*"))) == 1  # the kill left its temporary file
    storage._SWEPT.clear()  # as a new process would
    atomic_write(target, b"newer")
    assert target.read_bytes() == b"newer" and sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]


def _checkpoint(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    config = {"arch": "rfsq_conv", "quantizer": "fsq", "arch_args": "{}"}
    save_checkpoint(tmp_path, {"config": config, "step": 3, "model": Tokenizer(MODEL).state_dict()})
    return tmp_path / CHECKPOINT, config


def test_checkpoint_byte_flips_and_truncations_are_refused_without_unsafe_advice(tmp_path: Path) -> None:
    path, config = _checkpoint(tmp_path)
    data = path.read_bytes()
    assert load_checkpoint(tmp_path, config)["step"] == 3
    positions = sorted({0, 5, 12, 30, 47, 60, *range(100, len(data), max(1, len(data) // 40)), len(data) - 1})
    for i in positions:
        damaged = bytearray(data)
        damaged[i] ^= 0x10
        path.write_bytes(bytes(damaged))
        with pytest.raises(IntegrityError) as info:
            load_checkpoint(tmp_path, config)
        assert "weights_only" not in str(info.value) and str(path) in str(info.value)
    for n in (0, 10, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:n])
        with pytest.raises(IntegrityError, match=r"truncated|not a vqkit training checkpoint"):
            load_checkpoint(tmp_path, config)


def test_an_unsealed_checkpoint_from_an_older_vqkit_loads_with_a_warning(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"format": "vqkit.train-checkpoint", "version": 1, "config": {}, "step": 7}, buffer)
    (tmp_path / CHECKPOINT).write_bytes(buffer.getvalue())
    with pytest.warns(UserWarning, match="no SHA-256"):
        assert load_checkpoint(tmp_path, {"arch_args": "{}"})["step"] == 7


def test_a_saved_model_without_its_weights_digest_is_refused(tmp_path: Path) -> None:
    Tokenizer(MODEL).save_pretrained(tmp_path)
    assert isinstance(Tokenizer.from_pretrained(tmp_path), Tokenizer)
    meta = json.loads((tmp_path / "config.json").read_text())
    for bad in (None, "abc", 5):
        meta["weights_sha256"] = bad
        (tmp_path / "config.json").write_text(json.dumps(meta))
        with pytest.raises(IntegrityError, match="config_sha256"):  # an edit: the config's own digest sees it
            Tokenizer.from_pretrained(tmp_path)
        (tmp_path / "config.json").write_bytes(pretrained.config_json(meta))  # digest recomputed: the weights' check
        with pytest.raises(IntegrityError, match="no valid weights_sha256"):
            Tokenizer.from_pretrained(tmp_path)
    del meta["weights_sha256"]
    (tmp_path / "config.json").write_bytes(pretrained.config_json(meta))
    with pytest.raises(IntegrityError, match="cannot be verified"):
        Tokenizer.from_pretrained(tmp_path)
