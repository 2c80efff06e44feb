"""Tokenizer models: shapes per architecture, every quantizer plugged in, encode/decode against
forward, save_pretrained/from_pretrained exactness and its errors, the PatchGAN and hinge losses."""

from __future__ import annotations

import copy
import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from vqkit.models import (
    QUANTIZERS,
    PatchDiscriminator,
    Tokenizer,
    TokenizerConfig,
    hinge_d_loss,
    hinge_g_loss,
    pretrained,
)
from vqkit.quantizers import ResidualQuantizer

SMALL_CONV = (16, 32)  # rfsq_conv widths that keep a CPU test fast (f = 4)
TINY_VQGAN: dict[str, Any] = {"ch": 16, "ch_mult": (1, 2), "num_res_blocks": 1, "norm_groups": 8}


def images(b: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g) * 2 - 1


def make(seed: int = 0, **kwargs: Any) -> Tokenizer:
    torch.manual_seed(seed)
    return Tokenizer(TokenizerConfig(**kwargs))


def train_step(model: Tokenizer, x: torch.Tensor) -> None:
    """One optimiser step in train mode, so that EMA codebooks and running statistics move."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    recon, out = model(x)
    ((recon - x).abs().mean() + out.loss).backward()
    opt.step()
    model.eval()


# -- shapes ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "size", "f", "grid", "stages"),
    [
        ({"arch": "rfsq_conv"}, 64, 4, 16, 2),  # the official RFSQ model and its default 2×2048 RFSQ
        ({"arch": "fsq_conv", "quantizer": "fsq", "quantizer_args": {"levels": [8, 5, 5, 5]}}, 64, 8, 8, 0),
        (
            {"arch": "vqgan", "quantizer": "simvq", "quantizer_args": {"dim": 8, "codebook_size": 64}, **TINY_VQGAN},
            32,
            2,
            16,
            0,
        ),
        (
            {
                "arch": "vqgan",
                "quantizer": "fsq",
                "quantizer_args": {"levels": [5, 5, 5]},
                "ch": 8,
                "ch_mult": (1, 1, 2, 2),
                "num_res_blocks": 1,
                "norm_groups": 8,
            },
            32,
            8,
            4,
            0,
        ),
    ],
)
def test_output_shapes_and_token_grid(kwargs: dict[str, Any], size: int, f: int, grid: int, stages: int) -> None:
    model = make(**kwargs).eval()
    x = images(2, size)
    recon, out = model(x)
    assert model.downsample_factor == f
    assert recon.shape == x.shape and recon.dtype == torch.float32
    tokens = (2, grid, grid, stages) if stages else (2, grid, grid)
    assert out.indices.shape == tokens and out.quantized.shape == (2, grid, grid, model.quantizer.dim)
    assert model.encode(x).shape == tokens and model.encode(x).dtype == torch.int64
    assert model.decode(model.encode(x)).shape == x.shape


def test_rfsq_conv_is_the_official_model() -> None:
    model = Tokenizer()  # defaults: rfsq_conv + RFSQ 2 stages of [8, 8, 8, 4], LayerNorm
    assert model.token_grid(128, 128) == (32, 32)
    convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (3, 128, (4, 4), (2, 2)),
        (128, 256, (4, 4), (2, 2)),
        (256, 4, (1, 1), (1, 1)),
    ]
    assert model.bits_per_token == 22.0
    assert Tokenizer(TokenizerConfig(arch="fsq_conv", quantizer="fsq")).token_grid(128, 128) == (16, 16)


def test_full_size_vqgan_layout() -> None:
    config = TokenizerConfig(arch="vqgan", quantizer="fsq", quantizer_args={"levels": [8, 8, 8, 8]})
    enc = Tokenizer(config).encoder
    assert enc.downsample_factor == 8  # ch_mult (1, 2, 2, 4): 128×128 -> 16×16
    assert not any("attn" in name.lower() for name, _ in enc.named_modules())
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in enc.modules()) == 2 * (4 * 2 + 2) + 1


# -- every quantizer plugs in ------------------------------------------------------------------------
QUANTIZER_ARGS: dict[str, dict[str, Any]] = {
    "fsq": {"levels": [5, 5, 5]},
    "lfq": {"dim": 6},
    "bsq": {"dim": 6, "bits": 5, "group_size": 3},
    "ibq": {"dim": 8, "codebook_size": 32},
    "vq": {"dim": 8, "codebook_size": 32},
    "emavq": {"dim": 8, "codebook_size": 32},
    "factorized": {"dim": 8, "codebook_size": 32, "code_dim": 4},
    "simvq": {"dim": 8, "codebook_size": 32},
    "rfsq": {"levels": [5, 5, 5], "num_stages": 2, "conditioning": "scale"},
    "rvq": {"dim": 8, "codebook_size": 32, "num_stages": 2},
    "rsimvq": {"dim": 8, "codebook_size": 32, "num_stages": 2},
    "msrq": {"dim": 8, "codebook_size": 32, "patch_nums": [1, 2, 4, 8]},  # 32×32 images, f = 4: an 8×8 map
    "grouped": {"inner": "fsq", "groups": 2, "levels": [5, 5, 5]},
}


def test_registry_is_covered() -> None:
    assert set(QUANTIZER_ARGS) == set(QUANTIZERS)


@pytest.mark.parametrize("name", sorted(QUANTIZER_ARGS))
def test_every_quantizer_plugs_in(name: str) -> None:
    model = make(conv_channels=SMALL_CONV, quantizer=name, quantizer_args=QUANTIZER_ARGS[name])
    x = images()
    recon, out = model(x)
    loss = (recon - x).abs().mean() + out.loss
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(bool(g.abs().sum() > 0) for g in grads if g is not None)
    model.eval()
    assert torch.allclose(model.decode(model.encode(x)), model(x)[0], atol=1e-5)


# -- encode / decode against forward -------------------------------------------------------------------
EVAL_CASES: list[dict[str, Any]] = [
    {"conv_channels": SMALL_CONV},  # RFSQ, running LayerNorm statistics
    {"arch": "vqgan", "quantizer": "simvq", "quantizer_args": {"dim": 8, "codebook_size": 64}, **TINY_VQGAN},
    {
        "arch": "fsq_conv",
        "conv_channels": (8, 16, 16),
        "quantizer": "emavq",
        "quantizer_args": {"dim": 8, "codebook_size": 32},
    },
]


@pytest.mark.parametrize("kwargs", EVAL_CASES)
def test_eval_decode_of_encode_equals_forward(kwargs: dict[str, Any]) -> None:
    model = make(**kwargs)
    x = images()
    train_step(model, x)
    recon, out = model(x)
    indices = model.encode(x)
    assert torch.equal(indices, out.indices)
    assert torch.allclose(model.decode(indices), recon, atol=1e-5)


def test_coarse_decoding_with_fewer_stages() -> None:
    model = make(conv_channels=SMALL_CONV).eval()
    indices = model.encode(images())
    assert model.decode(indices[..., :1]).shape == (2, 3, 32, 32)


def test_instance_layernorm_rfsq_needs_side_info() -> None:
    args = {"levels": [8, 8, 8, 4], "num_stages": 2, "conditioning": "layernorm", "layernorm_stats": "instance"}
    model = make(conv_channels=SMALL_CONV, quantizer_args=args).eval()
    x = images()
    indices, side = model.encode_with_side_info(x)
    assert torch.allclose(model.decode(indices, side), model(x)[0], atol=1e-5)
    with pytest.raises(ValueError, match="side_info"):
        model.decode(indices)


# -- save_pretrained / from_pretrained ------------------------------------------------------------------
ROUND_TRIP: list[dict[str, Any]] = [
    {
        "conv_channels": SMALL_CONV,
        "quantizer_args": {"levels": [8, 8, 8, 4], "num_stages": 2, "conditioning": "layernorm"},
    },
    {"arch": "vqgan", "quantizer": "simvq", "quantizer_args": {"dim": 8, "codebook_size": 64}, **TINY_VQGAN},
    {
        "arch": "fsq_conv",
        "conv_channels": (8, 16, 16),
        "quantizer": "emavq",
        "quantizer_args": {"dim": 8, "codebook_size": 32},
    },
]


@pytest.mark.parametrize("kwargs", ROUND_TRIP)
def test_from_pretrained_reproduces_outputs_exactly(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    model = make(**kwargs)
    x = images()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_step(model, x)
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    buffers = {name for name, _ in model.named_buffers()}
    assert buffers & set(moved) or model.config.quantizer == "simvq"  # EMA codebook / running stats moved

    loaded = Tokenizer.from_pretrained(model.save_pretrained(tmp_path / "ckpt"))
    assert not loaded.training and loaded.config == model.config
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        (r1, o1), (r2, o2) = model(x), loaded(x)
    assert torch.equal(r1, r2) and torch.equal(o1.indices, o2.indices) and torch.equal(o1.quantized, o2.quantized)
    assert torch.equal(model.decode(model.encode(x)), loaded.decode(loaded.encode(x)))
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]


def test_config_json_content_and_overwrite(tmp_path: Path) -> None:
    model = make(conv_channels=SMALL_CONV)
    path = model.save_pretrained(tmp_path / "a" / "b")
    meta = json.loads((path / "config.json").read_text())
    assert meta["format"] == "vqkit.tokenizer" and meta["version"] == 1 and "vqkit_version" in meta
    assert meta["config"]["quantizer_args"]["levels"] == [8, 8, 8, 4]
    assert meta["config"]["conv_channels"] == [16, 32]
    make(seed=1, conv_channels=SMALL_CONV).save_pretrained(path)  # overwrite in place
    assert len(list(path.iterdir())) == 2


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return make(conv_channels=SMALL_CONV).save_pretrained(tmp_path / "ckpt")


def test_truncated_weights(saved: Path) -> None:
    weights = saved / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors: corrupt or truncated"):
        Tokenizer.from_pretrained(saved)


def test_overwritten_tensor_bytes(saved: Path) -> None:
    weights = saved / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-64:] = b"\x7f" * 64  # inside the tensor data: safetensors alone would load it silently
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        Tokenizer.from_pretrained(saved)


def test_overwritten_header_bytes(saved: Path) -> None:
    weights = saved / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[0:16] = b"\xff" * 16
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        Tokenizer.from_pretrained(saved)


def test_config_of_another_architecture(saved: Path) -> None:
    config = saved / "config.json"
    meta = json.loads(config.read_text())
    meta["config"]["arch"], meta["config"]["conv_channels"] = "fsq_conv", [16, 32, 32]
    config.write_bytes(pretrained.config_json(meta))  # re-sealed: the weights, not the digest, must object
    with pytest.raises(ValueError, match=r"does not match this architecture \(arch='fsq_conv'.*missing keys"):
        Tokenizer.from_pretrained(saved)


def test_weights_of_another_quantizer(saved: Path, tmp_path: Path) -> None:
    other = make(conv_channels=SMALL_CONV, quantizer="simvq", quantizer_args={"dim": 4, "codebook_size": 16})
    other_dir = other.save_pretrained(tmp_path / "other")
    shutil.copy(other_dir / "model.safetensors", saved / "model.safetensors")
    with pytest.raises(ValueError, match=r"does not match this architecture.*unexpected keys.*quantizer\.linear"):
        Tokenizer.from_pretrained(saved)


def test_weights_of_another_run_same_shapes(saved: Path, tmp_path: Path) -> None:
    twin = make(seed=7, conv_channels=SMALL_CONV).save_pretrained(tmp_path / "twin")
    shutil.copy(twin / "model.safetensors", saved / "model.safetensors")
    with pytest.raises(ValueError, match="SHA-256"):
        Tokenizer.from_pretrained(saved)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda p: p.unlink(), "config.json: missing"),
        (lambda p: p.write_text("{not json"), "corrupt or unreadable JSON"),
        (lambda p: p.write_text(json.dumps({"format": "other"})), "not a vqkit tokenizer config"),
        (lambda p: p.write_text(json.dumps([1, 2])), "not a vqkit tokenizer config"),
    ],
)
def test_bad_config_json(saved: Path, edit: Any, match: str) -> None:
    edit(saved / "config.json")
    with pytest.raises(ValueError, match=match):
        Tokenizer.from_pretrained(saved)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("version", 99, "format version 99 is not supported"),
        ("config.arch", "transformer", "unknown arch 'transformer'"),
        ("config.quantizer", "pq", "unknown quantizer 'pq'"),
        ("config.depth", 3, "unknown field"),
        ("config.quantizer_args", {"levels": [8, 8, 8, 4], "stages": 2}, "bad arguments"),
    ],
)
def test_invalid_config_fields(saved: Path, key: str, value: Any, match: str) -> None:
    config = saved / "config.json"
    meta = json.loads(config.read_text())
    node, *rest = key.split(".")
    (meta[node] if rest else meta)[rest[0] if rest else node] = value
    config.write_bytes(pretrained.config_json(meta))  # re-sealed: the field's own check must object
    with pytest.raises(ValueError, match=match):
        Tokenizer.from_pretrained(saved)


def test_missing_directory_and_weights(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        Tokenizer.from_pretrained(tmp_path / "nowhere")
    (saved / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"model\.safetensors: missing"):
        Tokenizer.from_pretrained(saved)


# -- config ----------------------------------------------------------------------------------------------
def test_config_round_trips_and_is_immutable() -> None:
    config = Tokenizer(
        TokenizerConfig(
            arch="vqgan", quantizer="rvq", quantizer_args={"dim": 8, "codebook_size": 16, "num_stages": 2}, **TINY_VQGAN
        )
    ).config
    assert TokenizerConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert pickle.loads(pickle.dumps(config)) == config and copy.deepcopy(config) == config
    assert hash(config) == hash(TokenizerConfig.from_dict(config.to_dict()))
    with pytest.raises(TypeError):
        config.quantizer_args["dim"] = 4  # type: ignore[index]
    with pytest.raises(AttributeError):
        config.arch = "fsq_conv"  # type: ignore[misc]
    assert TokenizerConfig().resolved().quantizer_args["levels"] == (8, 8, 8, 4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"arch": "unet"}, "unknown arch"),
        ({"quantizer": "pq"}, "unknown quantizer"),
        ({"ch_mult": (1, 0)}, "ch_mult"),
        ({"conv_channels": ()}, "conv_channels"),
        ({"conv_channels": (8, 8, 8)}, "needs 2 widths"),
        ({"arch": "vqgan", "conv_channels": (8, 8)}, "uses ch/ch_mult"),
        ({"num_res_blocks": 0}, "num_res_blocks"),
        ({"arch": "vqgan", "ch": 16}, "norm_groups=32 must divide"),
        ({"quantizer_args": {"levels": {1, 2}}}, "not a JSON value"),
        ({"quantizer_args": {"beta": float("nan")}}, "finite"),
    ],
)
def test_bad_config(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TokenizerConfig(**kwargs)


def test_bad_quantizer_args_name_the_quantizer() -> None:
    with pytest.raises(ValueError, match="quantizer 'simvq': bad arguments"):
        Tokenizer(TokenizerConfig(quantizer="simvq", quantizer_args={"levels": [8, 8]}))
    with pytest.raises(ValueError, match="quantizer 'rvq': bad arguments"):
        Tokenizer(
            TokenizerConfig(quantizer="rvq", quantizer_args={"dim": 4, "codebook_size": 8, "num_stages": 2, "bogus": 1})
        )


def test_initialisation_is_deterministic_under_a_seed() -> None:
    a, b = (
        make(seed=3, arch="vqgan", quantizer="emavq", quantizer_args={"dim": 8, "codebook_size": 16}, **TINY_VQGAN)
        for _ in range(2)
    )
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


# -- input validation -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.zeros(3, 32, 32), r"\(B, 3, H, W\)"),
        (torch.zeros(1, 4, 32, 32), r"\(B, 3, H, W\)"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "floating point"),
        (torch.zeros(1, 3, 30, 32), r"\(1, 3, 30, 32\).*downsample factor 4"),
        (torch.zeros(0, 3, 32, 32), "non-empty"),
        ([[0.0]], "torch.Tensor"),
    ],
)
def test_bad_images(x: Any, match: str) -> None:
    model = make(conv_channels=SMALL_CONV)
    for call in (model, model.encode):
        with pytest.raises(ValueError, match=match):
            call(x)


def test_bad_indices() -> None:
    model = make(conv_channels=SMALL_CONV)
    with pytest.raises(ValueError, match=r"\(B, h, w, S\)"):
        model.decode(torch.zeros(1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="out of range"):
        model.decode(torch.full((1, 8, 8, 2), 5000))
    assert isinstance(model.quantizer, ResidualQuantizer)


# -- discriminator ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n_layers", "size", "patches"), [(3, 32, 2), (2, 32, 6), (3, 128, 14)])
def test_patch_discriminator_shape(n_layers: int, size: int, patches: int) -> None:
    disc = PatchDiscriminator(ndf=8, n_layers=n_layers)
    logits = disc(images(2, size))
    assert logits.shape == (2, 1, patches, patches)
    logits.mean().backward()
    assert all(p.grad is not None for p in disc.parameters())


def test_hinge_losses() -> None:
    real, fake = torch.full((2, 1, 4, 4), 2.0), torch.full((2, 1, 4, 4), -2.0)
    assert hinge_d_loss(real, fake).item() == 0.0
    assert hinge_d_loss(-real, -fake).item() == pytest.approx(3.0)  # ½·(3 + 3)
    assert hinge_d_loss(torch.zeros(3), torch.zeros(3)).item() == pytest.approx(1.0)
    logits = torch.tensor([1.0, -3.0, 0.5])
    assert hinge_g_loss(logits).item() == pytest.approx(-logits.mean().item())
    assert hinge_g_loss(-real).item() == pytest.approx(2.0)  # fakes judged fake: the generator pays
