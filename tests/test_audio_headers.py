"""Audio headers are checked against the file before anything is allocated (issue 18: a 64 kB WAV claiming
1 Hz made ``load_audio`` build 512 M samples and hang; 1000 channels or a short ``data`` chunk were trusted
and the file silently read as a few samples), and :func:`read_audio` gives the file's own rate."""

from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from faults.harness import media
from vqkit.data.files import BadFileError
from vqkit.modalities.audio import io as audio
from vqkit.modalities.audio.io import check_audio, load_audio, read_audio


def _wav(path: Path, **header: Any) -> Path:
    """A RIFF/WAVE file whose header can lie (:func:`faults.harness.media.wav_bytes`)."""
    return media.write(path, media.wav_bytes(**header))


def _refused(path: Path, match: str) -> None:
    """Refused by every reader, quickly, with one line naming the file."""
    for read in (lambda: read_audio(path), lambda: load_audio(path, 16000), lambda: check_audio(path)):
        began = time.perf_counter()
        with pytest.raises(BadFileError, match=match) as info:
            read()
        assert time.perf_counter() - began < 2.0
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_64k_wav_claiming_1_hz_is_refused_before_resampling(tmp_path: Path) -> None:
    _refused(_wav(tmp_path / "x.wav", rate=1), r"sample rate of 1 Hz .*1000\.\.768000 Hz")


def test_rates_outside_the_sane_range_are_refused(tmp_path: Path) -> None:
    _refused(_wav(tmp_path / "slow.wav", rate=999), "sample rate of 999 Hz")
    _refused(_wav(tmp_path / "fast.wav", rate=768_001), "sample rate of 768001 Hz")


def test_a_thousand_channels_are_refused(tmp_path: Path) -> None:
    _refused(_wav(tmp_path / "many.wav", channels=1000, frames=32), "declares 1000 channels")
    _refused(_wav(tmp_path / "none.wav", channels=0, frames=10, align=2), "declares 0 channels")


def test_a_data_chunk_shorter_than_the_samples_that_follow_is_refused(tmp_path: Path) -> None:
    _refused(_wav(tmp_path / "short.wav", declared=10), r"'data' chunk declares 10 bytes .* not chunks")


def test_a_data_chunk_longer_than_the_file_is_refused(tmp_path: Path) -> None:
    _refused(_wav(tmp_path / "cut.wav", declared=64_000 + 1000), "truncated")


def test_an_inconsistent_block_size_or_partial_frame_is_refused(tmp_path: Path) -> None:
    _refused(_wav(tmp_path / "align.wav", channels=2, align=2), r"block_align 2 for 2 channels of 16 bits")
    _refused(_wav(tmp_path / "odd.wav", channels=2, data=bytes(4 * 100 + 2)), "not a whole number .* of 2-channel")
    _refused(_wav(tmp_path / "empty.wav", data=b""), "has no samples")
    _refused(_wav(tmp_path / "half.wav", data=b"\0"), "not a whole number")
    _refused(_wav(tmp_path / "nofmt.wav", fmt=False), "no 'fmt ' chunk")


def test_chunks_after_the_data_are_fine(tmp_path: Path) -> None:
    info = b"INFOISFT" + struct.pack("<I", 5) + b"vqkit\0"
    path = _wav(tmp_path / "tagged.wav", frames=1000, after=b"LIST" + struct.pack("<I", len(info)) + info)
    wave, rate = read_audio(path)
    assert rate == 16000 and wave.shape == (1000,)


def test_every_sample_above_the_cap_is_refused_before_allocation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    path = _wav(tmp_path / "x.wav", rate=8000, frames=4000)
    monkeypatch.setattr(audio, "MAX_SAMPLES", 3999)
    with pytest.raises(BadFileError, match="more than the 3,999 samples"):
        read_audio(path)
    monkeypatch.setattr(audio, "MAX_SAMPLES", 7999)
    assert load_audio(path, 8000).shape == (4000,)  # the file itself is within the cap
    with pytest.raises(BadFileError, match=r"resample to 8,000 at 16000 Hz, more than the 7,999"):
        load_audio(path, 16000)


def test_read_audio_gives_the_files_own_rate_and_load_audio_resamples(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    stereo = (rng.standard_normal((2205, 2)) * 0.2).astype(np.float32)
    sf.write(tmp_path / "x.flac", stereo, 22050, subtype="PCM_24")
    wave, rate = read_audio(tmp_path / "x.flac")
    expected = sf.read(tmp_path / "x.flac", dtype="float32")[0].mean(axis=1)
    assert rate == 22050 and wave.dtype == torch.float32
    assert np.array_equal(wave.numpy(), np.clip(expected, -1, 1))
    assert load_audio(tmp_path / "x.flac", 16000).shape == (1600,)
    assert np.array_equal(load_audio(tmp_path / "x.flac", 22050).numpy(), wave.numpy())


def test_a_flac_outside_the_rate_range_is_refused(tmp_path: Path) -> None:
    sf.write(tmp_path / "low.flac", np.zeros(800, np.float32), 800, subtype="PCM_16")
    _refused(tmp_path / "low.flac", "sample rate of 800 Hz")


def test_load_audio_sample_rate_must_be_a_positive_integer(tmp_path: Path) -> None:
    path = _wav(tmp_path / "x.wav", frames=100)
    for bad in (0, -1, 16000.0, True, "16000"):
        with pytest.raises(ValueError, match="sample_rate must be a positive integer"):
            load_audio(path, bad)  # type: ignore[arg-type]


def test_a_header_of_endless_empty_chunks_is_refused_quickly(tmp_path: Path) -> None:
    junk = b"junk" + struct.pack("<I", 0)
    body = b"WAVE" + junk * 100_000 + b"data" + struct.pack("<I", 2) + b"\0\0"
    path = tmp_path / "chunks.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    _refused(path, "more than 4096 chunks")
