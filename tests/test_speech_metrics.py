"""Speech metrics: SI-SDR and mel distance against their definitions, PESQ/STOI/ESTOI/DNSMOS against
their expected behaviour (identical -> top score, falling with noise), and the test-set accumulator.

Synthetic speech-like signals (harmonics of a gliding f0 under moving formants, syllable envelopes)
keep the file self-contained; a real LibriSpeech test-other utterance is used where it is on disk.
"""

from __future__ import annotations

import math
import subprocess
import sys
import types
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from vqkit.metrics import speech as S

SR = 16000
LIBRISPEECH = Path(__file__).resolve().parents[2] / "shared/data/audio/librispeech-test-other"
LJSPEECH = Path(__file__).resolve().parents[2] / "shared/data/audio/ljspeech/wavs"  # 22.05 kHz


def speechlike(seconds: float = 2.0, sr: int = SR, seed: int = 0) -> torch.Tensor:
    """(T,) float32 harmonic 'vowels' at 4 syllables/s with a pause every fifth, peak 0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t) + 10 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    formants = np.array([[500, 1500, 2500], [700, 1200, 2600], [300, 2200, 3000], [600, 1000, 2400]])
    syllable = (t * 4).astype(int)
    x = np.zeros_like(t)
    for k in range(1, 40):
        fk, f = k * f0, formants[syllable % 4]
        amp = sum(np.exp(-(((fk - f[:, j]) / (80 + 40 * j)) ** 2)) for j in range(3)) / math.sqrt(k)
        x += amp * np.sin(k * phase) * (fk < sr / 2)
    env = np.sqrt(np.clip(np.sin(np.pi * (t * 4 % 1)), 0, None)) * (syllable % 5 != 4)
    x = x * env + 0.02 * rng.standard_normal(len(t)) * env
    return torch.from_numpy(0.5 * x / np.abs(x).max()).float()


def add_noise(x: torch.Tensor, snr_db: float, seed: int = 1) -> torch.Tensor:
    """x plus white noise scaled to exactly ``snr_db`` (energy ratio over the whole signal)."""
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x64 = x.double()
    noise *= (x64.pow(2).sum() / noise.pow(2).sum() / 10 ** (snr_db / 10)).sqrt()
    return (x64 + noise).float()


@pytest.fixture(scope="module")
def real() -> torch.Tensor:
    """A 2–4 s LibriSpeech test-other utterance, (T,) float32 at 16 kHz."""
    sf = pytest.importorskip("soundfile")
    files = sorted(LIBRISPEECH.glob("*/*.flac"))
    if not files:
        pytest.skip(f"LibriSpeech test-other not found at {LIBRISPEECH}")
    for f in files:
        if 2.0 <= sf.info(str(f)).duration <= 4.0:
            audio, rate = sf.read(str(f), dtype="float32")
            assert rate == SR
            return torch.from_numpy(audio)
    pytest.skip("no 2–4 s utterance in LibriSpeech test-other")


@pytest.fixture(params=["synthetic", "librispeech"])
def speech(request: pytest.FixtureRequest) -> torch.Tensor:
    return speechlike(2.0) if request.param == "synthetic" else request.getfixturevalue("real")


@pytest.fixture(params=["synthetic-24k", "ljspeech-22k"])
def other_rate(request: pytest.FixtureRequest) -> tuple[torch.Tensor, int]:
    """(waveform, rate) of speech not at 16 kHz: synthetic at 24 kHz, or a 2–5 s LJSpeech clip at 22.05 kHz."""
    if request.param == "synthetic-24k":
        return speechlike(2.0, sr=24000), 24000
    sf = pytest.importorskip("soundfile")
    for f in sorted(LJSPEECH.glob("*.wav")):
        if 2.0 <= sf.info(str(f)).duration <= 5.0:
            audio, rate = sf.read(str(f), dtype="float32")
            return torch.from_numpy(audio), rate
    pytest.skip(f"no 2–5 s LJSpeech clip at {LJSPEECH}")


def lowpass(x: torch.Tensor, sr: int, hz: float = 3000.0) -> torch.Tensor:
    """x with every frequency above ``hz`` removed (FFT mask): a degradation PESQ and STOI rate asymmetrically."""
    spectrum = torch.fft.rfft(x.double())
    spectrum[torch.fft.rfftfreq(len(x), 1 / sr) > hz] = 0
    return torch.fft.irfft(spectrum, n=len(x)).float()


def _np(x: torch.Tensor) -> np.ndarray:
    return x.double().numpy()


# --- SI-SDR and mel distance ------------------------------------------------------------------------


def test_si_sdr_scale_invariant_and_huge_for_copies() -> None:
    x = speechlike(1.0)
    noisy = add_noise(x, 12.0)
    base = S.si_sdr(noisy, x)
    assert base.shape == (1,) and base.dtype == torch.float64
    for gain in (0.3, 2.0, 7.5):
        assert S.si_sdr(gain * noisy, x).item() == pytest.approx(base.item(), abs=1e-4)
    assert S.si_sdr(x, x).item() == math.inf  # exact: no epsilon
    assert S.si_sdr(0.7 * x, x).item() > 100  # float32 rounding only
    assert S.si_sdr(x + 0.3, x).item() > 100  # both are made zero-mean


@pytest.mark.parametrize("snr", [-5.0, 0.0, 10.0, 25.0])
def test_si_sdr_matches_snr_of_white_noise(snr: float) -> None:
    x = speechlike(2.0)
    assert S.si_sdr(add_noise(x, snr), x).item() == pytest.approx(snr, abs=0.5)


def test_si_sdr_batch_shapes_and_silent_reference() -> None:
    x = torch.stack([speechlike(1.0, seed=0), speechlike(1.0, seed=1)])
    out = S.si_sdr(torch.stack([add_noise(x[0], 5.0), add_noise(x[1], 15.0)]), x)
    assert out.shape == (2,) and out[0] == pytest.approx(5.0, abs=0.5) and out[1] == pytest.approx(15.0, abs=0.5)
    assert math.isnan(S.si_sdr(x[0], torch.zeros_like(x[0])).item())
    with pytest.raises(ValueError, match="one shape"):
        S.si_sdr(x, x[:, :-1])
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        S.si_sdr(x[None], x[None])


def test_mel_distance_zero_for_identical_and_grows_with_noise() -> None:
    x = speechlike(1.5)
    batch = torch.stack([x, add_noise(x, 30.0), add_noise(x, 15.0), add_noise(x, 0.0)])
    d = S.mel_distance(batch, x.expand(4, -1), SR)
    assert d.shape == (4,) and d.dtype == torch.float64
    assert d[0].item() == 0.0
    assert bool((d[1:] > d[:-1]).all()), d
    assert S.mel_distance(x, x, 24000).item() == 0.0


def test_mel_settings() -> None:
    assert S.mel_settings(16000) == S.mel_settings(22050) == S.mel_settings(24000) == (1024, 256, 80)
    assert S.mel_settings(8000) == (512, 128, 80)
    assert S.mel_settings(44100) == S.mel_settings(48000) == (2048, 512, 128)
    with pytest.raises(ValueError, match="more than 512"):
        S.mel_distance(torch.zeros(400), torch.zeros(400), SR)


def test_log_mel_floor_and_base_by_hand() -> None:
    """Silence gives ln(1e-5) in every mel band and frame (natural log, floor 1e-5)."""
    from vqkit.dsp import log_mel

    silent = log_mel(torch.zeros(4000), SR)
    assert silent.shape == (80, 4000 // 256 + 1)
    assert torch.allclose(silent, torch.full_like(silent, math.log(1e-5)), rtol=0, atol=1e-6)


def test_mel_distance_is_l1_of_natural_log_mels_by_hand() -> None:
    """Quiet white noise (every mel magnitude between 1e-4 and 1e-2, 37% of them below 1e-3) against twice
    itself: each log-mel differs by exactly ln 2, so the mean L1 distance is ln 2 = 0.6931 (log10 would
    give 0.301, a squared distance 0.480, a floor of 1e-3 less). Then against a noisy copy, whose
    differences vary, the mean of |difference| over bands and frames (not the root mean square)."""
    from vqkit.dsp import log_mel

    x = torch.randn(SR, generator=torch.Generator().manual_seed(0)) * 1e-3
    mags = log_mel(x, SR).exp()
    assert mags.min() > 1e-4 and (mags < 1e-3).float().mean() > 0.3
    assert S.mel_distance(2 * x, x, SR).item() == pytest.approx(math.log(2), abs=1e-6)
    y = add_noise(x, 10.0)
    diff = log_mel(y, SR).double() - log_mel(x, SR).double()
    l1, rms = diff.abs().mean().item(), diff.pow(2).mean().sqrt().item()
    assert rms > 1.05 * l1
    assert S.mel_distance(y, x, SR).item() == pytest.approx(l1, rel=1e-6)


# --- PESQ, STOI, ESTOI ------------------------------------------------------------------------------


def test_pesq_identical_high_and_drops_with_noise(speech: torch.Tensor) -> None:
    pytest.importorskip("pesq")
    scores = S.pesq_wb(torch.stack([speech, add_noise(speech, 30.0), add_noise(speech, 10.0)]),
                       speech.expand(3, -1), SR)
    assert len(scores) == 3 and all(isinstance(s, float) for s in scores)
    assert scores[0] > 4.0 and scores[0] > scores[1] > scores[2], scores


def test_pesq_and_stoi_argument_order(speech: torch.Tensor) -> None:
    """The reference is the clean signal, the estimate the degraded one: the packages called directly with
    (reference, degraded) give the same numbers, and the swapped order would not (PESQ 2.6 vs 1.2 for a
    3 kHz low-pass of a LibriSpeech utterance)."""
    pesq = pytest.importorskip("pesq")
    pystoi = pytest.importorskip("pystoi")
    degraded = torch.stack([lowpass(speech, SR), add_noise(speech, 5.0)])
    ref = speech.expand(2, -1)
    scores = S.pesq_wb(degraded, ref, SR)
    right = [pesq.pesq(SR, _np(speech), _np(d), "wb") for d in degraded]
    swapped = [pesq.pesq(SR, _np(d), _np(speech), "wb") for d in degraded]
    assert scores == pytest.approx(right, abs=1e-9)
    assert abs(right[0] - swapped[0]) > 0.5, (right, swapped)
    for extended in (False, True):
        values = S.stoi(degraded, ref, SR, extended=extended)
        right = [pystoi.stoi(_np(speech), _np(d), SR, extended=extended) for d in degraded]
        swapped = [pystoi.stoi(_np(d), _np(speech), SR, extended=extended) for d in degraded]
        assert values == pytest.approx(right, abs=1e-9)  # equal up to numpy's summation order
        assert max(abs(a - b) for a, b in zip(right, swapped, strict=True)) > 1e-3, (right, swapped)


def test_other_rates_end_to_end(other_rate: tuple[torch.Tensor, int]) -> None:
    """Speech at 22.05 or 24 kHz, degraded: PESQ scores it after soxr resampling to 16 kHz, STOI at its own
    rate, through pesq_wb/stoi and through SpeechMetrics; PESQ without resampling or STOI told 16 kHz
    would give other numbers."""
    pesq = pytest.importorskip("pesq")
    pystoi = pytest.importorskip("pystoi")
    soxr = pytest.importorskip("soxr")
    x, rate = other_rate
    y = lowpass(x, rate)
    r16, d16 = (soxr.resample(_np(v), rate, SR, "VHQ") for v in (x, y))
    expect = pesq.pesq(SR, r16, d16, "wb")
    assert S.pesq_wb(y, x, rate) == pytest.approx([expect], abs=1e-9)
    assert abs(expect - pesq.pesq(SR, _np(x), _np(y), "wb")) > 0.05  # what skipping the resampling gives
    stoi = {e: pystoi.stoi(_np(x), _np(y), rate, extended=e) for e in (False, True)}
    assert S.stoi(y, x, rate) == pytest.approx([stoi[False]], abs=1e-9)
    assert S.stoi(y, x, rate, extended=True) == pytest.approx([stoi[True]], abs=1e-9)
    assert abs(stoi[True] - pystoi.stoi(_np(x), _np(y), SR, extended=True)) > 0.01  # STOI told 16 kHz
    metrics = S.SpeechMetrics(rate, use_dnsmos=False)
    metrics.update([y], [x])
    assert metrics.values["pesq_wb"] == pytest.approx([expect], abs=1e-9)
    assert metrics.values["stoi"] == pytest.approx([stoi[False]], abs=1e-9)
    assert metrics.values["estoi"] == pytest.approx([stoi[True]], abs=1e-9)
    mel = S.mel_distance(y, x, rate).item()  # the rate's own mel settings
    assert metrics.values["mel_distance"] == [mel] and mel != S.mel_distance(y, x, SR).item()
    assert S.pesq_wb(x, x, rate)[0] > 4.0


def test_pesq_failures_are_nan_with_one_counted_warning() -> None:
    pytest.importorskip("pesq")
    x = speechlike(1.0)
    batch = torch.stack([torch.zeros_like(x), x])
    with pytest.warns(RuntimeWarning, match=r"PESQ failed on 1 of 2 items.*silent input"):
        scores = S.pesq_wb(batch, batch, SR)
    assert math.isnan(scores[0]) and scores[1] > 4.0
    with pytest.warns(RuntimeWarning, match="1/4 of a second"):
        assert math.isnan(S.pesq_wb(x[:2000], x[:2000], SR)[0])


@pytest.mark.parametrize("extended", [False, True], ids=["stoi", "estoi"])
def test_stoi_identical_one_and_drops_with_noise(speech: torch.Tensor, extended: bool) -> None:
    pytest.importorskip("pystoi")
    batch = torch.stack([speech, add_noise(speech, 20.0), add_noise(speech, 5.0), add_noise(speech, -5.0)])
    values = S.stoi(batch, speech.expand(4, -1), SR, extended=extended)
    assert values[0] == pytest.approx(1.0, abs=1e-6)
    assert values[0] > values[1] > values[2] > values[3], values


# --- DNSMOS -----------------------------------------------------------------------------------------


def test_dnsmos_real_utterance(real: torch.Tensor) -> None:
    scores = S.dnsmos(torch.stack([real, add_noise(real, 0.0)]), SR)
    if isinstance(scores, str):  # speechmos/onnxruntime missing or its model failed to load
        assert "DNSMOS" in scores
        pytest.skip(f"DNSMOS unavailable: {scores}")
    assert len(scores) == 2
    for item in scores:
        assert {"ovrl", "sig", "bak"} <= set(item) <= {"ovrl", "sig", "bak", "p808"}
        assert all(1.0 <= v <= 5.0 for v in item.values()), item
    clean, noisy = scores
    assert clean["bak"] > noisy["bak"] + 1.0 and clean["ovrl"] > noisy["ovrl"], scores


def test_dnsmos_resamples_other_rates() -> None:
    """24 kHz audio is scored as its 16 kHz resampling (soxr), not as if it were 16 kHz already."""
    soxr = pytest.importorskip("soxr")
    scorer = S._dnsmos_scorer()
    if isinstance(scorer, str):
        pytest.skip(f"DNSMOS unavailable: {scorer}")
    x = add_noise(speechlike(2.0, sr=24000), 10.0)
    got = S.dnsmos(x, 24000)
    assert not isinstance(got, str)
    expect = scorer(np.clip(soxr.resample(_np(x), 24000, SR, "VHQ"), -1, 1).astype(np.float32))
    assert got[0] == pytest.approx(expect, abs=1e-6)
    as_if_16k = scorer(_np(x).astype(np.float32))
    assert max(abs(as_if_16k[k] - expect[k]) for k in ("ovrl", "sig", "bak")) > 0.05


@pytest.fixture
def fresh_scorer() -> Iterator[None]:
    """Clears the cached DNSMOS scorer before and after, and forgets any speechmos.dnsmos imported meanwhile."""
    S._dnsmos_scorer.cache_clear()
    yield
    sys.modules.pop("speechmos.dnsmos", None)
    if "speechmos" in sys.modules and hasattr(sys.modules["speechmos"], "dnsmos"):
        delattr(sys.modules["speechmos"], "dnsmos")
    S._dnsmos_scorer.cache_clear()


def test_dnsmos_unavailable_is_a_reason(monkeypatch: pytest.MonkeyPatch, fresh_scorer: None) -> None:
    monkeypatch.setitem(sys.modules, "speechmos", None)  # makes find_spec/import fail as if not installed
    reason = S.dnsmos(speechlike(1.0), SR)
    assert isinstance(reason, str) and "speechmos" in reason and "vqkit[audio]" in reason
    metrics = S.SpeechMetrics(use_pesq=False)
    metrics.update(speechlike(1.0)[None], speechlike(1.0)[None])
    assert metrics.result()["dnsmos_ovrl"] == {"unavailable": reason}


def test_dnsmos_matches_speechmos_own_code(monkeypatch: pytest.MonkeyPatch, fresh_scorer: None) -> None:
    """Our librosa-free P.835 path equals speechmos's DNSMOS class (run here with a stub librosa for P.808)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("speechmos")
    audio = speechlike(11.0).numpy()  # 3 windows
    ours = S._dnsmos_scorer()
    if isinstance(ours, str):
        pytest.skip(ours)
    mine = ours(audio)
    S._dnsmos_scorer.cache_clear()
    librosa = types.ModuleType("librosa")
    librosa.feature = types.SimpleNamespace(melspectrogram=lambda **kw: np.ones((120, 900)))  # type: ignore[attr-defined]
    librosa.power_to_db = lambda spec, ref: spec  # type: ignore[attr-defined]
    requests = types.ModuleType("requests")
    requests.session = None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "librosa", librosa)
    monkeypatch.setitem(sys.modules, "requests", requests)
    theirs = S._dnsmos_scorer()
    assert not isinstance(theirs, str)
    package = theirs(audio)
    assert set(package) == {"ovrl", "sig", "bak", "p808"}
    for key in ("ovrl", "sig", "bak"):
        assert mine[key] == pytest.approx(package[key], abs=1e-4)


# --- SpeechMetrics ----------------------------------------------------------------------------------


def _pairs(n: int, seconds: float = 1.0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    refs = [speechlike(seconds + 0.25 * i, seed=i) for i in range(n)]
    return [add_noise(r, 5.0 + 5 * i, seed=i) for i, r in enumerate(refs)], refs


def test_speech_metrics_two_batches_equal_one() -> None:
    est, ref = _pairs(4)
    whole = S.SpeechMetrics(SR, use_dnsmos=False)
    whole.update(est, ref)
    split = S.SpeechMetrics(SR, use_dnsmos=False)
    split.update(est[:1], ref[:1])
    split.update(est[1:], ref[1:])
    a, b = whole.result(), split.result()
    assert a["utterances"] == b["utterances"] == 4
    assert a["counts"] == b["counts"] == {k: 4 for k in ("si_sdr", "mel_distance", "pesq_wb", "stoi", "estoi")}
    for key in ("si_sdr", "mel_distance", "pesq_wb", "stoi", "estoi"):
        assert a[key] == pytest.approx(b[key], rel=1e-12)
        assert a[key] == pytest.approx(float(np.mean(whole.values[key])))
    assert a["si_sdr"] == pytest.approx(np.mean([5.0, 10.0, 15.0, 20.0]), abs=0.5)
    assert a["dnsmos_ovrl"] == {"unavailable": "not computed (use_dnsmos=False)"}
    assert a["utmos"] == {"unavailable": S.UTMOS_UNAVAILABLE} and "offline" in S.UTMOS_UNAVAILABLE


def test_speech_metrics_lengths_crop_padding() -> None:
    est, ref = _pairs(3)
    longest = max(len(r) for r in ref)

    def pad(items: list[torch.Tensor], value: float) -> torch.Tensor:
        return torch.stack([torch.nn.functional.pad(t, (0, longest - len(t)), value=value) for t in items])

    plain = S.SpeechMetrics(SR, use_dnsmos=False)
    plain.update(est, ref)
    padded = S.SpeechMetrics(SR, use_dnsmos=False)
    lengths = torch.tensor([len(r) for r in ref])
    padded.update(pad(est, 0.5), pad(ref, -0.5), lengths=lengths)  # padding that would change every metric
    assert plain.values.keys() == padded.values.keys()
    for key, values in plain.values.items():  # equal up to summation order (numpy SIMD alignment)
        assert padded.values[key] == pytest.approx(values, rel=1e-12, abs=1e-12), key
    with pytest.raises(ValueError, match="lengths"):
        padded.update(pad(est, 0.0), pad(ref, 0.0), lengths=[longest + 1, 1, 1])
    with pytest.raises(ValueError, match="more than 512"):  # second item too short for the mel STFT
        padded.update(pad(est, 0.0), pad(ref, 0.0), lengths=[longest, 300, longest])
    assert padded.utterances == 3 and all(len(v) == 3 for v in padded.values.values())  # nothing half-added


def test_speech_metrics_with_dnsmos_and_failures(real: torch.Tensor) -> None:
    metrics = S.SpeechMetrics(SR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # pesq: silent item; pystoi: too few frames
        metrics.update([real, torch.zeros(SR)], [real, torch.zeros(SR)])
    out = metrics.result()
    assert out["utterances"] == 2 and out["counts"]["pesq_wb"] == 1 and out["pesq_wb"] > 4.0
    if metrics.dnsmos_unavailable is None:
        assert out["counts"]["dnsmos_ovrl"] == 2 and 1.0 <= out["dnsmos_ovrl"] <= 5.0
    else:
        assert out["dnsmos_ovrl"] == {"unavailable": metrics.dnsmos_unavailable}


def test_missing_extra_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pesq", None)  # import pesq now raises ImportError
    x = speechlike(0.5)
    with pytest.raises(ImportError, match=r"'pesq': pip install 'vqkit\[audio\]'"):
        S.pesq_wb(x, x, SR)
    with pytest.raises(ImportError, match="'pesq'"):
        S.SpeechMetrics(SR, use_dnsmos=False)  # fails at construction, not mid-evaluation
    S.SpeechMetrics(SR, use_pesq=False, use_dnsmos=False)
    monkeypatch.setitem(sys.modules, "pystoi", None)
    with pytest.raises(ImportError, match="'pystoi'"):
        S.stoi(x, x, SR)


def test_import_needs_no_extras() -> None:
    blocked = ["pesq", "pystoi", "speechmos", "onnxruntime", "soxr", "soundfile"]
    code = (f"import sys; sys.modules.update(dict.fromkeys({blocked!r}))\n"
            "import torch, vqkit.metrics.speech as S\n"
            "x = torch.randn(8000)\n"
            "print(S.si_sdr(x, x).item(), S.mel_distance(x, x, 16000).item(), S.dnsmos(x, 16000))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.startswith("inf 0.0 DNSMOS needs the speechmos package") and "vqkit[audio]" in out
