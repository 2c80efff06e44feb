"""``bit_order`` of LFQ and BSQ: MSB first by default (vqp, BSQ, Cosmos), LSB first on request and for every
model and ``.vqt`` file written before the argument existed (tests/data/legacy, written at commit e139e2f)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from vqkit.codec import ModelMismatchError
from vqkit.codec.tiled import Codec
from vqkit.modalities.image.codec import ImageAdapter
from vqkit.models import Tokenizer, TokenizerConfig, build_quantizer
from vqkit.quantizers import BSQ, LFQ, Quantizer

LEGACY = Path(__file__).parent / "data" / "legacy"


def photo(h: int, w: int) -> np.ndarray:
    """The image tests/data/legacy/generate.py encoded."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 9 + y) % 256, (y * 7) % 256, (x + y * 5) % 256], axis=-1)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def reverse_bits(indices: torch.Tensor, bits: int) -> torch.Tensor:
    out = torch.zeros_like(indices)
    for j in range(bits):
        out |= ((indices >> j) & 1) << (bits - 1 - j)
    return out


@pytest.mark.parametrize("name", ["lfq", "bsq"])
def test_models_and_files_written_before_bit_order_decode_exactly_as_before(name: str) -> None:
    """Their configs lack bit_order: they load LSB-first, with the same model id, tokens and pixels."""
    expected = np.load(LEGACY / f"{name}-expected.npz")
    model = Tokenizer.from_pretrained(LEGACY / name)
    assert "bit_order" not in model.config.quantizer_args  # the config (hence the model id) is unchanged
    assert model.quantizer.bit_order == "lsb"
    codec = Codec(model, ImageAdapter(), None, 64, 0)
    assert codec.model_id == expected["model_id"].tobytes()
    data = (LEGACY / f"{name}.vqt").read_bytes()
    assert np.array_equal(codec.decode(data), expected["decoded"])
    tokens, _, _ = codec.tokens(photo(16, 16))
    assert np.array_equal(tokens, expected["tokens"])
    assert len(np.unique(tokens)) > 1 and not np.array_equal(reverse_bits(torch.from_numpy(tokens), 6).numpy(), tokens)
    assert codec.encode(photo(16, 16), "uniform").data == data


@pytest.mark.parametrize("name", ["lfq", "bsq"])
def test_the_same_weights_in_the_other_order_are_another_model(name: str, tmp_path: Path) -> None:
    """The order is part of the config the model id hashes: an MSB model refuses the LSB model's file, and
    decodes its own file to the same pixels (the codes are the same, only their numbers differ)."""
    legacy = Tokenizer.from_pretrained(LEGACY / name)
    args = {**legacy.config.quantizer_args, "bit_order": "msb"}
    config = TokenizerConfig(**{**legacy.config.to_dict(), "quantizer_args": args})
    msb = Tokenizer(config).eval()
    msb.load_state_dict(legacy.state_dict())
    old, new = Codec(legacy, ImageAdapter(), None, 64, 0), Codec(msb, ImageAdapter(), None, 64, 0)
    assert old.model_id != new.model_id
    with pytest.raises(ModelMismatchError):
        new.decode((LEGACY / f"{name}.vqt").read_bytes())
    image = photo(16, 16)
    lsb_tokens, msb_tokens = old.tokens(image)[0], new.tokens(image)[0]
    assert np.array_equal(reverse_bits(torch.from_numpy(lsb_tokens), 6).numpy(), msb_tokens)
    assert np.array_equal(new.decode(new.encode(image, "uniform").data), old.decode(old.encode(image, "uniform").data))
    msb.save_pretrained(tmp_path / "m")
    assert Tokenizer.from_pretrained(tmp_path / "m").quantizer.bit_order == "msb"


@pytest.mark.parametrize("name", ["lfq", "bsq"])
def test_configs_without_bit_order_mean_lsb_and_the_registry_default_msb(name: str) -> None:
    assert build_quantizer(name, {"dim": 5}).bit_order == "lsb"  # type: ignore[attr-defined]
    assert build_quantizer(name, {"dim": 5, "bit_order": "msb"}).bit_order == "msb"  # type: ignore[attr-defined]
    assert Tokenizer(TokenizerConfig(quantizer=name)).quantizer.bit_order == "msb"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="bit_order"):
        build_quantizer(name, {"dim": 5, "bit_order": "big"})


def quantizers(bits: int) -> list[tuple[str, Any]]:
    return [("lfq", lambda order: LFQ(bits, bit_order=order)), ("bsq", lambda order: BSQ(bits, bit_order=order)),
            ("lfq_proj", lambda order: LFQ(bits + 3, bits=bits, bit_order=order))]


@pytest.mark.parametrize("case", quantizers(7), ids=lambda c: c[0])
def test_msb_is_channel_0_most_significant_and_both_orders_are_bijections(case: tuple[str, Any]) -> None:
    _, make = case
    torch.manual_seed(0)
    q: dict[str, Quantizer] = {}
    for order in ("msb", "lsb"):
        torch.manual_seed(1)
        q[order] = make(order).eval()
    assert LFQ(4).bit_order == "msb" and BSQ(4).bit_order == "msb"  # the default
    bits = 7
    z = torch.randn(64, q["msb"].dim)
    i_msb, i_lsb = q["msb"].encode(z), q["lsb"].encode(z)
    assert torch.equal(i_msb, reverse_bits(i_lsb, bits))
    assert torch.equal(q["msb"].decode(i_msb), q["lsb"].decode(i_lsb))
    assert torch.equal(q["msb"](z).indices, i_msb)
    assert torch.equal(q["msb"].decode(i_msb), q["msb"](z).quantized)
    every = torch.arange(2**bits)
    for order in ("msb", "lsb"):
        codes = q[order].decode(every)
        assert torch.unique(codes, dim=0).shape[0] == 2**bits
        if q[order].dim == bits:  # no projection: index -> code -> index is the identity
            assert torch.equal(q[order].encode(codes), every)
    if q["msb"].dim == bits:
        one_hot_first = -torch.ones(1, bits)
        one_hot_first[0, 0] = 1
        assert int(q["msb"].encode(one_hot_first)) == 2 ** (bits - 1)
        assert int(q["lsb"].encode(one_hot_first)) == 1
