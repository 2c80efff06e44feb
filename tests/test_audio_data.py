"""Speech data: file discovery, decoding, mixdown, resampling, deterministic crops, collation, WAV output."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from vqkit.data.files import BadFileError, BadFileWarning, make_loader, set_epoch, skipped_count
from vqkit.modalities.audio.io import (
    AUDIO_EXTENSIONS,
    AudioFolder,
    check_audio,
    collate_audio,
    find_audio,
    load_audio,
    write_wav,
)

SHARED_AUDIO = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "audio"
needs_speech = pytest.mark.skipif(not (SHARED_AUDIO / "librispeech-test-other").is_dir(),
                                  reason=f"real speech data not present at {SHARED_AUDIO.resolve()}")
SR = 8000


def _noise(n: int, seed: int, channels: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.9, 0.9, (n, channels)).astype(np.float32)


def _write(path: Path, n: int, seed: int, rate: int = SR, subtype: str = "FLOAT") -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _noise(n, seed)
    sf.write(path, data, rate, subtype=subtype)
    return data[:, 0]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Five clips of different lengths, one shorter than the 400-sample segment used below."""
    for k, n in enumerate([1000, 1500, 300, 2000, 801]):
        _write(tmp_path / f"spk{k % 2}" / f"clip{k}.wav", n, k)
    return tmp_path


def test_find_audio_order_case_hidden(tmp_path: Path) -> None:
    for name in ["b/two.FLAC", "a/one.wav", "a/.hidden.wav", ".hidden/x.wav", "c.Wav"]:
        _write(tmp_path / name, 10, 0, subtype="PCM_16")
    (tmp_path / "a/notes.txt").write_text("not audio")
    (tmp_path / "a/song.mp3").write_bytes(b"\x00")
    assert AUDIO_EXTENSIONS == (".wav", ".flac")
    assert [p.relative_to(tmp_path).as_posix() for p in find_audio(tmp_path)] == ["a/one.wav", "b/two.FLAC", "c.Wav"]
    assert [p.name for p in find_audio(tmp_path, (".flac",))] == ["two.FLAC"]
    with pytest.raises(ValueError, match=r"audio folder .*missing does not exist"):
        find_audio(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"c\.Wav is a file, not a folder"):
        AudioFolder(tmp_path / "c.Wav", SR)
    with pytest.raises(ValueError, match="no audio files"):
        find_audio(tmp_path / "a", (".ogg",))


def test_find_audio_symlink_loop(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _write(root / "spk/a.wav", 10, 0)
    _write(root / "spk/deeper/b.wav", 10, 1)
    os.symlink(root, root / "spk/deeper/loop")  # a cycle: data/spk/deeper/loop -> data
    os.symlink(root / "spk", root / "again")  # a second name for a folder already read
    os.symlink(root / "spk/a.wav", root / "spk/deeper/a_link.wav")  # a second name for a file
    files = find_audio(root)
    assert [p.relative_to(root).as_posix() for p in files] == ["spk/a.wav", "spk/deeper/b.wav"]  # link-free paths
    assert len(AudioFolder(root, SR, 4)) == 2


def test_resample_keeps_frequency_and_amplitude(tmp_path: Path) -> None:
    t = np.arange(22050) / 22050
    sf.write(tmp_path / "sine.wav", (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32), 22050,
             subtype="FLOAT")
    x = load_audio(tmp_path / "sine.wav", 16000)
    assert x.dtype == torch.float32 and x.dim() == 1 and abs(x.shape[0] - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(x.numpy() * np.hanning(x.shape[0])))
    peak_hz = np.argmax(spectrum) * 16000 / x.shape[0]
    assert abs(peak_hz - 1000.0) <= 10.0
    middle = x[1000:-1000].numpy().astype(np.float64)  # away from the filter's edge transients
    assert np.sqrt(2 * np.mean(middle**2)) == pytest.approx(0.5, rel=0.02)
    assert np.abs(middle).max() == pytest.approx(0.5, rel=0.02)
    # a 10 kHz tone is above the new Nyquist (8 kHz): a real low-pass removes it, interpolation would alias it
    sf.write(tmp_path / "high.wav", (0.5 * np.sin(2 * np.pi * 10000.0 * t)).astype(np.float32), 22050,
             subtype="FLOAT")
    assert load_audio(tmp_path / "high.wav", 16000)[1000:-1000].abs().max().item() < 0.005


def test_stereo_mixdown_is_channel_mean(tmp_path: Path) -> None:
    stereo = _noise(500, 3, channels=2)
    sf.write(tmp_path / "stereo.flac", stereo, SR, subtype="PCM_24")
    read, _ = sf.read(tmp_path / "stereo.flac", dtype="float32", always_2d=True)
    x = load_audio(tmp_path / "stereo.flac", SR)
    assert x.shape == (500,)
    np.testing.assert_allclose(x.numpy(), read.mean(axis=1), atol=1e-7)


def test_train_crops_keyed_by_seed_epoch_index(folder: Path) -> None:
    seg = 400
    a, b = AudioFolder(folder, SR, seg, seed=5), AudioFolder(folder, SR, seg, seed=5)
    epoch0 = [a[i] for i in range(len(a))]
    for i, x in enumerate(epoch0):
        assert x.shape == (1, seg) and x.dtype == torch.float32
        assert torch.equal(x, b[i]) and torch.equal(x, a[i])
        whole = load_audio(a.files[i], SR)
        if whole.shape[0] >= seg:  # the crop is the slice the (seed, epoch, index) generator names
            start = int(np.random.default_rng([5, 0, i]).integers(0, whole.shape[0] - seg + 1))
            assert torch.equal(x[0], whole[start : start + seg])
    a.set_epoch(1)
    epoch1 = [a[i] for i in range(len(a))]
    long = [i for i in range(len(a)) if load_audio(a.files[i], SR).shape[0] > seg + 50]
    assert not any(torch.equal(epoch0[i], epoch1[i]) for i in long)
    assert torch.equal(a[-1], epoch1[-1])
    other_seed = AudioFolder(folder, SR, seg, seed=6)
    assert not all(torch.equal(epoch0[i], other_seed[i]) for i in long)
    epoch0[0].fill_(0.0)  # items are copies: writing into one leaves the cache intact
    assert torch.equal(b[0], AudioFolder(folder, SR, seg, seed=5)[0])


def test_short_clip_is_zero_padded(folder: Path) -> None:
    data = AudioFolder(folder, SR, 400)
    i = next(k for k, p in enumerate(data.files) if p.name == "clip2.wav")  # 300 samples
    whole = load_audio(data.files[i], SR)
    x = data[i]
    assert x.shape == (1, 400)
    assert torch.equal(x[0, :300], whole) and not x[0, 300:].any()
    data.set_epoch(7)
    assert torch.equal(data[i], x)


def test_eval_items_are_whole_utterances(folder: Path) -> None:
    data = AudioFolder(folder, SR, 400, train=False)
    data.set_epoch(3)
    for i in range(len(data)):
        x = data[i]
        assert x.shape == (1, sf.info(str(data.files[i])).frames)
        assert torch.equal(x[0], load_audio(data.files[i], SR))
    assert torch.equal(data[-1], data[len(data) - 1])
    with pytest.raises(IndexError):
        data[len(data)]
    half = AudioFolder(folder, SR // 2, 400, train=False)  # resampled on load
    assert abs(half[0].shape[1] - data[0].shape[1] // 2) <= 1


def test_max_items_spread_evenly(tmp_path: Path) -> None:
    for k in range(10):
        _write(tmp_path / f"c{k}.wav", 20, k, subtype="PCM_16")
    names = [p.name for p in AudioFolder(tmp_path, SR, 8, max_items=3).files]
    assert names == ["c0.wav", "c3.wav", "c6.wav"]
    assert len(AudioFolder(tmp_path, SR, 8, max_items=50)) == 10
    with pytest.raises(ValueError, match="max_items"):
        AudioFolder(tmp_path, SR, 8, max_items=0)
    with pytest.raises(ValueError, match="segment"):
        AudioFolder(tmp_path, SR, 0)


def test_collate_pads_and_reports_lengths(folder: Path) -> None:
    data = AudioFolder(folder, SR, 400, train=False)
    items = [data[i] for i in range(len(data))]
    audio, lengths = collate_audio(items)
    assert audio.shape == (len(items), 1, 2000) and audio.dtype == torch.float32
    assert lengths.dtype == torch.int64 and lengths.tolist() == [x.shape[1] for x in items]
    for k, x in enumerate(items):
        assert torch.equal(audio[k, :, : x.shape[1]], x) and not audio[k, :, x.shape[1] :].any()
    with pytest.raises(ValueError, match="empty"):
        collate_audio([])
    with pytest.raises(ValueError, match="item 1"):
        collate_audio([items[0], items[1][0]])


def test_loader_workers_see_set_epoch(folder: Path) -> None:
    data = AudioFolder(folder, SR, 400, seed=1)
    loader = make_loader(data, batch_size=5, train=False, workers=2)
    first = next(iter(loader))
    set_epoch(loader, 2)  # persistent workers hold old copies of the dataset; the epoch is shared
    second = next(iter(loader))
    data.set_epoch(2)
    assert torch.equal(second, torch.stack([data[i] for i in range(len(data))]))
    assert not torch.equal(first, second)


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a wave file at all" * 10)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _nan(path: Path) -> None:
    data = np.zeros(100, np.float32)
    data[37] = np.nan
    sf.write(path, data, SR, subtype="FLOAT")


def _inf(path: Path) -> None:
    data = np.zeros(100, np.float32)
    data[3] = np.inf
    sf.write(path, data, SR, subtype="FLOAT")


def _no_frames(path: Path) -> None:
    sf.write(path, np.zeros((0, 1), np.float32), SR, subtype="PCM_16")


def _truncated(path: Path) -> None:  # libsndfile alone reads the half that is there
    sf.write(path, np.full(1000, 0.1, np.float32), SR, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:1000])


@pytest.mark.parametrize(("make", "cause", "header"), [
    (_garbage, "cannot read audio", True), (_empty, "cannot read audio", True), (_nan, "NaN or infinite", False),
    (_inf, "NaN or infinite", False), (_no_frames, "has no samples", True),
    (_truncated, "truncated: its header declares 2000 bytes of samples, the file holds 956", True)])
def test_bad_files_name_the_file(tmp_path: Path, make: Callable[[Path], None], cause: str, header: bool) -> None:
    path = tmp_path / "speaker" / "bad_clip.wav"
    path.parent.mkdir()
    make(path)
    with pytest.raises(BadFileError, match=r"bad_clip\.wav") as err:
        load_audio(path, SR)
    assert "bad_clip.wav" in str(err.value) and cause in str(err.value) and err.value.path == path
    data = AudioFolder(tmp_path, SR, 10)  # skip, but nothing else to load: an error, not a loop
    with pytest.warns(BadFileWarning, match=r"bad_clip\.wav"), pytest.raises(BadFileError, match=r"all 1 files"):
        data[0]
    if header:  # found by the header check when the dataset is made
        with pytest.raises(BadFileError, match=r"bad_clip\.wav.*bad_files='fail'"):
            AudioFolder(tmp_path, SR, 10, bad_files="fail")
        with pytest.raises(BadFileError, match=r"bad_clip\.wav"):
            check_audio(path)
    else:  # NaN/Inf need decoding: found when read
        check_audio(path)
        strict = AudioFolder(tmp_path, SR, 10, bad_files="fail")
        with pytest.raises(BadFileError, match=r"bad_clip\.wav contains NaN or infinite samples.*bad_files='fail'"):
            strict[0]
    with pytest.raises(ValueError, match=r"missing\.wav"):
        load_audio(tmp_path / "missing.wav", SR)
    with pytest.raises(ValueError, match="bad_files must be one of"):
        AudioFolder(tmp_path, SR, 10, bad_files="warn")


def _mixed(root: Path) -> list[np.ndarray]:
    """clip0 good, clip1 garbage, clip2 NaN, clip3 good: returns the good clips' samples."""
    good = [_write(root / "clip0.wav", 500, 0), _write(root / "clip3.wav", 700, 3)]
    _garbage(root / "clip1.wav")
    _nan(root / "clip2.wav")
    return good


def test_bad_files_skipped_counted_and_replaced(tmp_path: Path) -> None:
    good = _mixed(tmp_path)
    data = AudioFolder(tmp_path, SR, 400, train=False)
    with pytest.warns(BadFileWarning) as caught:
        items = [data[i] for i in range(len(data))]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and "clip1.wav" in messages[0] and "(1 of 4 skipped so far)" in messages[0]
    assert "clip2.wav" in messages[1] and "NaN" in messages[1] and "(2 of 4 skipped so far)" in messages[1]
    assert data.skipped == skipped_count(data) == 2 and [p.name for p in data.skipped_files] == ["clip1.wav",
                                                                                                "clip2.wav"]
    assert [x.shape[1] for x in items] == [500, 700, 700, 700]  # bad clips replaced by the next that loads
    np.testing.assert_allclose(items[1][0].numpy(), good[1], atol=1e-7)
    with pytest.raises(BadFileError, match=r"clip1\.wav"):
        data.audio(1)  # the raw waveform of a bad file is still an error
    with pytest.raises(BadFileError, match=r"clip1\.wav"):
        AudioFolder(tmp_path, SR, 400, bad_files="fail")


def test_bad_files_with_workers(tmp_path: Path) -> None:
    _mixed(tmp_path)

    def run(workers: int) -> tuple[list[torch.Tensor], int]:
        data = AudioFolder(tmp_path, SR, 400, seed=2)
        loader = make_loader(data, batch_size=2, train=True, seed=2, workers=workers)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BadFileWarning)
            return list(loader), data.skipped

    (zero, skipped0), (two, skipped2) = run(0), run(2)
    assert skipped0 == skipped2 == 2  # counted in the workers, read here
    assert len(two) == 2 and all(torch.equal(x, y) for x, y in zip(zero, two, strict=True))


def test_write_wav_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    wave = rng.uniform(-1.2, 1.2, 3000).astype(np.float32)  # some samples past ±1: clipped
    wave[:4] = [1.0, -1.0, 0.5 / 32768, 0.0]
    path = tmp_path / "out.wav"
    path.write_bytes(b"old contents")  # replaced atomically
    write_wav(path, torch.from_numpy(wave)[None], SR)
    info = sf.info(str(path))
    assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == ("WAV", "PCM_16", SR, 1, 3000)
    back = load_audio(path, SR)
    assert (back - torch.from_numpy(np.clip(wave, -1, 1))).abs().max().item() <= 1 / 32768
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]  # no temporary file left behind
    stereo = rng.uniform(-1, 1, (2, 100))
    write_wav(tmp_path / "stereo.wav", stereo, 22050)
    read, rate = sf.read(tmp_path / "stereo.wav", always_2d=True)
    assert rate == 22050 and np.abs(read.T - stereo).max() <= 1 / 32768
    with pytest.raises(ValueError, match="NaN"):
        write_wav(tmp_path / "nan.wav", np.array([0.0, np.nan]), SR)
    assert not (tmp_path / "nan.wav").exists()


@needs_speech
def test_real_librispeech() -> None:
    root = SHARED_AUDIO / "librispeech-test-other"
    assert len(find_audio(root)) == 100
    evaluation = AudioFolder(root, 16000, train=False, max_items=3)
    audio, lengths = collate_audio([evaluation[i] for i in range(len(evaluation))])
    assert audio.shape == (3, 1, int(lengths.max())) and bool((lengths > 16000).all())  # utterances over 1 s
    assert bool(torch.isfinite(audio).all()) and audio.abs().max().item() <= 1.0
    assert audio.abs().max().item() > 0.05  # speech, not silence
    train = AudioFolder(root, 16000, segment=8000, max_items=3)
    assert all(train[i].shape == (1, 8000) for i in range(len(train)))
    lj = sorted((SHARED_AUDIO / "ljspeech" / "wavs").glob("*.wav"))[:1]
    if lj:  # 22.05 kHz → 16 kHz keeps the duration
        frames = sf.info(str(lj[0])).frames
        assert abs(load_audio(lj[0], 16000).shape[0] - frames * 16000 / 22050) <= 1
