"""Speech datasets for the tokenizers: a folder of WAV/FLAC files, decoded, mixed down and resampled.

Every waveform is float32 mono in **[-1, 1]**, the range vqkit's speech models, losses and metrics
(:mod:`vqkit.dsp`) use end to end. Shapes: :func:`load_audio` gives ``(T,)``; a dataset item is
``(1, T)`` (one channel, like an image's ``(3, H, W)``), so a batch is ``(B, 1, T)``.

- **Deterministic crops.** Training items are fixed-length crops whose start comes from a generator
  keyed by ``(seed, epoch, index)``, never from a worker's global RNG: an item is the same whatever
  the number of loader workers, their order, or whether the run was resumed (as in
  :mod:`vqkit.modalities.image.datasets`). The epoch lives in shared memory so persistent workers see
  ``set_epoch``.
- **A real resampler.** Rates are converted with libsoxr's high-quality filter (``soxr``), not by
  linear interpolation, which aliases and dulls the highs that a codec is judged on. LibriSpeech
  (16 kHz) and LJSpeech (22.05 kHz) then train one model at one rate.
- **Headers are checked before anything is allocated.** A RIFF/WAVE header is read against the
  file's size (:func:`check_wav_header`: sample rate within :data:`MIN_SAMPLE_RATE`..
  :data:`MAX_SAMPLE_RATE`, at most :data:`MAX_CHANNELS` channels, a ``data`` chunk of whole frames
  that the file really holds, neither shorter nor longer than declared), and every format's rate,
  channels and length (libsndfile's header reading) are bounded, decoded and resampled lengths by
  :data:`MAX_SAMPLES`: a 64 kB WAV claiming 1 Hz no longer asks for 512 M samples.
- **The file's own rate.** :func:`read_audio` returns the samples at the rate the file was recorded
  at, with that rate, so that a codec can store it; :func:`load_audio` resamples.
- **Errors name the file.** A corrupt, empty or NaN-filled file raises a :class:`BadFileError` (a
  ``ValueError``) with its path at once, instead of a NaN loss hours later. :class:`AudioFolder`'s
  ``bad_files`` decides what a dataset does with one: ``"skip"`` (default) it, warn once and
  count it (``skipped``), or ``"fail"``, as in :mod:`vqkit.data.files`.
"""

from __future__ import annotations

import io
import operator
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

try:
    import soundfile as sf  # type: ignore[import-untyped]
    import soxr  # type: ignore[import-untyped]
except ImportError as err:  # the audio extra is optional; say how to get it
    raise ImportError(f"vqkit's audio support needs soundfile and soxr: pip install 'vqkit[audio]' ({err})") from err
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from ...data.files import BadFileError, _BadFileMixin, _EpochMixin, _index, check_bad_files, find_files, spread
from ...storage import atomic_write

AUDIO_EXTENSIONS = (".wav", ".flac")
MIN_SAMPLE_RATE = 1_000
"""Lowest sample rate a file may declare (Hz): below it a header is lying, not recording speech."""
MAX_SAMPLE_RATE = 768_000
"""Highest sample rate a file may declare (Hz): the highest rate audio hardware records at."""
MAX_CHANNELS = 64
"""Most channels a file may declare (libsndfile's WAV limit is 1024; 64 covers every real recording)."""
MAX_SAMPLES = 1 << 31
"""Most samples decoded from one file (all channels together) and most samples a resampling may produce
(37 h at 16 kHz; the speech codec's own limit): checked before the buffer is allocated."""
_MAX_CHUNKS = 4096  # chunks read in one header: a file of millions of empty chunks is refused, not walked
_PCM_TAGS = {1: "PCM", 3: "IEEE float", 6: "A-law", 7: "mu-law", 0xFFFE: "extensible"}  # block_align = C x bytes


def find_audio(root: str | os.PathLike[str], extensions: Sequence[str] = AUDIO_EXTENSIONS) -> list[Path]:
    """All audio files under ``root``, recursively, sorted by relative posix path (one order on every
    machine). Extensions match case-insensitively; hidden files and folders are skipped.

    Symbolic links are followed, but each real folder is read once and each real file listed once
    (:func:`vqkit.data.files.find_files`): a link back to a parent (a loop) or a second link to the
    same folder adds no files twice and cannot recurse forever; the link-free path of a file is the
    one kept. A ``ValueError`` names ``root`` when it is missing, a file, or holds no audio.
    """
    found = find_files(root, extensions, "audio")
    if not found:
        raise ValueError(f"no audio files ({', '.join(e.lower() for e in extensions)}) found under {root}")
    return found


def split_folder(data: str | os.PathLike[str], split: str) -> Path:
    """``data/split`` when that folder exists (train/, val/), else ``data`` itself (one flat folder)."""
    root = Path(data)
    return root / split if (root / split).is_dir() else root


def _printable(tag: bytes) -> bool:
    return len(tag) == 4 and all(0x20 <= b <= 0x7E for b in tag)


def _chunks_fill(f: io.BufferedReader, offset: int, size: int) -> bool:
    """Whether the bytes from ``offset`` to the end are whole RIFF chunks (printable ids, lengths that
    fit), as after a ``data`` chunk; a lone pad byte at the end is allowed."""
    for _ in range(_MAX_CHUNKS):
        if offset + 8 > size:
            return size - offset <= 1
        f.seek(offset)
        head = f.read(8)
        length = int.from_bytes(head[4:8], "little")
        if not _printable(head[:4]) or offset + 8 + length > size:
            return False
        offset += 8 + length + (length & 1)
    return False


def check_wav_header(path: str | os.PathLike[str]) -> None:
    """Refuse a RIFF/WAVE file whose header does not describe the file, before a sample is decoded.

    Checked against the file's size: the ``fmt `` chunk (present before ``data``; sample rate in
    :data:`MIN_SAMPLE_RATE`..:data:`MAX_SAMPLE_RATE`; 1..:data:`MAX_CHANNELS` channels; for PCM, float
    and G.711 a block size of channels x bytes per sample) and the ``data`` chunk: whole frames, at
    least one, neither cut (declared longer than the file: truncated) nor followed by bytes that are
    not chunks (declared shorter than what the file holds: libsndfile would silently read the first
    few samples only). Streamed WAVs that declare an unknown length (0 or 0xFFFFFFFF) are measured by
    the file's size. Non-RIFF files are left to libsndfile (and :func:`check_audio`'s bounds).
    Raises :class:`BadFileError` naming the file and the field.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        fmt: tuple[int, int, int, int, int] | None = None
        offset, chunks = 12, 0
        while offset + 8 <= size:
            chunks += 1
            if chunks > _MAX_CHUNKS:
                raise BadFileError(f"audio {path}: more than {_MAX_CHUNKS} chunks before its 'data' chunk", path)
            f.seek(offset)
            chunk = f.read(8)
            name, length = chunk[:4], int.from_bytes(chunk[4:8], "little")
            if name == b"fmt ":
                body = f.read(min(length, 16))
                if length < 16 or len(body) < 16:
                    raise BadFileError(f"audio {path}: its 'fmt ' chunk is {length} bytes, shorter than 16", path)
                tag, channels = int.from_bytes(body[0:2], "little"), int.from_bytes(body[2:4], "little")
                rate, align = int.from_bytes(body[4:8], "little"), int.from_bytes(body[12:14], "little")
                fmt = (tag, channels, rate, align, int.from_bytes(body[14:16], "little"))
                _check_fmt(path, *fmt)
            if name == b"data":
                if fmt is None:
                    raise BadFileError(f"audio {path}: no 'fmt ' chunk before its 'data' chunk", path)
                held = size - offset - 8
                if length in (0, 0xFFFFFFFF):
                    length = held - (held % max(1, fmt[3])) if fmt[0] in _PCM_TAGS else held
                if held < length:
                    raise BadFileError(f"audio {path} is truncated: its header declares {length} bytes of "
                                       f"samples, the file holds {held}", path)
                if not _chunks_fill(f, offset + 8 + length + (length & 1), size):
                    raise BadFileError(f"audio {path}: its 'data' chunk declares {length} bytes of samples but "
                                       f"{held - length} more bytes follow it that are not chunks: a header that "
                                       "understates its data", path)
                tag, channels, _, align, _ = fmt
                if length == 0:
                    raise BadFileError(f"audio {path} has no samples (an empty 'data' chunk)", path)
                if tag in _PCM_TAGS and (length < align or length % align):
                    raise BadFileError(f"audio {path}: its 'data' chunk of {length} bytes is not a whole number "
                                       f"(at least one) of {channels}-channel frames of {align} bytes", path)
                return
            offset += 8 + length + (length & 1)  # chunks are padded to an even size
        raise BadFileError(f"audio {path} is truncated: no complete 'data' chunk", path)


def _check_fmt(path: str | os.PathLike[str], tag: int, channels: int, rate: int, align: int, bits: int) -> None:
    if not 1 <= channels <= MAX_CHANNELS:
        raise BadFileError(f"audio {path}: its header declares {channels} channels (vqkit reads 1..{MAX_CHANNELS})",
                           path)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise BadFileError(f"audio {path}: its header declares a sample rate of {rate} Hz (vqkit reads "
                           f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz)", path)
    if tag in _PCM_TAGS and not 1 <= bits <= 64:
        raise BadFileError(f"audio {path}: its header declares {bits} bits per sample (PCM holds 1..64)", path)
    if tag in _PCM_TAGS and align != channels * ((bits + 7) // 8):
        raise BadFileError(f"audio {path}: its header is inconsistent ({_PCM_TAGS[tag]}: block_align {align} for "
                           f"{channels} channels of {bits} bits, expected {channels * ((bits + 7) // 8)})", path)


check_wav_length = check_wav_header
"""vqkit 0.1's name of :func:`check_wav_header` (which then checked the data length only)."""


def check_audio_info(path: str | os.PathLike[str], rate: int, channels: int, frames: int) -> None:
    """Bounds on what any format's header declares (libsndfile's reading of it), checked before
    decoding: rate, channel count, and samples to decode (:data:`MAX_SAMPLES`). :class:`BadFileError`."""
    if not 1 <= channels <= MAX_CHANNELS:
        raise BadFileError(f"audio {path}: {channels} channels (vqkit reads 1..{MAX_CHANNELS})", path)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise BadFileError(f"audio {path}: a sample rate of {rate} Hz (vqkit reads {MIN_SAMPLE_RATE}.."
                           f"{MAX_SAMPLE_RATE} Hz)", path)
    if frames <= 0:
        raise BadFileError(f"audio {path} has no samples", path)
    if frames * channels > MAX_SAMPLES:
        raise BadFileError(f"audio {path}: {frames:,} frames of {channels} channels, more than the {MAX_SAMPLES:,} "
                           "samples vqkit decodes from one file", path)


def _info(path: str | os.PathLike[str]) -> tuple[int, int, int]:
    """(rate, channels, frames) from the header, every check of :func:`check_wav_header` and
    :func:`check_audio_info` passed."""
    try:
        check_wav_header(path)
        info = sf.info(os.fspath(path))
    except (MemoryError, BadFileError):  # the machine's state; our own refusal
        raise
    except Exception as err:  # whatever libsndfile raises on one file is that file's fault
        raise BadFileError(f"cannot read audio {path}: {err}", path) from err
    rate, channels, frames = int(info.samplerate), int(info.channels), int(info.frames)
    check_audio_info(path, rate, channels, frames)
    return rate, channels, frames


def _read(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """(float32 mono samples, not clipped; the file's rate), the header checked before decoding."""
    rate, _, _ = _info(path)
    try:
        data, _ = sf.read(os.fspath(path), dtype="float32", always_2d=True)
    except MemoryError:  # the machine's state, not the file's fault
        raise
    except Exception as err:  # whatever libsndfile raises on one file is that file's fault
        raise BadFileError(f"cannot read audio {path}: {err}", path) from err
    samples: np.ndarray = np.asarray(data, dtype=np.float32)  # (T, C)
    if samples.shape[0] == 0 or samples.shape[1] == 0:
        raise BadFileError(f"audio {path} has no samples", path)
    if not np.isfinite(samples).all():
        raise BadFileError(f"audio {path} contains NaN or infinite samples", path)
    return (samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]), rate


def read_audio(path: str | os.PathLike[str]) -> tuple[Tensor, int]:
    """One audio file as float32 mono ``(T,)`` in [-1, 1] **at the file's own rate**, and that rate (Hz).

    Channels are mixed down by their mean; float files may hold values past ±1, which are clipped.
    The header is checked before the samples are allocated (:func:`check_wav_header`,
    :func:`check_audio_info`). A :class:`BadFileError` (a ``ValueError``) naming the file is raised
    when its header lies, it cannot be decoded, holds no samples, or holds NaN/Inf.
    """
    mono, rate = _read(path)
    return torch.from_numpy(np.ascontiguousarray(np.clip(mono, -1.0, 1.0))), rate


def check_audio(path: str | os.PathLike[str]) -> None:
    """A cheap check of one audio file from its header alone (``soundfile.info``): it exists, is a
    format libsndfile reads, and holds samples. NaN/Inf samples are only found when it is decoded.
    Its header is checked as :func:`read_audio` does. Raises :class:`BadFileError`."""
    _info(path)


def load_audio(path: str | os.PathLike[str], sample_rate: int) -> Tensor:
    """One audio file as float32 mono ``(T,)`` in [-1, 1] at ``sample_rate`` Hz: :func:`read_audio`, resampled.

    Channels are mixed down by their mean; the rate is converted with ``soxr`` (quality ``"HQ"``)
    when it differs from the file's. Float files may hold values past ±1 and the resampler may
    overshoot slightly near full scale, so the result is clipped to [-1, 1]. A :class:`BadFileError`
    (a ``ValueError``) naming the file is raised when its header lies, it cannot be decoded, holds no
    samples, holds NaN/Inf, or would resample to more than :data:`MAX_SAMPLES` samples.
    """
    try:
        rate_out = -1 if isinstance(sample_rate, bool) else operator.index(sample_rate)  # numpy ints too
    except TypeError:
        rate_out = -1
    if rate_out < 1:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    sample_rate = rate_out
    mono, rate = _read(path)
    if rate != sample_rate:
        length = -(-mono.shape[0] * sample_rate // rate)
        if length > MAX_SAMPLES:
            raise BadFileError(f"audio {path}: {mono.shape[0]:,} samples at {rate} Hz resample to {length:,} at "
                               f"{sample_rate} Hz, more than the {MAX_SAMPLES:,} vqkit holds", path)
        mono = soxr.resample(np.ascontiguousarray(mono), rate, sample_rate, quality="HQ")
        if mono.shape[0] == 0:
            raise BadFileError(f"audio {path} has no samples left after resampling {rate} → {sample_rate} Hz", path)
    out = np.clip(np.asarray(mono, dtype=np.float32), -1.0, 1.0)
    return torch.from_numpy(np.ascontiguousarray(out))


class AudioFolder(_BadFileMixin, _EpochMixin, Dataset[Tensor]):
    """Every WAV/FLAC file under ``root`` (recursively, see :func:`find_audio`), at ``sample_rate``.

    Training items (``train=True``) are float32 ``(1, segment)`` crops: the start is drawn from
    ``np.random.default_rng([seed, epoch, index])``, new each epoch (:meth:`set_epoch`); a clip
    shorter than ``segment`` is returned whole, zero-padded at the end. Evaluation items are the
    whole utterance, ``(1, T)`` with ``T`` varying per file: batch them with :func:`collate_audio`.

    ``max_items`` keeps that many files evenly spread over the sorted list (so a subset of a
    speaker-per-folder corpus still covers every speaker). Decoded, resampled audio is cached in
    memory per process (each loader worker fills its own cache): a speech subset is small, and
    decoding plus resampling costs far more than the crop.

    ``bad_files="skip"`` (default): a file that cannot be decoded, is empty, or holds NaN/Inf is
    replaced by the next file that loads (the crop is keyed by the index asked for), with one
    :class:`~vqkit.data.files.BadFileWarning` per file; ``skipped`` counts them, and if every file
    is bad a :class:`BadFileError` is raised. An evaluation item replaced this way repeats another
    utterance. ``bad_files="fail"``: every header is checked here (:func:`check_audio`), and the
    first bad file, found then or when decoded, raises a :class:`BadFileError`.
    """

    def __init__(self, root: str | os.PathLike[str], sample_rate: int = 16000, segment: int = 16000,
                 train: bool = True, seed: int = 0, max_items: int | None = None, *,
                 bad_files: str = "skip") -> None:
        if sample_rate < 1:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if segment < 1:
            raise ValueError(f"segment must be positive, got {segment}")
        check_bad_files(bad_files)
        self.root = Path(root)
        self.sample_rate = sample_rate
        self.segment = segment
        self.train = train
        self._init_epoch(seed)
        self.files = tuple(spread(find_audio(self.root), max_items, "max_items"))
        self._cache: dict[int, Tensor] = {}
        self._init_bad_files(bad_files, check_audio)

    def __len__(self) -> int:
        return len(self.files)

    def audio(self, index: int) -> Tensor:
        """The whole waveform of file ``index``, float32 ``(T,)``; cached, so do not modify it in place.
        A bad file raises :class:`BadFileError` here whatever ``bad_files`` says."""
        i = _index(index, len(self))
        if i not in self._cache:
            self._cache[i] = load_audio(self.files[i], self.sample_rate)
        return self._cache[i]

    def __getitem__(self, index: int) -> Tensor:
        i = _index(index, len(self))
        wave = self._load(i, self.audio)
        if not self.train:
            return wave.clone().unsqueeze(0)
        length = wave.shape[0]
        if length < self.segment:
            return F.pad(wave, (0, self.segment - length)).unsqueeze(0)
        rng = np.random.default_rng([self.seed, self.epoch, i])
        start = int(rng.integers(0, length - self.segment + 1))
        return wave[start : start + self.segment].clone().unsqueeze(0)


def collate_audio(batch: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Pad items ``(C, T_i)`` (``C = 1`` for :class:`AudioFolder`) with zeros at the end to one batch
    ``(B, C, T_max)``; returns ``(audio, lengths)`` with ``lengths`` int64 ``(B,)`` holding each ``T_i``,
    so that metrics can ignore the padding. For whole-utterance evaluation:
    ``DataLoader(AudioFolder(..., train=False), batch_size=8, collate_fn=collate_audio)``.
    """
    if len(batch) == 0:
        raise ValueError("cannot collate an empty batch")
    first = batch[0]
    for k, item in enumerate(batch):
        if item.dim() != 2 or item.shape[0] != first.shape[0] or item.dtype != first.dtype:
            raise ValueError(f"batch items must all be (C, T) with C = {first.shape[0]} and dtype {first.dtype}; "
                             f"item {k} is {tuple(item.shape)} {item.dtype}")
    lengths = torch.tensor([item.shape[1] for item in batch], dtype=torch.int64)
    out = first.new_zeros((len(batch), first.shape[0], int(lengths.max())))
    for k, item in enumerate(batch):
        out[k, :, : item.shape[1]] = item
    return out, lengths


def write_wav(path: str | os.PathLike[str], audio: Tensor | np.ndarray, sample_rate: int) -> None:
    """Write ``audio`` — ``(T,)`` or channels-first ``(C, T)``, in [-1, 1] — as a 16-bit PCM WAV.

    Values are clipped to [-1, 1] and quantised here as ``round(x · 32768)`` (clamped to int16), so
    :func:`load_audio` at the same rate returns every sample within 1/32768 of the clipped input.
    The file is written atomically (temporary file in the same folder, fsync, ``os.replace``): a
    reader never sees half a file. NaN/Inf samples are a ``ValueError``, not silent zeros.
    """
    if sample_rate < 1:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    data = audio.detach().to("cpu", torch.float32).numpy() if isinstance(audio, Tensor) else np.asarray(audio)
    if data.ndim not in (1, 2) or data.size == 0:
        raise ValueError(f"audio must be a non-empty (T,) or (C, T) array, got shape {data.shape}")
    if not np.isfinite(data).all():
        raise ValueError(f"audio for {path} contains NaN or infinite samples")
    frames = data if data.ndim == 1 else data.T  # soundfile wants (T, C)
    pcm = np.clip(np.round(np.clip(frames.astype(np.float64), -1.0, 1.0) * 32768.0), -32768, 32767).astype(np.int16)
    buffer = io.BytesIO()
    sf.write(buffer, pcm, sample_rate, format="WAV", subtype="PCM_16")
    atomic_write(Path(path), buffer.getvalue())
