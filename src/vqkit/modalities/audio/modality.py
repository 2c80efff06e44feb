"""The audio modality: wav/flac folders at the model's rate (a train/ and val/ split, or --val-data),
mel/STFT/GAN training, PESQ/STOI/SI-SDR/mel-distance/DNSMOS evaluation, WAV out of the codec."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ...codec.tiled import Codec, Encoded
from ...models import Tokenizer
from ...models.speech import sample_rate_of
from ...reporting.evaluation import format_metrics, save_code_usage_plot
from ..base import Adversary, Evaluation, Modality, Objective, Scorer
from .codec import MARGIN_TOKENS, TILE_TOKENS, AudioAdapter, Waveform
from .config import AudioCrop, AudioObjectiveConfig
from .io import AudioFolder, read_audio, split_folder, write_wav
from .objective import AudioAdversary, AudioObjective, rate_of
from .report import write_audio_report
from .scorer import HEADLINE, AudioScorer, save_spectrograms

if TYPE_CHECKING:
    from ...train.config import TrainConfig


def _rate(codec: Codec[Any]) -> int:
    model = codec.model
    assert isinstance(model, Tokenizer)
    return sample_rate_of(model.config.arch_args)


class AudioModality(Modality):
    name = "audio"
    container_code = 1
    items = "utterances"
    per_item_key = "per_utterance"
    extensions = (".wav", ".flac")
    decoded_suffix = ".wav"
    keep_samples = 3
    train_hint = "vqkit train --preset speech-cpu --data DIR --out RUN"

    def samples_of(self, shape: tuple[int, ...]) -> int:
        """Samples at the model's rate (a file of another input rate also stores that rate and its length)."""
        return shape[1]
    crop_config = AudioCrop
    objective_config = AudioObjectiveConfig

    # -- training ---------------------------------------------------------------------------
    def datasets(self, cfg: TrainConfig) -> tuple[Dataset[Tensor], Dataset[Tensor]]:
        rate, data, crop = rate_of(cfg), cfg.data, cfg.crop
        assert isinstance(crop, AudioCrop)  # TrainConfig builds the crop section of the arch's modality
        train = AudioFolder(split_folder(data.train, "train"), rate, crop.segment, train=True, seed=cfg.run.seed,
                            max_items=data.max_train_items or None, bad_files=data.bad_files)
        val_root = Path(data.val) if data.val else split_folder(data.train, "val")
        if not data.val and val_root == Path(data.train):
            raise ValueError(f"{data.train} has no val/ folder: name the validation speech with --val-data (it "
                             "must not be the training folder)")
        val = AudioFolder(val_root, rate, crop.segment, train=False, seed=cfg.run.seed,
                          max_items=data.max_val_items or None, bad_files=data.bad_files)
        return train, val

    def objective(self, cfg: TrainConfig, device: torch.device, main: bool) -> Objective:
        return AudioObjective(cfg, device, main)

    def adversary(self, cfg: TrainConfig) -> Adversary:
        return AudioAdversary(cfg)

    # -- evaluation ------------------------------------------------------------------------------
    def scorer(self, model: Tokenizer, device: torch.device, *, full: bool, objective: Objective | None = None
               ) -> Scorer:
        return AudioScorer(model, full)

    def eval_loader(self, dataset: Dataset[Tensor], batch_size: int) -> Iterable[Tensor]:
        return (dataset[i] for i in range(len(dataset)))  # type: ignore[arg-type]  # whole utterances, one by one

    def eval_dataset(self, cfg: TrainConfig, data: str, split: str, max_items: int) -> Dataset[Tensor]:
        rate = rate_of(cfg)
        dataset = AudioFolder(data, rate, train=False, max_items=max_items or None, bad_files="fail")
        print(f"vqkit eval: {len(dataset)} utterances of {data} at {rate} Hz", flush=True)
        return dataset

    def eval_data(self, cfg: TrainConfig, split: str) -> str:
        return cfg.data.val if cfg.data.val and split == "val" else str(split_folder(cfg.data.train, split))

    def eval_record(self, cfg: TrainConfig, data: str, split: str) -> dict[str, Any]:
        return {"modality": self.name}

    def write_artifacts(self, result: Evaluation, model: Tokenizer, out: Path) -> list[Path]:
        rate = sample_rate_of(model.config.arch_args)
        (out / "samples").mkdir(parents=True, exist_ok=True)
        written = []
        for i, (original, recon) in enumerate(result.samples):
            for kind, audio in (("original", original), ("decoded", recon)):
                write_wav(out / "samples" / f"{i:02d}-{kind}.wav", audio.reshape(-1), rate)
                written.append(out / "samples" / f"{i:02d}-{kind}.wav")
        save_spectrograms(result.samples[:3], rate, out / "spectrograms.png")
        save_code_usage_plot(result.usage, out / "code_usage.png")
        return [*written, out / "spectrograms.png", out / "code_usage.png"]

    def format_metrics(self, metrics: dict[str, Any]) -> str:
        return format_metrics(metrics, HEADLINE)

    # -- codec ---------------------------------------------------------------------------------
    def adapter(self, model: Tokenizer) -> AudioAdapter:
        return AudioAdapter(sample_rate_of(model.config.arch_args))

    def tile(self, model: Tokenizer) -> tuple[int, int]:
        return TILE_TOKENS, MARGIN_TOKENS

    def training_signals(self, cfg: TrainConfig | None, data: str, max_items: int, model: Tokenizer
                         ) -> Iterator[Tensor]:
        clips = AudioFolder(split_folder(data, "train"), sample_rate_of(model.config.arch_args), train=False,
                            max_items=max_items or None, bad_files=cfg.data.bad_files if cfg is not None else "skip")
        return (clips[i].reshape(-1) for i in range(len(clips)))

    def read(self, path: Path, codec: Codec[Any]) -> Waveform:
        """The file at its own rate (mixed down to mono): the codec resamples it and decodes it back to it."""
        samples, rate = read_audio(path)
        return Waveform(samples, rate)

    def write(self, path: Path, signal: Any, codec: Codec[Any]) -> None:
        write_wav(path, signal.samples, signal.rate)

    def describe(self, signal: Any, codec: Codec[Any]) -> str:
        return f"{len(signal.samples) / signal.rate:.2f} s at {signal.rate} Hz"

    def rate(self, encoded: Encoded, codec: Codec[Any]) -> str:
        seconds = encoded.samples / _rate(codec)  # samples at the model's rate
        return f"{encoded.file_bits / seconds / 1000:.3f} kbps (nominal {encoded.nominal_bits / seconds / 1000:.3f})"

    def fidelity(self, original: Any, decoded: Any, codec: Codec[Any]) -> str:
        from ...metrics.speech import mel_distance, si_sdr

        a, b = original.samples, decoded.samples  # both at the input's rate
        return (f"SI-SDR {float(si_sdr(b, a)[0]):.2f} dB, "
                f"mel distance {float(mel_distance(b, a, original.rate)[0]):.3f}")

    # -- reports ------------------------------------------------------------------------------------
    def write_report(self, out_dir: Path, results: dict[str, Any]) -> list[Path]:
        return write_audio_report(out_dir, results)


AUDIO = AudioModality()
