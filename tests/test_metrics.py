"""Metrics against hand-computed values: PSNR, SSIM, code usage, Fréchet distance, missing weights."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from vqkit.metrics import (
    CodeUsage,
    FIDInception,
    WeightsUnavailableError,
    batch_psnr,
    frechet_distance,
    l1,
    load_fid_inception,
    load_lpips,
    mse,
    psnr,
    ssim,
)
from vqkit.metrics import fid as fid_module
from vqkit.metrics.codebook import DENSE_LIMIT
from vqkit.metrics.fid import FID_WEIGHTS_FILE, FeatureStats


def _const(value: float, size: int = 16) -> torch.Tensor:
    return torch.full((1, 3, size, size), value)


# -- pixel metrics -----------------------------------------------------------------------------------
def test_psnr_of_constant_images_by_hand() -> None:
    # 0.0 vs 0.2 in [-1, 1] = 0.5 vs 0.6 in [0, 1]: mse 0.01, PSNR = 10·log10(1/0.01) = 20 dB.
    assert psnr(_const(0.2), _const(0.0)).item() == pytest.approx(20.0, abs=1e-4)
    # 0.1 apart in [0, 1]: 20 dB; 0.01 apart: 40 dB
    assert psnr(_const(-0.5), _const(-0.5 + 0.02)).item() == pytest.approx(40.0, abs=1e-3)
    assert l1(_const(0.2), _const(0.0)).item() == pytest.approx(0.2)
    assert mse(_const(0.2), _const(0.0)).item() == pytest.approx(0.04)
    assert psnr(_const(0.3), _const(0.3)).isinf().all()


def test_per_image_and_batch_psnr_differ_only_when_errors_differ() -> None:
    target = torch.zeros(2, 3, 8, 8)
    easy_hard = torch.stack([_const(0.02, 8)[0], _const(0.2, 8)[0]])  # [0,1] errors 0.01 and 0.1
    per_image = psnr(easy_hard, target)
    assert per_image.tolist() == pytest.approx([40.0, 20.0], abs=1e-3)
    assert per_image.mean().item() == pytest.approx(30.0, abs=1e-3)
    # batch: mse = (1e-4 + 1e-2) / 2 → 10·log10(1/0.00505) ≈ 22.97 dB, far below the per-image mean
    assert batch_psnr(easy_hard, target).item() == pytest.approx(10 * math.log10(1 / 0.00505), abs=1e-3)
    same = torch.stack([_const(0.2, 8)[0], _const(-0.2, 8)[0]])
    assert batch_psnr(same, target).item() == pytest.approx(psnr(same, target).mean().item(), abs=1e-4)


def test_ssim_matches_scikit_image_with_wang_settings() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 24, 24, generator=g) * 2 - 1
    y = (x + 0.2 * torch.randn(3, 3, 24, 24, generator=g)).clamp(-1, 1)
    assert ssim(x, x).tolist() == pytest.approx([1.0] * 3)
    values = ssim(x, y)
    assert (values < 1).all()
    a = ((x[1] + 1) / 2).permute(1, 2, 0).double().numpy()
    b = ((y[1] + 1) / 2).permute(1, 2, 0).double().numpy()
    direct = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                   data_range=1.0, channel_axis=-1)
    assert values[1].item() == pytest.approx(direct, abs=1e-6)


def test_ssim_of_flat_images_by_hand() -> None:
    """Constant images: no variance, so SSIM is the luminance term (2ab + C1) / (a² + b² + C1)."""
    x = torch.full((1, 3, 16, 16), 0.2)  # 0.6 on the [0, 1] scale
    y = torch.full((1, 3, 16, 16), -0.4)  # 0.3
    c1 = 0.01**2
    assert ssim(x, y).item() == pytest.approx((2 * 0.6 * 0.3 + c1) / (0.6**2 + 0.3**2 + c1), abs=1e-6)


def test_pixel_metrics_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="one shape"):
        ssim(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 15))


# -- codebook usage ----------------------------------------------------------------------------------
def test_code_usage_of_known_index_sets_across_batches() -> None:
    usage = CodeUsage((8,))
    usage.update(torch.tensor([[0, 1], [1, 1]]))
    usage.update(torch.tensor([3, 3, 3, 0]))  # counts: 0→2, 1→3, 3→3; 3 of 8 codes used
    result = usage.result()
    assert result["usage"] == pytest.approx(3 / 8)
    p = np.array([2, 3, 3]) / 8
    assert result["perplexity"] == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert usage.counts(0).tolist() == [3, 3, 2]
    assert result["tokens"] == 8 and result["usage_ceiling"] == 1.0
    few = CodeUsage((4, 64))  # 4 tokens can use all of 4 codes but at most 1/16 of 64
    few.update(torch.tensor([[0, 1], [1, 2], [2, 3], [3, 4]]))
    assert few.result()["usage_ceiling"] == pytest.approx((1 + 4 / 64) / 2)
    assert few.result()["usage_per_stage"] == pytest.approx([1.0, 4 / 64])
    uniform = CodeUsage((4,))
    uniform.update(torch.arange(4).repeat(5))
    assert uniform.result()["usage"] == 1.0 and uniform.result()["perplexity"] == pytest.approx(4.0)


def test_code_usage_per_stage_for_residual_indices() -> None:
    usage = CodeUsage((4, 16))
    usage.update(torch.tensor([[[0, 5], [1, 5]], [[2, 5], [3, 5]]]))  # (B=2, N=2, S=2)
    result = usage.result()
    assert result["usage_per_stage"] == pytest.approx([1.0, 1 / 16])
    assert result["perplexity_per_stage"] == pytest.approx([4.0, 1.0])
    assert result["usage"] == pytest.approx((1.0 + 1 / 16) / 2)
    assert result["perplexity"] == pytest.approx(2.5)
    with pytest.raises(ValueError, match="stage 1"):
        usage.update(torch.tensor([[0, 16]]))
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        usage.update(torch.tensor([0, 1, 2]))


def test_code_usage_of_huge_implicit_codebook_is_sparse() -> None:
    size = 2**32  # LFQ with 32 bits: no dense vector of 4·10^9 counts
    usage = CodeUsage((size,))
    usage.update(torch.tensor([0, 2**31, 2**31, size - 1]))
    usage.update(torch.tensor([size - 1]))
    assert size > DENSE_LIMIT
    assert usage.counts(0).tolist() == [2, 2, 1]
    assert usage.result()["usage"] == pytest.approx(3 / size)


def test_code_usage_all_reduce_is_a_no_op_without_a_process_group() -> None:
    usage = CodeUsage((4,))
    usage.update(torch.tensor([1, 2]))
    usage.all_reduce()
    assert usage.result()["usage"] == 0.5


# -- Fréchet distance -----------------------------------------------------------------------------------
def test_frechet_distance_of_1d_gaussians_by_hand() -> None:
    mu1, s1, mu2, s2 = 1.0, 2.0, -0.5, 0.5  # (μ1−μ2)² + σ1² + σ2² − 2σ1σ2 = 2.25 + (2 − 0.5)² = 4.5
    assert frechet_distance(np.array([mu1]), np.array([[s1**2]]), np.array([mu2]), np.array([[s2**2]])) == (
        pytest.approx(4.5))


def test_frechet_distance_diagonal_and_without_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = 5.0 + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()  # independent axes add up
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = a @ a.T + np.eye(5), b @ b.T
    with_scipy = frechet_distance(mu1[:1].repeat(5), s1, mu2[:1].repeat(5), s2)
    import builtins

    real_import = builtins.__import__

    def no_scipy(name: str, *args: object, **kwargs: object) -> object:
        if name == "scipy" or name.startswith("scipy."):
            raise ImportError("no scipy")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    assert frechet_distance(mu1[:1].repeat(5), s1, mu2[:1].repeat(5), s2) == pytest.approx(with_scipy, rel=1e-8)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected)


def test_feature_stats_match_numpy() -> None:
    feats = torch.randn(50, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    stats = FeatureStats(6)
    stats.update(feats[:20])
    stats.update(feats[20:])
    mu, cov = stats.mean_cov()
    np.testing.assert_allclose(mu, feats.numpy().mean(0), atol=1e-12)
    np.testing.assert_allclose(cov, np.cov(feats.numpy(), rowvar=False), atol=1e-12)


def test_fid_inception_gives_2048_features() -> None:
    torch.manual_seed(0)
    net = FIDInception()
    assert net(torch.rand(1, 3, 32, 32) * 2 - 1).shape == (1, 2048)
    assert not net.training


# -- weights unavailable -----------------------------------------------------------------------------------
@pytest.fixture
def no_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("weights", "home", "torch"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("VQKIT_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def test_fid_unavailable_names_the_file_and_every_path(no_weights: Path) -> None:
    with pytest.raises(WeightsUnavailableError) as err:
        load_fid_inception()
    message = str(err.value)
    assert FID_WEIGHTS_FILE in message and "looked in:" in message
    for folder in (no_weights / "weights", no_weights / "home" / ".cache" / "vqkit" / "weights",
                   no_weights / "torch" / "hub" / "checkpoints"):
        assert str(folder / FID_WEIGHTS_FILE) in message
    assert [str(p) for p in fid_module.fid_weight_paths()] == [
        str(no_weights / "weights" / FID_WEIGHTS_FILE),
        str(no_weights / "home" / ".cache" / "vqkit" / "weights" / FID_WEIGHTS_FILE),
        str(no_weights / "torch" / "hub" / "checkpoints" / FID_WEIGHTS_FILE),
    ]


def test_lpips_unavailable_names_the_file_and_every_path(no_weights: Path) -> None:
    with pytest.raises(WeightsUnavailableError) as err:
        load_lpips()
    message = str(err.value)
    assert "vgg16-397923af.pth not found; looked in:" in message
    assert str(no_weights / "weights" / "vgg16-397923af.pth") in message
    assert str(no_weights / "torch" / "hub" / "checkpoints" / "vgg16-397923af.pth") in message


# torchvision's VGG16 `features` convolutions (index, out channels) and LPIPS v0.1's heads, written
# down from those projects' published layouts, not from vqkit: the loader must accept their key names.
_VGG16_CONVS = [(0, 64), (2, 64), (5, 128), (7, 128), (10, 256), (12, 256), (14, 256), (17, 512), (19, 512),
                (21, 512), (24, 512), (26, 512), (28, 512)]
_LPIPS_HEADS = [64, 128, 256, 512, 512]


def test_lpips_loads_files_in_torchvision_and_lpips_key_layout(no_weights: Path) -> None:
    g = torch.Generator().manual_seed(0)
    vgg: dict[str, torch.Tensor] = {"classifier.0.weight": torch.zeros(2, 2)}  # the classifier is not used
    channels = 3
    for index, out in _VGG16_CONVS:
        vgg[f"features.{index}.weight"] = torch.randn(out, channels, 3, 3, generator=g) * (2 / (9 * channels)) ** 0.5
        vgg[f"features.{index}.bias"] = torch.zeros(out)
        channels = out
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for i, c in enumerate(_LPIPS_HEADS)}
    torch.save(vgg, no_weights / "weights" / "vgg16-397923af.pth")
    torch.save(heads, no_weights / "weights" / "lpips_vgg_v0.1.pth")

    model = load_lpips()
    assert torch.equal(model.features[28].weight, vgg["features.28.weight"])
    assert torch.equal(model.heads[4].weight, heads["lin4.model.1.weight"])
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(2, 3, 32, 32, generator=g)).clamp(-1, 1)
    assert model(x, x).abs().max().item() < 1e-6
    assert (model(x, y) > 0).all()

    del heads["lin2.model.1.weight"]
    torch.save(heads, no_weights / "weights" / "lpips_vgg_v0.1.pth")
    with pytest.raises(ValueError, match=r"not LPIPS v0\.1 VGG heads"):
        load_lpips()
