"""Rate–distortion training: the rate model is the float twin of the codec's learned prior, its value is the
digits' code length, and training with it gives smaller files than training without."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from vqkit.codec import StageSpec
from vqkit.codec.priors.learned import features
from vqkit.codec.symbols import passes
from vqkit.modalities import fit_and_save_prior, open_codec
from vqkit.modalities.image.photos import TEST_PHOTOS, load_photo
from vqkit.train import load_config, train
from vqkit.train.checkpoint import load_checkpoint
from vqkit.train.rate import DigitRate
from vqkit.validation import ConfigError

LEVELS = (5, 4, 3)


def _twin_features(rate: DigitRate, digits: torch.Tensor, j: int) -> torch.Tensor:
    c = 2 * digits - (rate._radix - 1)
    nbr, onehot = rate._features(c)
    intra = torch.cat([c[..., :j], torch.zeros_like(c[..., j:])], -1)
    return torch.cat([nbr, intra, onehot], -1)


def test_features_are_the_learned_priors() -> None:
    """Every position, digit and pass: the training-time features equal the codec's integer ones."""
    rng = np.random.default_rng(0)
    h, w = 5, 7
    digits = np.stack([rng.integers(0, r, size=(h, w)) for r in LEVELS], -1)
    rate, spec = DigitRate(LEVELS), StageSpec.digits(LEVELS)
    flat_digits = digits.reshape(-1, len(LEVELS)).T  # (D, N)
    for j in range(len(LEVELS)):
        twin = _twin_features(rate, torch.from_numpy(digits)[None].float(), j)[0].reshape(h * w, -1)
        for p, flat in enumerate(passes((h, w))):
            want = features(spec, None, flat_digits, None, j, p, flat, (h, w))
            assert torch.equal(twin[flat], torch.from_numpy(want).float()), (j, p)


def test_value_is_the_code_length_and_the_gradient_points_to_cheaper_levels() -> None:
    torch.manual_seed(0)
    rate = DigitRate(LEVELS)
    digits = torch.stack([torch.randint(0, r, (2, 4, 6)) for r in LEVELS], -1).float().requires_grad_(True)
    bits = rate(digits)
    want = 0.0
    for j, net in enumerate(rate.nets):
        logp = torch.log_softmax(net(_twin_features(rate, digits.detach(), j)), -1).detach()
        want += float(-logp.gather(-1, digits.detach()[..., j : j + 1].long()).sum() / np.log(2))
    assert float(bits) == pytest.approx(want, rel=1e-5)
    bits.backward()
    assert digits.grad is not None and torch.isfinite(digits.grad).all() and digits.grad.abs().sum() > 0


def test_two_stages_value_is_the_code_length_under_the_codecs_features() -> None:
    """RFSQ: stage 1's networks see stage 0's digits at the same position, exactly as the codec's learned
    prior builds them: the rate model's value is the code length of every stage's digits under the codec's
    own integer features."""
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    h, w, d = 5, 7, len(LEVELS)
    spec = StageSpec.digits(LEVELS)
    digits = np.stack([np.stack([rng.integers(0, r, (h, w)) for r in LEVELS], -1) for _ in range(2)], 2)
    rate = DigitRate(LEVELS, stages=2)
    bits = float(rate(torch.from_numpy(digits)[None].float()))
    want = 0.0
    for s, nets in enumerate((rate.nets, rate.later[0])):
        stage = digits[:, :, s].reshape(-1, d).T  # (D, N)
        prev = spec.join(digits[:, :, 0].reshape(-1, d).T) if s else None
        for j in range(d):
            for p, flat in enumerate(passes((h, w))):
                x = features(spec, spec if s else None, stage, prev, j, p, flat, (h, w))
                logp = torch.log_softmax(nets[j](torch.from_numpy(x).float()), -1).detach()
                want += float(-logp.gather(-1, torch.from_numpy(stage[j, flat])[:, None]).sum() / np.log(2))
    assert bits == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match="expected digits"):
        rate(torch.zeros(1, 4, 4, 1, d))


def test_only_fsq_and_one_process(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="FSQ"):
        DigitRate.for_quantizer(torch.nn.Linear(2, 2))
    from vqkit.models.registry import build_quantizer

    mixed = build_quantizer("rvq", {"dim": 4, "codebook_size": 8, "num_stages": 2})
    with pytest.raises(ValueError, match="FSQ"):
        DigitRate.for_quantizer(mixed)
    rfsq = DigitRate.for_quantizer(build_quantizer("rfsq", {"levels": [5, 4], "num_stages": 3}))
    assert (rfsq.levels, rfsq.num_stages) == ((5, 4), 3)
    cfg = load_config(data="photos", image_size=32, batch_size=4, arch="rfsq_conv", conv_channels=(8, 16),
                      quantizer="vq", quantizer_args=json.dumps({"dim": 8, "codebook_size": 16}), steps=1,
                      rate_weight=1.0, out=str(tmp_path / "run"), prior_items=0)
    with pytest.raises((ConfigError, ValueError), match="FSQ"):
        train(cfg)


RD: dict[str, Any] = dict(data="photos", image_size=32, batch_size=8, arch="rfsq_conv", conv_channels=(16, 32),
                          quantizer="fsq", quantizer_args=json.dumps({"levels": [7, 7, 7, 5]}), lr=2e-3, warmup=0.0,
                          log_every=10, eval_every=1000, ckpt_every=50, max_val_images=8, prior_items=12, seed=0,
                          mse_weight=1.0)


def _held_out_bpp(model: Path) -> float:
    """File bits per pixel of the bundled test photos' 128×128 centres, learned prior."""
    codec, _ = open_codec(model)
    bits, pixels = 0, 0
    for name in TEST_PHOTOS:
        photo = load_photo(name)
        h, w = photo.shape[0] // 2 - 64, photo.shape[1] // 2 - 64
        crop = np.ascontiguousarray((photo[h : h + 128, w : w + 128] * 255).round().astype(np.uint8))
        bits += codec.encode(crop, "learned").file_bits
        pixels += 128 * 128
    return bits / pixels


def test_the_rate_term_makes_smaller_files(tmp_path: Path) -> None:
    """Same data, steps and seed; with the rate term the held-out files (learned prior fitted on each run's
    own tokens) are smaller, and the checkpoint carries the rate model."""
    plain = train(load_config(**RD, steps=120, out=str(tmp_path / "plain")))
    rd = train(load_config(**RD, steps=120, rate_weight=0.5, out=str(tmp_path / "rd")))
    assert "learned" in open_codec(tmp_path / "rd")[0].fitted_priors
    state = load_checkpoint(tmp_path / "rd", load_config(**RD, steps=120, rate_weight=0.5,
                                                         out=str(tmp_path / "rd")).to_dict())
    assert "rate" in state
    assert rd["val"]["psnr"] > 14 and rd["val"]["psnr"] > plain["val"]["psnr"] - 3  # fewer bits, not noise
    fit_and_save_prior(tmp_path / "plain" / "final", "photos", 12, learned=True)  # a plain run fits none itself
    assert _held_out_bpp(tmp_path / "rd" / "final") < 0.9 * _held_out_bpp(tmp_path / "plain" / "final")


def test_an_rfsq_run_fine_tuned_with_the_rate_term_makes_smaller_files(tmp_path: Path) -> None:
    """An RFSQ run trained for distortion, then resumed with a rate term (its rate model starts untrained, with
    a warning), against the same run resumed without one: smaller held-out files at a similar PSNR."""
    rq = {**RD, "quantizer": "rfsq",
          "quantizer_args": json.dumps({"levels": [5, 5, 5, 5], "num_stages": 2, "conditioning": "layernorm"})}
    train(load_config(**rq, steps=60, out=str(tmp_path / "plain")))
    shutil.copytree(tmp_path / "plain", tmp_path / "rd")
    plain = train(load_config(**rq, steps=160, out=str(tmp_path / "plain")), resume=True)
    with pytest.warns(UserWarning, match="rate model starts untrained"):
        rd = train(load_config(**rq, steps=160, rate_weight=0.5, out=str(tmp_path / "rd")), resume=True)
    assert rd["val"]["psnr"] > plain["val"]["psnr"] - 3
    fit_and_save_prior(tmp_path / "plain" / "final", "photos", 12, learned=True)
    assert _held_out_bpp(tmp_path / "rd" / "final") < 0.9 * _held_out_bpp(tmp_path / "plain" / "final")
