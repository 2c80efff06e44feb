"""The papers' training recipes and their CPU-scale versions, as option names (the ``--flags``) -> values.

A preset is the first layer of :func:`vqkit.train.load_config` (preset < config file < options); the
options are those of :func:`vqkit.train.convert.options`.
"""

from __future__ import annotations

from typing import Any

# The speech tokenizer (SEANet encoder, Vocos decoder; vqkit.models.speech): fields of its model.args section
# (a SpeechConfig), each its own option (--channels ...; --arch-args '{...}' replaces them all).
_SPEECH_CPU = {"channels": 24, "backbone_dim": 192, "backbone_layers": 6, "intermediate": 576, "sample_rate": 16000}
_SPEECH_PAPER = {"channels": 32, "max_channels": 512, "backbone_dim": 768, "backbone_layers": 12,
                 "intermediate": 2304, "sample_rate": 16000}


PRESETS: dict[str, dict[str, Any]] = {
    # The codec family (`vqkit encode --quality`): an RFSQ of 6 stages of 8 channels x 4 levels (16 bits a stage,
    # 0.25 bpp nominal each at f = 8), so that the first k stages are operating points from ~0.1 to ~1.2 bpp
    # once coded with the learned prior fitted at the end. How the shipped `codec` model was trained, on
    # 2 CPU cores in ~2 hours (scripts/train_codec.sh).
    "codec-cpu": dict(arch="fsq_conv", quantizer="rfsq",
                      quantizer_args=dict(levels=[4] * 8, num_stages=6, conditioning="layernorm"),
                      data="../shared/data/images/imagenette2", image_size=96, batch_size=8, steps=10_000, lr=8e-4,
                      betas=(0.9, 0.999), weight_decay=5e-5, warmup=0.01, schedule="linear", grad_clip=1.0,
                      l1_weight=1.0, mse_weight=1.0, eval_every=4000, ckpt_every=500, log_every=200,
                      max_val_items=64, prior_items=2000, learned_prior=True),
    # The family's high-rate member (`--quality` 5-6): the RFSQ official code's f = 4 encoder/decoder (rfsq_conv)
    # around 2 stages of 22 bits (FSQ 8,8,8,8,8,8,4,4: the default tokenizer's grid), so that one stage is about
    # the default's rate and two add the detail it lacks. How the shipped `codec-hi` was trained (~70 min of
    # one core; scripts/train_codec.sh).
    "codec-hi-cpu": dict(arch="rfsq_conv", quantizer="rfsq",
                         quantizer_args=dict(levels=[8, 8, 8, 8, 8, 8, 4, 4], num_stages=2, conditioning="layernorm"),
                         data="../shared/data/images/imagenette2", image_size=80, batch_size=16, steps=8000, lr=8e-4,
                         betas=(0.9, 0.999), weight_decay=5e-5, warmup=0.01, schedule="linear", grad_clip=1.0,
                         l1_weight=1.0, mse_weight=1.0, eval_every=4000, ckpt_every=250, log_every=100,
                         max_val_items=128, prior_items=2000, learned_prior=True),
    # The same family at GPU scale: 256-pixel crops, the full-width FSQ-pytorch encoder (512 channels), a
    # larger batch and 20x the steps; not yet run (no GPU was lent when it was written).
    "codec-paper": dict(arch="fsq_conv", quantizer="rfsq", conv_channels=(256, 512, 512),
                        quantizer_args=dict(levels=[4] * 8, num_stages=6, conditioning="layernorm"),
                        image_size=256, batch_size=32, steps=200_000, lr=4e-4, betas=(0.9, 0.99), weight_decay=0.0,
                        warmup=0.01, schedule="linear", grad_clip=1.0, l1_weight=1.0, mse_weight=1.0,
                        eval_every=10_000, ckpt_every=2000, log_every=100, max_val_items=2000, prior_items=5000,
                        learned_prior=True),
    # RFSQ paper: Adam lr 8e-4, betas (0.9, 0.999), 1% warm-up, linear decay, wd 5e-5, clip 1.0,
    # batch 2048 over 16 GPUs (128 each), 50 epochs of ImageNet at 128×128, L1 + LPIPS.
    "rfsq-paper": dict(arch="rfsq_conv", quantizer="rfsq",
                       quantizer_args=dict(levels=[4, 4, 4, 4, 4], num_stages=4, conditioning="layernorm"),
                       image_size=128, resize=128, batch_size=128, steps=31_250, lr=8e-4, betas=(0.9, 0.999),
                       weight_decay=5e-5, warmup=0.01, schedule="linear", grad_clip=1.0, l1_weight=1.0,
                       lpips_weight=1.0, eval_every=2000, ckpt_every=1000, log_every=50, max_val_items=10_000),
    # The same recipe scaled to minutes on 2 CPU cores: 64×64 crops, full-width rfsq_conv.
    "rfsq-cpu": dict(arch="rfsq_conv", quantizer="rfsq",
                     quantizer_args=dict(levels=[4, 4, 4, 4, 4], num_stages=4, conditioning="layernorm"),
                     image_size=64, batch_size=16, steps=400, lr=8e-4, betas=(0.9, 0.999), weight_decay=5e-5,
                     warmup=0.01, schedule="linear", grad_clip=1.0, l1_weight=1.0, eval_every=200,
                     ckpt_every=50, log_every=10, max_val_items=256),
    # SimVQ paper: VQGAN-style ResNet (ch 128, ch_mult 1,2,2,4), SimVQ 65,536 × 128, Adam lr 1e-4,
    # betas (0.5, 0.9), batch 256, 50 epochs, weight EMA 0.999, L1 + LPIPS + 0.1·GAN from step 0.
    "simvq-paper": dict(arch="vqgan", quantizer="simvq", quantizer_args=dict(dim=128, codebook_size=65_536),
                        ch=128, ch_mult=(1, 2, 2, 4), num_res_blocks=2, image_size=128, resize=128,
                        batch_size=256, steps=250_000, lr=1e-4, betas=(0.5, 0.9), weight_decay=0.0, warmup=0.0,
                        schedule="constant", grad_clip=0.0, ema_decay=0.999, l1_weight=1.0, lpips_weight=1.0,
                        gan_weight=0.1, gan_start=0, disc_lr=1e-4, eval_every=5000, ckpt_every=2000,
                        log_every=100, max_val_items=50_000),
    "simvq-cpu": dict(arch="vqgan", quantizer="simvq", quantizer_args=dict(dim=64, codebook_size=8192),
                      ch=32, ch_mult=(1, 2, 2, 4), num_res_blocks=1, image_size=64, batch_size=16, steps=400,
                      lr=4e-4, betas=(0.5, 0.9), weight_decay=0.0, warmup=0.0, schedule="constant",
                      grad_clip=0.0, ema_decay=0.99, l1_weight=1.0, eval_every=200, ckpt_every=50,
                      log_every=10, max_val_items=256),
    # Speech (SimVQ's audio model, WavTokenizer-style) scaled to a CPU: 16 kHz, hop 320 (50 tokens/s),
    # 1 s crops, mel + waveform L1, no GAN; SimVQ 4096 × 64 by default.
    "speech-cpu": dict(arch="speech", **_SPEECH_CPU, quantizer="simvq",
                       quantizer_args=dict(dim=64, codebook_size=4096), segment=16000, batch_size=8, steps=1500,
                       lr=5e-4, betas=(0.8, 0.9), weight_decay=0.0, warmup=0.01, schedule="linear", grad_clip=1.0,
                       l1_weight=0.1, mel_weight=1.0, eval_every=500, ckpt_every=100, log_every=25,
                       max_val_items=100, prior_items=251),
    # SimVQ / WavTokenizer recipe: ~1 s crops, AdamW-style betas (0.8, 0.9), lr 2e-4, mel 45 + GAN (MPD + MRD,
    # hinge) + feature matching 2, 512-d codes; 16 kHz LibriSpeech here instead of 24 kHz LibriTTS.
    "speech-paper": dict(arch="speech", **_SPEECH_PAPER, quantizer="simvq",
                         quantizer_args=dict(dim=512, codebook_size=65_536), segment=16000, batch_size=40,
                         steps=100_000, lr=2e-4, betas=(0.8, 0.9), weight_decay=0.0, warmup=0.0, schedule="constant",
                         grad_clip=1.0, l1_weight=0.0, mel_weight=45.0, gan_weight=1.0, fm_weight=2.0, gan_start=0,
                         disc_lr=2e-4, eval_every=5000, ckpt_every=1000, log_every=100, max_val_items=100,
                         prior_items=1000),
}
