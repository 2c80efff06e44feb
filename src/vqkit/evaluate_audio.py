"""Evaluate a speech tokenizer on whole utterances: quality, codebook use and rate.

Each utterance is zero-padded to a multiple of the hop, tokenized and decoded whole, and cropped
back, so no metric sees padding. Quality: mel distance, SI-SDR, STOI / ESTOI, and with ``full``
PESQ-WB and DNSMOS (UTMOS is reported unavailable: its checkpoint cannot be fetched here).
Codebook usage is over every token of the set, with its ceiling min(1, tokens / K). Rates: nominal
kbps = tokens/s × Σ log2 K, and with a codec the real ``.vqt`` file kbps per prior.

``vqkit eval`` (:func:`evaluate_audio_run`) also stores every utterance's scores, with the utterance's
file name, in ``metrics.json`` (``per_utterance``), so that a report can measure noise and compare
configurations utterance by utterance; training validation's metrics stay flat scalars.
"""

from __future__ import annotations

import math
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from .metrics import CodeUsage
from .models import Tokenizer
from .models.speech import sample_rate_of as speech_rate
from .plotting import pyplot, save_figure
from .storage import atomic_write
from .validation import resolve_device


@dataclass
class AudioEvaluation:
    metrics: dict[str, Any]
    usage: CodeUsage
    samples: list[tuple[Tensor, Tensor]]
    """(original (T,), reconstruction (T,)) of the first few utterances."""
    per_utterance: dict[str, list[float]] = field(default_factory=dict)
    """Each metric's score of every utterance, in dataset order (NaN where an item failed): PESQ-WB,
    STOI, ESTOI, SI-SDR, mel distance and, where they ran, DNSMOS. Not in ``metrics``: those stay flat."""


@torch.no_grad()
def reconstruct(model: Tokenizer, audio: Tensor, amp_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """(1, T) or (T,) -> (reconstruction (T,) in [-1, 1], indices (t[, S])): padded to the hop, cropped back."""
    x = audio.reshape(1, 1, -1)
    length = x.shape[-1]
    device = next(model.parameters()).device
    x = F.pad(x, (0, -length % model.downsample_factor)).to(device)
    with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext():
        recon, out = model(x)
    return recon.float().reshape(-1)[:length].clamp(-1, 1).cpu(), out.indices[0]


def evaluate_audio(model: Tokenizer, dataset: Dataset[Tensor], device: torch.device | str, *, full: bool = True,
                   amp_dtype: torch.dtype | None = None, keep_samples: int = 0, codec: Any = None) -> AudioEvaluation:
    """Evaluate ``model`` (eval mode for the duration) on every utterance of ``dataset`` ((1, T) items).

    ``full=False`` skips PESQ and DNSMOS (the slow ones; training validation). ``codec``: an
    :class:`~vqkit.compress_audio.AudioCodec` of this model, to add ``file_kbps`` per prior.
    """
    from .metrics.speech import SpeechMetrics

    was_training = model.training
    model.eval().to(device)
    rate = speech_rate(model.config.arch_args)
    scores = SpeechMetrics(rate, use_pesq=full, use_dnsmos=full)
    usage = CodeUsage(model.quantizer.codebook_sizes)
    samples: list[tuple[Tensor, Tensor]] = []
    seconds, file_bits = 0.0, dict[str, float]()
    try:
        for i in range(len(dataset)):  # type: ignore[arg-type]
            audio = dataset[i].reshape(-1).float()
            recon, indices = reconstruct(model, audio, amp_dtype)
            scores.update(recon[None], audio[None])
            usage.update(indices)
            seconds += len(audio) / rate
            if codec is not None:
                for prior, bits in codec.file_bits(indices, len(audio)).items():
                    file_bits[prior] = file_bits.get(prior, 0.0) + bits
            if len(samples) < keep_samples:
                samples.append((audio, recon))
    finally:
        model.train(was_training)
    if not seconds:
        raise ValueError("evaluate_audio: the dataset has no utterances")
    metrics: dict[str, Any] = scores.result()
    codes = usage.result()
    metrics.update({k: codes[k] for k in ("usage", "perplexity", "usage_per_stage", "perplexity_per_stage",
                                          "tokens", "usage_ceiling")})
    tokens_per_second = rate / model.downsample_factor
    metrics.update(seconds=seconds, sample_rate=rate, tokens_per_second=tokens_per_second,
                   bits_per_token=model.bits_per_token, kbps=tokens_per_second * model.bits_per_token / 1000)
    if codec is not None:
        metrics["file_kbps"] = {prior: bits / seconds / 1000 for prior, bits in file_bits.items()}
    per_utterance = {name: list(values) for name, values in scores.values.items()}
    return AudioEvaluation(metrics, usage, samples, per_utterance)


def save_spectrograms(samples: list[tuple[Tensor, Tensor]], sample_rate: int, path: str | os.PathLike[str]) -> None:
    """PNG: log-mel of each original (left) beside its reconstruction (right), one row per utterance."""
    from .dsp import log_mel
    from .metrics.speech import mel_settings

    plt = pyplot()
    rows = max(1, len(samples))
    fig, axes = plt.subplots(rows, 2, figsize=(11, 2.4 * rows), squeeze=False)
    n_fft, hop, n_mels = mel_settings(sample_rate)  # the settings of the reported mel distance
    for r, (original, recon) in enumerate(samples):
        mels = [log_mel(x, sample_rate, n_fft=n_fft, hop=hop, n_mels=n_mels) for x in (original, recon)]
        low, high = float(mels[0].min()), float(mels[0].max())
        for c, (mel, title) in enumerate(zip(mels, ("original", "reconstruction"), strict=True)):
            ax = axes[r][c]
            ax.imshow(mel.numpy(), origin="lower", aspect="auto", vmin=low, vmax=high, cmap="magma",
                      extent=(0, len(original) / sample_rate, 0, 80))
            ax.set_title(f"utterance {r + 1}: {title}", fontsize=9)
            ax.set_xlabel("time (s)")
            ax.set_ylabel("mel bin")
    fig.tight_layout()
    save_figure(fig, path)


def format_audio_metrics(metrics: dict[str, Any]) -> str:
    """The headline numbers of a speech evaluation, two columns."""
    from .evaluate import format_metrics

    return format_metrics(metrics, ("utterances", "seconds", "pesq_wb", "stoi", "estoi", "mel_distance", "si_sdr",
                                    "dnsmos_ovrl", "utmos", "usage", "usage_ceiling", "perplexity", "bits_per_token",
                                    "kbps", "file_kbps"))


def evaluate_audio_run(run_dir: str | os.PathLike[str], data: str, out: str | os.PathLike[str], *,
                       max_items: int = 0, device: str = "auto", samples: int = 3) -> dict[str, Any]:
    """Evaluate a speech run's final model on every utterance under ``data``; writes ``metrics.json``,
    ``samples/`` (original and decoded wavs) and ``spectrograms.png`` into ``out``; returns the metrics.

    Besides :func:`evaluate_audio`'s means, the metrics hold ``per_utterance``: ``{"ids": [each file,
    relative to data], "pesq_wb": [...], "stoi": [...], "estoi": [...], "si_sdr": [...],
    "mel_distance": [...], "dnsmos_ovrl": [...], ...}``, in the dataset's (sorted) order, each score
    rounded to 4 decimals and null where it failed or is not finite (a bit-exact SI-SDR). A report
    uses it for exact standard errors and paired (same-utterance) comparisons. Size: ~100 bytes an
    utterance.
    """
    from .compress_audio import AudioCodec
    from .evaluate import item_ids, metrics_json, per_item_record, save_code_usage_plot
    from .modalities.audio.io import AudioFolder, write_wav

    run = Path(run_dir)
    if not (run / "final").is_dir():
        raise ValueError(f"{run / 'final'} does not exist: RUN_DIR must be a finished `vqkit train` run")
    dev = resolve_device(device)
    codec = AudioCodec.from_pretrained(run / "final", device=dev)
    model = codec.tokenizer
    rate = speech_rate(model.config.arch_args)
    # a bad file stops the evaluation, naming it: another utterance's scores would stand under its id
    dataset = AudioFolder(data, rate, train=False, max_items=max_items or None, bad_files="fail")
    print(f"vqkit eval: {len(dataset)} utterances of {data} at {rate} Hz", flush=True)
    result = evaluate_audio(model, dataset, dev, full=True, keep_samples=samples, codec=codec)
    target = Path(out)
    (target / "samples").mkdir(parents=True, exist_ok=True)
    for i, (original, recon) in enumerate(result.samples):
        write_wav(target / "samples" / f"{i:02d}-original.wav", original, rate)
        write_wav(target / "samples" / f"{i:02d}-decoded.wav", recon, rate)
    save_spectrograms(result.samples[:3], rate, target / "spectrograms.png")
    save_code_usage_plot(result.usage, target / "code_usage.png")
    per_utterance = per_item_record(item_ids(dataset), result.per_utterance)
    record = {"run": str(run), "data": str(data), "modality": "audio",
              "metrics": {**_finite(result.metrics), "per_utterance": per_utterance}}
    atomic_write(target / "metrics.json", metrics_json(record))
    return {**result.metrics, "per_utterance": per_utterance}


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: such a mean is stored as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
