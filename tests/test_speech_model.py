"""Speech tokenizer pieces: SEANet encoder, Vocos decoder, speech losses and discriminators."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import pytest
import torch

from vqkit.cli.main import field_docs
from vqkit.modalities.audio.losses import (
    MPD_CHANNELS_SMALL,
    MultiPeriodDiscriminator,
    MultiResolutionDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    multi_resolution_mel_loss,
    multi_resolution_stft_loss,
)
from vqkit.models.speech import (
    SPEECH_CPU,
    SPEECH_PAPER,
    SPEECH_PRESETS,
    ISTFTHead,
    SpeechConfig,
    SpeechDecoder,
    SpeechEncoder,
)

SR = 16000
TINY = SpeechConfig(channels=8, backbone_dim=32, backbone_layers=2, intermediate=64)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """These tensors are tiny: a second intra-op thread buys nothing, and on a shared 2-core machine its
    spin-waiting made the overfit test 40× slower (130 s instead of 3 s). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def speech_like(seconds: float = 1.0, seed: int = 0) -> torch.Tensor:
    """(1, 1, T) voiced, syllable-rate modulated harmonic signal with two formants and a little noise."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR), dtype=torch.float64) / SR
    f0 = 120 + 60 * t / seconds + 5 * torch.sin(2 * math.pi * 5 * t)  # glide with vibrato
    phase = 2 * math.pi * torch.cumsum(f0, 0) / SR
    x = torch.zeros_like(t)
    for k in range(1, 30):
        freq = k * 150.0
        gain = math.exp(-(((freq - 700) / 250) ** 2)) + 0.6 * math.exp(-(((freq - 1800) / 350) ** 2)) + 0.05
        x += gain / k**0.5 * torch.sin(k * phase)
    envelope = torch.sin(2 * math.pi * 2 * t).abs() ** 0.5  # ~4 syllables per second
    x = x * envelope + 0.01 * torch.randn(t.shape, generator=gen, dtype=torch.float64)
    return (0.5 * x / x.abs().max()).float().view(1, 1, -1)


def n_params(*modules: torch.nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


# ---- config ----------------------------------------------------------------------------------------


def test_config_defaults_and_presets() -> None:
    cfg = SpeechConfig()
    assert cfg.hop == 320 and cfg.n_fft == 1280 and cfg.tokens_per_second == 50.0
    assert SpeechConfig.cpu() is SPEECH_CPU and SpeechConfig.paper() is SPEECH_PAPER
    assert set(SPEECH_PRESETS) == {"cpu", "paper"}
    docs = field_docs(SpeechConfig)  # the CLI's help text
    assert {f.name for f in dataclasses.fields(SpeechConfig)} <= set(docs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"sample_rate": 0}, "sample_rate"),
        ({"channels": 0}, "channels"),
        ({"channels": 64, "max_channels": 32}, "max_channels"),
        ({"strides": ()}, "strides"),
        ({"strides": (2, 0)}, "strides"),
        ({"strides": (2, 2.5)}, "strides"),
        ({"backbone_dim": -1}, "backbone_dim"),
        ({"backbone_layers": 0}, "backbone_layers"),
        ({"intermediate": 0}, "intermediate"),
        ({"residual_layers": -1}, "residual_layers"),
        ({"input_norm": 1}, "input_norm"),
        ({"channels": True}, "channels"),
    ],
)
def test_config_validation(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SpeechConfig(**kwargs)  # type: ignore[arg-type]


def test_config_dict_round_trip() -> None:
    for cfg in (SpeechConfig(), SPEECH_CPU, SPEECH_PAPER, SpeechConfig(strides=(4, 8), input_norm=False)):
        data = cfg.to_dict()
        assert isinstance(data["strides"], list)
        back = SpeechConfig.from_dict(data)
        assert back == cfg and hash(back) == hash(cfg) and isinstance(back.strides, tuple)
    with pytest.raises(ValueError, match="unknown keys"):
        SpeechConfig.from_dict({**SpeechConfig().to_dict(), "n_layers": 3})


# ---- encoder / decoder -----------------------------------------------------------------------------


@pytest.mark.parametrize("strides", [(2, 4, 5, 8), (4, 8), (3, 5), (2,), (2, 2, 2, 2, 2)])
def test_shapes(strides: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, strides=strides)
    hop = math.prod(strides)
    encoder, decoder = SpeechEncoder(16, cfg), SpeechDecoder(16, cfg)
    assert encoder.hop == encoder.downsample_factor == decoder.hop == hop
    for frames in (1, 7):
        audio = torch.randn(2, 1, frames * hop)
        z = encoder(audio)
        assert z.shape == (2, 16, frames)
        assert decoder(z).shape == (2, 1, frames * hop)


def test_encoder_refuses_bad_input() -> None:
    encoder = SpeechEncoder(16, TINY)
    for shape in [(2, 1, 321), (2, 1, 0), (2, 2, 640), (1, 640)]:
        with pytest.raises(ValueError, match="SpeechEncoder"):
            encoder(torch.zeros(shape))
    with pytest.raises(ValueError, match="SpeechDecoder"):
        SpeechDecoder(16, TINY)(torch.zeros(2, 8, 5))


def test_round_trip_length_and_gradients() -> None:
    torch.manual_seed(0)
    encoder, decoder = SpeechEncoder(64, SPEECH_CPU), SpeechDecoder(64, SPEECH_CPU)
    audio = speech_like().repeat(2, 1, 1)
    out = decoder(encoder(audio))
    assert out.shape == audio.shape and torch.isfinite(out).all()
    multi_resolution_mel_loss(out, audio, SR).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in [*encoder.parameters(), *decoder.parameters()])


def test_input_norm_standardises_channels() -> None:
    torch.manual_seed(0)
    audio = torch.randn(4, 1, 8 * 320) * 0.3 + 0.05
    encoder = SpeechEncoder(16, TINY).train()
    normed, raw = encoder(audio), encoder.blocks(audio)
    # why the norm exists (ANCHORS pilot): at init the raw output barely moves around a channel offset
    assert (raw.std(dim=(0, 2)) < raw.mean(dim=(0, 2)).abs()).any() and raw.var(dim=(0, 2)).max() < 1e-2
    assert normed.mean(dim=(0, 2)).abs().max() < 1e-4
    var = normed.var(dim=(0, 2), unbiased=False)
    # ≈ 1: BatchNorm's eps (1e-5) is not negligible next to raw variances of 1e-4 at init
    assert (var <= 1).all() and (var > 0.8).all()
    expected = (raw - raw.mean(dim=(0, 2), keepdim=True)) / (raw.var(dim=(0, 2), unbiased=False, keepdim=True)
                                                              + 1e-5).sqrt()
    torch.testing.assert_close(normed, expected, rtol=1e-4, atol=1e-4)
    encoder.eval()  # running statistics: one clip's code does not depend on its batch-mates
    torch.testing.assert_close(encoder(audio[:1]), encoder(audio)[:1])


def test_weight_norm_option() -> None:
    encoder = SpeechEncoder(16, dataclasses.replace(TINY, weight_norm=True))
    assert any("parametrizations" in name for name, _ in encoder.named_parameters())
    assert encoder(torch.randn(2, 1, 640)).shape == (2, 16, 2)


def test_istft_head_inverts_same_padded_stft() -> None:
    """The overlap-add is a true inverse of a Hann STFT whose frames sit at Vocos' "same" offsets."""
    hop, frames = 80, 12
    head = ISTFTHead(8, hop)
    x = torch.randn(2, frames * hop, dtype=torch.float64)
    left, right = head.trim
    spec = torch.stft(torch.nn.functional.pad(x, (left, right)), head.n_fft, hop, window=head.window.double(),
                      center=False, return_complex=True)
    assert spec.shape[-1] == frames
    back = head.istft(spec)
    assert back.shape == (2, 1, frames * hop)
    torch.testing.assert_close(back[:, 0], x)


def test_parameter_counts() -> None:
    for dim in (64, 128):
        assert 1e6 <= n_params(SpeechEncoder(dim, SPEECH_CPU), SpeechDecoder(dim, SPEECH_CPU)) <= 8e6
    with torch.device("meta"):  # no memory, no init cost
        paper = n_params(SpeechEncoder(512, SPEECH_PAPER), SpeechDecoder(512, SPEECH_PAPER))
    assert 50e6 <= paper <= 90e6


# ---- losses ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["mel", "stft"])
def test_spectral_losses_zero_then_grow_with_noise(loss: str) -> None:
    def fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return multi_resolution_mel_loss(a, b, SR) if loss == "mel" else multi_resolution_stft_loss(a, b)

    x = speech_like()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    assert float(fn(x, x)) == pytest.approx(0.0, abs=1e-6)
    values = [float(fn(x + scale * noise, x)) for scale in (0.1, 0.03, 0.01, 0.003)]
    assert all(v > 0 for v in values)
    assert values == sorted(values, reverse=True)
    with pytest.raises(ValueError, match="differ in shape"):
        fn(x[..., :-1], x)


def test_discriminators_and_gan_losses() -> None:
    torch.manual_seed(0)
    mpd = MultiPeriodDiscriminator(channels=MPD_CHANNELS_SMALL)
    mrd = MultiResolutionDiscriminator(channels=8)
    real = speech_like(0.5).repeat(2, 1, 1)
    fake = (real + 0.05 * torch.randn_like(real)).requires_grad_()
    for disc, count in ((mpd, 5), (mrd, 3)):
        real_logits, real_feats = disc(real)
        fake_logits, fake_feats = disc(fake)
        assert len(real_logits) == len(real_feats) == len(fake_logits) == count
        assert all(len(f) == 6 and logits.shape[0] == 2 for f, logits in zip(real_feats, real_logits, strict=True))
        d_loss = discriminator_loss(real_logits, [f.detach() for f in fake_logits])
        d_loss.backward()
        assert all(p.grad is not None for p in disc.parameters())
        disc.zero_grad()
        g_loss = generator_adversarial_loss(fake_logits) + feature_matching_loss(real_feats, fake_feats)
        g_loss.backward()
        assert fake.grad is not None and torch.isfinite(fake.grad).all() and fake.grad.abs().sum() > 0
        fake.grad = None
    with torch.no_grad():
        assert float(feature_matching_loss(real_feats, real_feats)) == 0.0
    # hinge margins: confident, correct logits cost nothing
    assert float(discriminator_loss([torch.full((2, 3), 2.0)], [torch.full((2, 3), -2.0)])) == 0.0
    assert float(generator_adversarial_loss([torch.full((2, 3), 2.0)])) == 0.0
    assert float(discriminator_loss([torch.zeros(2, 3)], [torch.zeros(2, 3)])) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        discriminator_loss([torch.zeros(1)], [])


# ---- learning --------------------------------------------------------------------------------------


def test_overfits_one_clip_with_mel_loss() -> None:
    """Encoder -> decoder (identity quantizer) learns one speech-like second from the mel loss alone."""
    torch.manual_seed(0)
    cfg = SpeechConfig(channels=8, backbone_dim=64, backbone_layers=2, intermediate=128)
    encoder, decoder = SpeechEncoder(32, cfg), SpeechDecoder(32, cfg)
    params = [*encoder.parameters(), *decoder.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    audio = speech_like()
    losses = []
    for _ in range(80):
        loss = multi_resolution_mel_loss(decoder(encoder(audio)), audio, SR)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = losses[0], min(losses[-5:])
    assert last <= 0.7 * first, (first, last)
