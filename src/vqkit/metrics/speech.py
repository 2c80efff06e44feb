"""Speech metrics, computed per utterance (callers average over utterances): SI-SDR, log-mel L1,
PESQ-WB, STOI/ESTOI and DNSMOS P.835; UTMOS is reported unavailable.

Waveforms are float tensors ``(T,)`` or ``(B, T)`` in [-1, 1]; ``estimate`` is the codec's output,
``reference`` the original. SI-SDR and mel distance are computed here with torch; PESQ, STOI and
DNSMOS come from the reference implementations other papers use (``pesq``, ``pystoi``, ``speechmos``'s
bundled ONNX models), so the numbers are comparable. Those packages are optional extras imported
inside the functions: ``import vqkit.metrics.speech`` works without them, and a missing one raises
an ImportError naming ``pip install 'vqkit[audio]'`` (DNSMOS instead returns its reason as a string,
which callers report as ``{"unavailable": reason}``; no other metric is ever substituted).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..dsp import log_mel

AUDIO_EXTRA = "pip install 'vqkit[audio]'"
PESQ_RATE = 16000  # PESQ wide-band (ITU-T P.862.2) is defined at 16 kHz
DNSMOS_RATE = 16000  # the DNSMOS models were trained on 16 kHz audio
UTMOS_UNAVAILABLE = ("UTMOS needs a pretrained checkpoint (the UTMOS22 strong learner) that is downloaded at run "
                     "time and cannot be fetched offline here; it is reported unavailable, never approximated")
# speechmos.dnsmos: 9.01 s windows hopped by 1 s, and the polynomials mapping raw P.835 outputs to MOS.
_DNSMOS_WINDOW_S = 9.01
_MEANS = ("si_sdr", "mel_distance", "pesq_wb", "stoi", "estoi", "dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak")
_DNSMOS_POLY = {"sig": (-0.08397278, 1.22083953, 0.0052439), "bak": (-0.13166888, 1.60915514, -0.39604546),
                "ovrl": (-0.06766283, 1.11546468, 0.04602535)}


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"vqkit.metrics.speech needs the optional package {module!r}: {AUDIO_EXTRA}") from err


def _batch(x: Tensor, name: str) -> Tensor:
    if x.ndim not in (1, 2):
        raise ValueError(f"{name}: expected a waveform (T,) or a batch (B, T), got shape {tuple(x.shape)}")
    return x.detach().reshape(-1, x.shape[-1])


def _pair(estimate: Tensor, reference: Tensor) -> tuple[Tensor, Tensor]:
    e, r = _batch(estimate, "estimate"), _batch(reference, "reference")
    if e.shape != r.shape:
        raise ValueError(f"estimate and reference must have one shape, got {tuple(e.shape)} and {tuple(r.shape)}")
    return e, r


def _numpy(x: Tensor) -> list[np.ndarray]:
    """(B, T) or (T,) tensor -> B (or 1) float64 numpy arrays (the external metrics work item by item)."""
    return list(_batch(x, "waveform").to("cpu", torch.float64).numpy())


def _resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    return x if rate == target else np.asarray(_require("soxr").resample(x, rate, target, "VHQ"), np.float64)


def si_sdr(estimate: Tensor, reference: Tensor) -> Tensor:
    """(B,) float64 scale-invariant SDR in dB (Le Roux et al. 2019) of each item, ``(T,)`` or ``(B, T)`` input.

    Both signals are made zero-mean; the reference is scaled by the least-squares gain
    ``<e, r> / <r, r>`` so the estimate's loudness does not count. No epsilon is added, so the value is
    exact: an estimate identical to (or a power-of-two multiple of) the reference gives ``+inf``, other
    scaled copies a very large finite value (~150 dB from float32 rounding), and a silent reference NaN.
    """
    e, r = _pair(estimate, reference)
    e, r = e.to("cpu", torch.float64), r.to("cpu", torch.float64)
    e, r = e - e.mean(dim=-1, keepdim=True), r - r.mean(dim=-1, keepdim=True)
    target = (e * r).sum(dim=-1, keepdim=True) / r.pow(2).sum(dim=-1, keepdim=True) * r
    return 10 * torch.log10(target.pow(2).sum(dim=-1) / (e - target).pow(2).sum(dim=-1))


def mel_settings(sample_rate: int) -> tuple[int, int, int]:
    """(n_fft, hop, n_mels) for :func:`mel_distance`: 1024/256/80 at 16–24 kHz (64–43 ms windows).

    Other rates keep about that window duration: n_fft and hop scale by the power of two nearest
    ``sample_rate / 20 kHz`` (512/128 at 8 kHz, 2048/512 at 32–48 kHz), with 128 mels above 24 kHz.
    """
    scale = 2.0 ** max(-2, min(2, round(math.log2(sample_rate / 20000))))
    return int(1024 * scale), int(256 * scale), 80 if sample_rate <= 24000 else 128


def mel_distance(estimate: Tensor, reference: Tensor, sample_rate: int) -> Tensor:
    """(B,) float64 mean L1 distance between natural-log mel spectrograms of each item.

    The spectrograms are :func:`vqkit.dsp.log_mel` (Slaney mel filterbank, Hann-windowed centred STFT,
    mel magnitudes clamped at 1e-5 before the log, so silence cannot dominate) with :func:`mel_settings`;
    the mean runs over mel bands and frames. Items must be longer than ``n_fft // 2`` samples.
    """
    e, r = _pair(estimate, reference)
    n_fft, hop, n_mels = mel_settings(sample_rate)
    if e.shape[-1] <= n_fft // 2:
        raise ValueError(f"mel_distance needs more than {n_fft // 2} samples at {sample_rate} Hz, got {e.shape[-1]}")
    diff = log_mel(e, sample_rate, n_fft, hop, n_mels) - log_mel(r, sample_rate, n_fft, hop, n_mels)
    return diff.abs().mean(dim=(-2, -1)).to("cpu", torch.float64)


def _pesq_items(estimates: list[np.ndarray], references: list[np.ndarray], rate: int) -> list[float]:
    """PESQ-WB scores, NaN where the ``pesq`` C code refuses an item; one warning counts those and says why."""
    pesq = _require("pesq")
    scores: list[float] = []
    failures: list[str] = []
    for i, (e, r) in enumerate(zip(estimates, references, strict=True)):
        e, r = _resample(e, rate, PESQ_RATE), _resample(r, rate, PESQ_RATE)
        try:
            if not (np.any(e) and np.any(r)):  # pesq divides by the peak: 0/0, then fails in its C code
                raise ValueError("silent input")
            scores.append(float(pesq.pesq(PESQ_RATE, r, e, "wb")))
        except (pesq.PesqError, ValueError) as err:  # too short, no utterance found, silent
            reason = err.args[0] if err.args else err  # the C errors carry bytes
            failures.append(f"item {i}: {reason.decode() if isinstance(reason, bytes) else reason}")
            scores.append(math.nan)
    if failures:
        shown = "; ".join(failures[:3]) + ("; ..." if len(failures) > 3 else "")
        warnings.warn(f"PESQ failed on {len(failures)} of {len(scores)} items, NaN for those ({shown})",
                      RuntimeWarning, stacklevel=3)
    return scores


def pesq_wb(estimate: Tensor, reference: Tensor, sample_rate: int) -> list[float]:
    """B PESQ wide-band scores (MOS-LQO, about 1.0–4.64) of ``(T,)`` or ``(B, T)`` input, by ``pesq``.

    Audio not at 16 kHz is resampled with soxr first. Items the PESQ code rejects (silent, shorter than
    0.25 s, no speech detected) score NaN, and one RuntimeWarning says how many and why.
    """
    e, r = _pair(estimate, reference)
    return _pesq_items(_numpy(e), _numpy(r), sample_rate)


def _stoi_items(estimates: list[np.ndarray], references: list[np.ndarray], rate: int, extended: bool) -> list[float]:
    pystoi = _require("pystoi")
    return [float(pystoi.stoi(r, e, rate, extended=extended)) for e, r in zip(estimates, references, strict=True)]


def stoi(estimate: Tensor, reference: Tensor, sample_rate: int, extended: bool = False) -> list[float]:
    """B STOI (Taal et al. 2011) or, with ``extended``, ESTOI (Jensen & Taal 2016) values, by ``pystoi``.

    ``(T,)`` or ``(B, T)`` input at any rate (pystoi resamples to 10 kHz). About 1 for identical signals;
    pystoi returns 1e-5, with its own warning, when fewer than 30 non-silent frames remain (~0.4 s).
    """
    e, r = _pair(estimate, reference)
    return _stoi_items(_numpy(e), _numpy(r), sample_rate, extended)


def _dnsmos_primary(session: Any, audio: np.ndarray) -> dict[str, float]:
    """speechmos's ``DNSMOS.__call__`` for the P.835 model only (no librosa): same windows, same polynomials."""
    fs, need = DNSMOS_RATE, int(_DNSMOS_WINDOW_S * DNSMOS_RATE)
    while len(audio) < need:  # speechmos tiles short clips up to one window
        audio = np.append(audio, audio)
    hops = int(np.floor(len(audio) / fs) - _DNSMOS_WINDOW_S) + 1
    segments = [audio[int(i * fs): int((i + _DNSMOS_WINDOW_S) * fs)] for i in range(hops)]
    batch = np.stack([s for s in segments if len(s) >= need]).astype(np.float32)
    raw = np.asarray(session.run(None, {"input_1": batch})[0], dtype=np.float64)  # (windows, 3): sig, bak, ovrl
    return {name: float(np.mean(np.polyval(_DNSMOS_POLY[name], raw[:, col])))
            for col, name in enumerate(("sig", "bak", "ovrl"))}


def _dnsmos_package(model: Any, audio: np.ndarray) -> dict[str, float]:
    scores = model(audio, DNSMOS_RATE, False)
    return {key: float(scores[f"{key}_mos"]) for key in ("ovrl", "sig", "bak", "p808")}


@lru_cache(maxsize=1)
def _dnsmos_scorer() -> Callable[[np.ndarray], dict[str, float]] | str:
    """A function scoring one 16 kHz clip, or why DNSMOS cannot run here.

    When ``speechmos.dnsmos`` imports (it needs librosa and requests, which speechmos does not declare)
    its own ``DNSMOS`` class is used, which adds the P.808 score; otherwise the same bundled P.835 model
    is run by :func:`_dnsmos_primary`, giving the same ovrl/sig/bak and no p808.
    """
    spec = importlib.util.find_spec("speechmos")
    if spec is None or not spec.submodule_search_locations:
        return f"DNSMOS needs the speechmos package (it bundles the ONNX models): {AUDIO_EXTRA}"
    if importlib.util.find_spec("onnxruntime") is None:
        return f"DNSMOS needs onnxruntime to run speechmos's ONNX models: {AUDIO_EXTRA}"
    models = Path(next(iter(spec.submodule_search_locations))) / "dnsmos_models"
    primary, p808 = models / "sig_bak_ovr.onnx", models / "model_v8.onnx"
    try:
        package: Any = importlib.import_module("speechmos.dnsmos")
    except Exception:  # librosa/requests missing, or librosa's own import failing (numba): P.835 only
        package = None
    try:
        if package is not None:
            return partial(_dnsmos_package, package.DNSMOS(str(primary), str(p808)))
        ort = importlib.import_module("onnxruntime")
        session = ort.InferenceSession(str(primary), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own types for missing or corrupt model files
        return f"DNSMOS could not load {primary}: {type(err).__name__}: {err}"
    return partial(_dnsmos_primary, session)


def _dnsmos_items(estimates: list[np.ndarray], rate: int) -> list[dict[str, float]] | str:
    scorer = _dnsmos_scorer()
    if isinstance(scorer, str):
        return scorer
    if any(e.size == 0 for e in estimates):
        raise ValueError("dnsmos: empty waveform")
    return [scorer(np.clip(_resample(e, rate, DNSMOS_RATE), -1.0, 1.0).astype(np.float32)) for e in estimates]


def dnsmos(estimate: Tensor, sample_rate: int) -> list[dict[str, float]] | str:
    """B dicts of non-intrusive DNSMOS P.835 scores (``ovrl``, ``sig``, ``bak``; ``p808`` when speechmos's
    librosa path works), each about 1–5, for ``(T,)`` or ``(B, T)`` input; or the reason it is unavailable.

    No reference is needed: DNSMOS judges the estimate alone. Audio is resampled to 16 kHz and clamped
    to [-1, 1]; clips shorter than 9.01 s are tiled, longer ones averaged over 9.01 s windows hopped by 1 s.
    """
    return _dnsmos_items(_numpy(_batch(estimate, "estimate")), sample_rate)


def _items(x: Tensor | Sequence[Tensor], lengths: Sequence[int] | Tensor | None, name: str) -> list[Tensor]:
    items = list(_batch(x, name)) if isinstance(x, Tensor) else [t.detach() for t in x]
    if any(t.ndim != 1 for t in items):
        raise ValueError(f"{name}: items must be waveforms (T,)")
    if lengths is None:
        return items
    sizes = [int(n) for n in lengths]
    if len(sizes) != len(items) or any(not 0 < n <= len(t) for n, t in zip(sizes, items, strict=True)):
        raise ValueError(f"{name}: lengths {sizes} do not fit items of lengths {[len(t) for t in items]}")
    return [t[:n] for t, n in zip(items, sizes, strict=True)]


class SpeechMetrics:
    """Every speech metric, per utterance, accumulated over a test set; :meth:`result` gives the means.

    ``update`` takes a padded batch ``(B, T)`` or a list of ``(T_i,)`` waveforms for estimate and
    reference, cropped to ``lengths`` when given so padding never enters a metric. Per-item values stay
    in :attr:`values` (metric name -> list of floats, NaN where an item failed). DNSMOS is the slow one
    (~0.6 s of CPU per 9 s window), then PESQ; ``use_pesq`` / ``use_dnsmos`` skip them.
    """

    def __init__(self, sample_rate: int = 16000, use_pesq: bool = True, use_dnsmos: bool = True) -> None:
        self.sample_rate, self.use_pesq, self.use_dnsmos = sample_rate, use_pesq, use_dnsmos
        resample = sample_rate != PESQ_RATE and (use_pesq or use_dnsmos)
        for module in ["pystoi"] + (["pesq"] if use_pesq else []) + (["soxr"] if resample else []):
            _require(module)  # fail at construction, not after an hour of decoding
        scorer = _dnsmos_scorer() if use_dnsmos else "not computed (use_dnsmos=False)"
        self.dnsmos_unavailable: str | None = scorer if isinstance(scorer, str) else None
        self.values: dict[str, list[float]] = defaultdict(list)
        self.utterances = 0  # items scored so far

    def update(self, estimate: Tensor | Sequence[Tensor], reference: Tensor | Sequence[Tensor],
               lengths: Sequence[int] | Tensor | None = None) -> None:
        """Score B utterances: ``(B, T)`` tensors or lists of ``(T_i,)``, cropped to ``lengths`` (B,) if given."""
        est, ref = _items(estimate, lengths, "estimate"), _items(reference, lengths, "reference")
        if len(est) != len(ref) or any(e.shape != r.shape for e, r in zip(est, ref, strict=False)):
            raise ValueError(f"estimate and reference items differ: {[len(e) for e in est]} vs {[len(r) for r in ref]}")
        v: dict[str, list[float]] = defaultdict(list)  # merged only when every metric succeeded
        sr = self.sample_rate
        for e, r in zip(est, ref, strict=True):
            v["si_sdr"].append(float(si_sdr(e, r)[0]))
            v["mel_distance"].append(float(mel_distance(e, r, sr)[0]))
        est_np, ref_np = [_numpy(e)[0] for e in est], [_numpy(r)[0] for r in ref]
        v["stoi"] += _stoi_items(est_np, ref_np, sr, extended=False)
        v["estoi"] += _stoi_items(est_np, ref_np, sr, extended=True)
        if self.use_pesq:
            v["pesq_wb"] += _pesq_items(est_np, ref_np, sr)
        scored = _dnsmos_items(est_np, sr) if self.dnsmos_unavailable is None else []
        if isinstance(scored, str):  # only if the scorer cache was cleared since __init__
            self.dnsmos_unavailable = scored
            scored = []
        for item in scored:
            for key, value in item.items():
                v[f"dnsmos_{key}"].append(value)
        for key, values in v.items():
            self.values[key] += values
        self.utterances += len(est)

    def result(self) -> dict[str, Any]:
        """Means over utterances (NaN items left out; ``counts`` says how many items each mean covers).

        Keys: ``utterances``, ``si_sdr`` (dB; ``inf`` if any item is bit-exact), ``mel_distance``,
        ``pesq_wb``, ``stoi``, ``estoi``, ``dnsmos_ovrl/sig/bak`` (and ``dnsmos_p808`` when available),
        ``counts``, ``utmos``. A metric not computed is ``{"unavailable": reason}``.
        """
        out: dict[str, Any] = {"utterances": self.utterances}
        counts: dict[str, int] = {}
        for name in [*_MEANS, *(k for k in self.values if k not in _MEANS)]:
            if name == "pesq_wb" and not self.use_pesq:
                out[name] = {"unavailable": "not computed (use_pesq=False)"}
            elif name.startswith("dnsmos_") and self.dnsmos_unavailable is not None:
                out[name] = {"unavailable": self.dnsmos_unavailable}
            else:
                kept = [x for x in self.values.get(name, []) if not math.isnan(x)]
                out[name], counts[name] = (float(np.mean(kept)) if kept else math.nan), len(kept)
        return out | {"counts": counts, "utmos": {"unavailable": UTMOS_UNAVAILABLE}}
