"""Speech scores of the one evaluation loop, on whole utterances: mel distance, SI-SDR, STOI / ESTOI, and
with ``full`` PESQ-WB and DNSMOS (UTMOS is reported unavailable: its checkpoint cannot be fetched here).
Each utterance is zero-padded to a multiple of the hop, tokenized and decoded whole, and cropped back, so
no metric sees padding. Rates: nominal kbps = tokens/s × Σ log2 K, and with a codec the real ``.vqt``
file kbps per prior. Also the spectrogram figure of an evaluation."""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ...dsp import log_mel
from ...metrics import CodeUsage
from ...models import Tokenizer
from ...models.speech import sample_rate_of
from ...plotting import pyplot, save_figure
from ..base import FileRates, Reconstruction, Scorer

HEADLINE = ("utterances", "seconds", "pesq_wb", "stoi", "estoi", "mel_distance", "si_sdr", "dnsmos_ovrl", "utmos",
            "usage", "usage_ceiling", "perplexity", "bits_per_token", "kbps", "file_kbps")


class AudioScorer(Scorer):
    """``full=False`` skips PESQ and DNSMOS (the slow ones; training validation)."""

    def __init__(self, model: Tokenizer, full: bool) -> None:
        from ...metrics.speech import SpeechMetrics  # the audio extra: imported only when speech is scored

        self.rate = sample_rate_of(model.config.arch_args)
        self.scores = SpeechMetrics(self.rate, use_pesq=full, use_dnsmos=full)
        self.seconds = 0.0

    def reconstruct(self, model: Tokenizer, batch: Tensor, device: torch.device,
                    amp_dtype: torch.dtype | None) -> Reconstruction:
        """One utterance (1, T) or (1, 1, T): padded to the hop, decoded whole, cropped back."""
        x = batch.reshape(1, 1, -1).float()
        length = x.shape[-1]
        x = F.pad(x, (0, -length % model.downsample_factor)).to(device)
        with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext():
            recon, out = model(x)
        recon = recon.float()[..., :length].clamp(-1, 1).cpu()
        return Reconstruction(x[..., :length].cpu(), recon, out.indices, [(1, length)])

    def update(self, rec: Reconstruction) -> None:
        self.scores.update(rec.recon.reshape(1, -1), rec.target.reshape(1, -1))
        self.seconds += rec.target.shape[-1] / self.rate

    def per_item(self) -> dict[str, list[float]]:
        """PESQ-WB, STOI, ESTOI, SI-SDR, mel distance and, where they ran, DNSMOS (NaN where an item failed)."""
        return {name: list(values) for name, values in self.scores.values.items()}

    def result(self, model: Tokenizer, usage: CodeUsage, rates: FileRates | None) -> dict[str, Any]:
        if not self.seconds:
            raise ValueError("evaluate: the dataset has no utterances")
        metrics: dict[str, Any] = self.scores.result()
        codes = usage.result()
        metrics.update({k: codes[k] for k in ("usage", "perplexity", "usage_per_stage", "perplexity_per_stage",
                                              "tokens", "usage_ceiling")})
        tokens_per_second = self.rate / model.downsample_factor
        metrics.update(seconds=self.seconds, sample_rate=self.rate, tokens_per_second=tokens_per_second,
                       bits_per_token=model.bits_per_token, kbps=tokens_per_second * model.bits_per_token / 1000)
        if rates is not None:
            metrics["file_kbps"] = {prior: bits / self.seconds / 1000 for prior, bits in rates.bits.items()}
        return metrics


def save_spectrograms(samples: list[tuple[Tensor, Tensor]], sample_rate: int, path: str | os.PathLike[str]) -> None:
    """PNG: log-mel of each original (left) beside its reconstruction (right), one row per utterance."""
    from ...metrics.speech import mel_settings

    plt = pyplot()
    rows = max(1, len(samples))
    fig, axes = plt.subplots(rows, 2, figsize=(11, 2.4 * rows), squeeze=False)
    n_fft, hop, n_mels = mel_settings(sample_rate)  # the settings of the reported mel distance
    for r, (original, recon) in enumerate(samples):
        mels = [log_mel(x.reshape(-1), sample_rate, n_fft=n_fft, hop=hop, n_mels=n_mels) for x in (original, recon)]
        low, high = float(mels[0].min()), float(mels[0].max())
        for c, (mel, title) in enumerate(zip(mels, ("original", "reconstruction"), strict=True)):
            ax = axes[r][c]
            ax.imshow(mel.numpy(), origin="lower", aspect="auto", vmin=low, vmax=high, cmap="magma",
                      extent=(0, original.numel() / sample_rate, 0, 80))
            ax.set_title(f"utterance {r + 1}: {title}", fontsize=9)
            ax.set_xlabel("time (s)")
            ax.set_ylabel("mel bin")
    fig.tight_layout()
    save_figure(fig, path)
