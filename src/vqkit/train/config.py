"""Training configuration: one flat frozen dataclass, presets, and config files.

The CLI is generated from :class:`TrainConfig`'s fields, so every option has one name in the
dataclass, the command line, the config file (JSON, or YAML when PyYAML is installed) and the
``config.json`` saved beside a run. Precedence: preset < config file < command-line options.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types as at
import torch

from ..models import TokenizerConfig
from ..validation import (
    ConfigError,
    Count,
    Device,
    Fraction,
    NonEmptyStr,
    NonNegativeFloat,
    PositiveFloat,
    Width,
    check_fields,
    from_mapping,
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (each field's type and range is checked on creation)."""

    # data
    data: NonEmptyStr = "photos"
    """Training data: an image folder (ImageNet layout or flat), 'photos', or a folder of wav/flac."""
    val_data: str = ""
    """Validation folder; empty = the val/ split of --data (a flat folder holds out a share of its files;
    a speech run must name one)."""
    image_size: Width = 64
    """Side of the square training and validation crops (images)."""
    segment: Annotated[int, at.Ge(1), at.Le(2**31)] = 16000
    """Samples per training crop (audio; validation uses whole utterances)."""
    resize: Annotated[int, at.Ge(0), at.Le(2**16)] = 0
    """Shorter side before cropping; 0 = the dataset's default room for random crops
    (image_size + image_size // 8 for folders, 2 × image_size for the bundled photos)."""
    max_train_images: Count = 0
    """Training items used (images or utterances), evenly spread; 0 = all."""
    max_val_images: Count = 256
    """Validation items (images, or utterances), evenly spread; 0 = all."""
    workers: Annotated[int, at.Ge(0), at.Le(1024)] = 0
    """DataLoader worker processes; 0 = load in the training process."""
    bad_files: Literal["skip", "fail"] = "skip"
    """An unreadable training file: 'skip' it (replaced by another, counted, warned once) or 'fail' the run."""
    # model
    arch: NonEmptyStr = "rfsq_conv"
    """Tokenizer architecture: rfsq_conv, fsq_conv, vqgan or speech."""
    quantizer: NonEmptyStr = "rfsq"
    """Quantizer: rfsq, fsq, lfq, vq, emavq, factorized, simvq, rvq or rsimvq."""
    quantizer_args: str = "{}"
    """JSON object of the quantizer's keyword arguments; {} = the registry's paper defaults."""
    arch_args: str = "{}"
    """JSON object of the arch's options (the speech arch's SpeechConfig fields); {} = its defaults."""
    conv_channels: tuple[Width, ...] = ()
    """Widths of rfsq_conv's two (fsq_conv's three) stride-2 convs; empty = the arch's defaults."""
    ch: Width = 128
    """vqgan: base width of the ResNet."""
    ch_mult: tuple[Width, ...] = (1, 2, 2, 4)
    """vqgan: width multiplier per level; downsampling f = 2^(levels - 1)."""
    num_res_blocks: Width = 2
    """vqgan: residual blocks per level."""
    # optimisation
    steps: Annotated[int, at.Ge(1), at.Le(2**40)] = 300
    """Optimizer steps of the run."""
    batch_size: Annotated[int, at.Ge(1), at.Le(2**20)] = 16
    """Items per step and process (DDP: per rank)."""
    lr: PositiveFloat = 8e-4
    """Peak learning rate (Adam)."""
    betas: tuple[Fraction, Fraction] = (0.9, 0.999)
    """Adam's (beta1, beta2)."""
    weight_decay: NonNegativeFloat = 5e-5
    """Adam weight decay."""
    warmup: Fraction = 0.01
    """Fraction of the steps with a linear warm-up."""
    schedule: Literal["linear", "constant"] = "linear"
    """'linear' decay to 0 after warm-up, or 'constant'."""
    grad_clip: NonNegativeFloat = 1.0
    """Clip the gradient norm to this value; 0 = no clipping."""
    ema_decay: Fraction = 0.0
    """Weight EMA used for evaluation and the final model (SimVQ: 0.999); 0 disables it."""
    nonfinite: Literal["skip", "stop"] = "skip"
    """A step whose loss or gradients are NaN/inf: 'skip' it (no optimizer update; counted in the log and summary;
    the run stops after 50 in a row) or 'stop' the run at once with a message."""
    # losses
    l1_weight: NonNegativeFloat = 1.0
    """Pixel (sample) L1 loss."""
    mse_weight: NonNegativeFloat = 0.0
    """Pixel (sample) MSE loss."""
    lpips_weight: NonNegativeFloat = 0.0
    """LPIPS perceptual loss (images; needs the VGG weights, see the README)."""
    gan_weight: NonNegativeFloat = 0.0
    """Adversarial loss (PatchGAN for images, MPD + MRD for speech); 0 = none."""
    gan_start: Count = 0
    """Step at which the adversarial loss is switched on."""
    disc_lr: PositiveFloat = 1e-4
    """Discriminator learning rate."""
    mel_weight: NonNegativeFloat = 0.0
    """Multi-resolution log-mel L1 (audio)."""
    stft_weight: NonNegativeFloat = 0.0
    """Multi-resolution STFT loss: spectral convergence + log magnitude (audio)."""
    fm_weight: NonNegativeFloat = 0.0
    """Discriminator feature matching (audio, with gan_weight > 0)."""
    # run
    out: NonEmptyStr = "runs/rfsq"
    """Run directory: config.json, checkpoint.pt, log.jsonl, final/."""
    seed: Annotated[int, at.Ge(0), at.Lt(2**63)] = 0
    """Seed of every random choice (weights, crops, order)."""
    log_every: Annotated[int, at.Ge(1), at.Le(2**40)] = 10
    """Steps between log lines."""
    eval_every: Annotated[int, at.Ge(1), at.Le(2**40)] = 100
    """Steps between validations."""
    ckpt_every: Annotated[int, at.Ge(1), at.Le(2**40)] = 50
    """Steps between checkpoints (written atomically; --resume continues from the last)."""
    prior_images: Count = 512
    """Training images (whole, evenly spread) whose tokens fit the static and context entropy-coding
    priors saved with the final model (prior.safetensors); 0 = none (uniform prior only)."""
    amp: Literal["auto", "bf16", "none"] = "auto"
    """'auto' = bf16 autocast on CUDA, none on CPU; 'bf16' or 'none' to force."""
    device: Device = "auto"
    """'auto' (CUDA if present), 'cpu', 'cuda', 'cuda:N' or 'mps'; checked against this machine at start."""

    def __post_init__(self) -> None:
        check_fields(self)
        self.tokenizer_config()  # validates arch, quantizer and its arguments early

    def tokenizer_config(self) -> TokenizerConfig:
        return TokenizerConfig(
            arch=self.arch, quantizer=self.quantizer,
            quantizer_args=_json_object("quantizer_args", self.quantizer_args),
            conv_channels=self.conv_channels or None, ch=self.ch, ch_mult=self.ch_mult,
            num_res_blocks=self.num_res_blocks, arch_args=_json_object("arch_args", self.arch_args),
        )

    def amp_dtype(self, device: torch.device) -> torch.dtype | None:
        """The autocast dtype of training and validation on ``device`` (None: float32)."""
        bf16 = self.amp == "bf16" or (self.amp == "auto" and device.type == "cuda")
        return torch.bfloat16 if bf16 else None

    @property
    def crop_resize(self) -> int | None:
        if self.resize:
            return self.resize
        return None if self.data == "photos" else self.image_size + self.image_size // 8

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _json_object(name: str, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"TrainConfig: {name} is not JSON: {text!r} ({err})") from err
    if not isinstance(value, dict):
        raise ConfigError(f"TrainConfig: {name} must be a JSON object, got {text!r}")
    return value


def _args(**kwargs: Any) -> str:
    return json.dumps(kwargs)


# The speech tokenizer (SEANet encoder, Vocos decoder; vqkit.models.speech): sizes as JSON arch_args.
_SPEECH_CPU = {"channels": 24, "backbone_dim": 192, "backbone_layers": 6, "intermediate": 576, "sample_rate": 16000}
_SPEECH_PAPER = {"channels": 32, "max_channels": 512, "backbone_dim": 768, "backbone_layers": 12,
                 "intermediate": 2304, "sample_rate": 16000}


PRESETS: dict[str, dict[str, Any]] = {
    # RFSQ paper: Adam lr 8e-4, betas (0.9, 0.999), 1% warm-up, linear decay, wd 5e-5, clip 1.0,
    # batch 2048 over 16 GPUs (128 each), 50 epochs of ImageNet at 128×128, L1 + LPIPS.
    "rfsq-paper": dict(arch="rfsq_conv", quantizer="rfsq",
                       quantizer_args=_args(levels=[4, 4, 4, 4, 4], num_stages=4, conditioning="layernorm"),
                       image_size=128, resize=128, batch_size=128, steps=31_250, lr=8e-4, betas=(0.9, 0.999),
                       weight_decay=5e-5, warmup=0.01, schedule="linear", grad_clip=1.0, l1_weight=1.0,
                       lpips_weight=1.0, eval_every=2000, ckpt_every=1000, log_every=50, max_val_images=10_000),
    # The same recipe scaled to minutes on 2 CPU cores: 64×64 crops, full-width rfsq_conv.
    "rfsq-cpu": dict(arch="rfsq_conv", quantizer="rfsq",
                     quantizer_args=_args(levels=[4, 4, 4, 4, 4], num_stages=4, conditioning="layernorm"),
                     image_size=64, batch_size=16, steps=400, lr=8e-4, betas=(0.9, 0.999), weight_decay=5e-5,
                     warmup=0.01, schedule="linear", grad_clip=1.0, l1_weight=1.0, eval_every=200,
                     ckpt_every=50, log_every=10, max_val_images=256),
    # SimVQ paper: VQGAN-style ResNet (ch 128, ch_mult 1,2,2,4), SimVQ 65,536 × 128, Adam lr 1e-4,
    # betas (0.5, 0.9), batch 256, 50 epochs, weight EMA 0.999, L1 + LPIPS + 0.1·GAN from step 0.
    "simvq-paper": dict(arch="vqgan", quantizer="simvq", quantizer_args=_args(dim=128, codebook_size=65_536),
                        ch=128, ch_mult=(1, 2, 2, 4), num_res_blocks=2, image_size=128, resize=128,
                        batch_size=256, steps=250_000, lr=1e-4, betas=(0.5, 0.9), weight_decay=0.0, warmup=0.0,
                        schedule="constant", grad_clip=0.0, ema_decay=0.999, l1_weight=1.0, lpips_weight=1.0,
                        gan_weight=0.1, gan_start=0, disc_lr=1e-4, eval_every=5000, ckpt_every=2000,
                        log_every=100, max_val_images=50_000),
    "simvq-cpu": dict(arch="vqgan", quantizer="simvq", quantizer_args=_args(dim=64, codebook_size=8192),
                      ch=32, ch_mult=(1, 2, 2, 4), num_res_blocks=1, image_size=64, batch_size=16, steps=400,
                      lr=4e-4, betas=(0.5, 0.9), weight_decay=0.0, warmup=0.0, schedule="constant",
                      grad_clip=0.0, ema_decay=0.99, l1_weight=1.0, eval_every=200, ckpt_every=50,
                      log_every=10, max_val_images=256),
    # Speech (SimVQ's audio model, WavTokenizer-style) scaled to a CPU: 16 kHz, hop 320 (50 tokens/s),
    # 1 s crops, mel + waveform L1, no GAN; SimVQ 4096 × 64 by default.
    "speech-cpu": dict(arch="speech", arch_args=_args(**_SPEECH_CPU), quantizer="simvq",
                       quantizer_args=_args(dim=64, codebook_size=4096), segment=16000, batch_size=8, steps=1500,
                       lr=5e-4, betas=(0.8, 0.9), weight_decay=0.0, warmup=0.01, schedule="linear", grad_clip=1.0,
                       l1_weight=0.1, mel_weight=1.0, eval_every=500, ckpt_every=100, log_every=25,
                       max_val_images=100, prior_images=251),
    # SimVQ / WavTokenizer recipe: ~1 s crops, AdamW-style betas (0.8, 0.9), lr 2e-4, mel 45 + GAN (MPD + MRD,
    # hinge) + feature matching 2, 512-d codes; 16 kHz LibriSpeech here instead of 24 kHz LibriTTS.
    "speech-paper": dict(arch="speech", arch_args=_args(**_SPEECH_PAPER), quantizer="simvq",
                         quantizer_args=_args(dim=512, codebook_size=65_536), segment=16000, batch_size=40,
                         steps=100_000, lr=2e-4, betas=(0.8, 0.9), weight_decay=0.0, warmup=0.0, schedule="constant",
                         grad_clip=1.0, l1_weight=0.0, mel_weight=45.0, gan_weight=1.0, fm_weight=2.0, gan_start=0,
                         disc_lr=2e-4, eval_every=5000, ckpt_every=1000, log_every=100, max_val_images=100,
                         prior_images=1000),
}


def load_config(preset: str | None = None, file: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """TrainConfig from a preset, then a JSON/YAML file, then keyword overrides."""
    values: dict[str, Any] = {}
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        values.update(PRESETS[preset])
    if file:
        values.update(_read_file(Path(file)))
    values.update(overrides)
    for name in ("quantizer_args", "arch_args"):
        value = values.get(name)
        if isinstance(value, dict):
            values[name] = json.dumps(value)
        elif value is not None and not isinstance(value, str):
            raise ConfigError(f"TrainConfig: invalid {name} = {value!r} ({type(value).__name__}): expected a JSON "
                              "object of keyword arguments (or its text)")
    return from_mapping(TrainConfig, values, "training config")


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the config file ({err})") from err
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as err:
            raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or use JSON") from err
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from err
    else:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as err:
            raise ConfigError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values, got {type(data).__name__}")
    section = data.get("train", data) if isinstance(data.get("train"), dict) else data
    bad_keys = [k for k in section if not isinstance(k, str)]
    if bad_keys:
        raise ConfigError(f"{path}: option names must be strings, got {bad_keys[:3]}")
    return section
