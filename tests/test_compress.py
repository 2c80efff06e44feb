"""Images ⇄ .vqt through real (small, untrained) tokenizers of every quantizer family."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from vqkit.codec import CorruptFileError, ModelMismatchError, StageSpec, TokenFile, TokenFileError
from vqkit.codec.priors import PRIOR_FILE, PriorTables, load_prior, save_prior
from vqkit.codec.tiled import Codec
from vqkit.modalities import fit_and_save_prior, open_codec
from vqkit.modalities.image.codec import ImageAdapter, to_tensor
from vqkit.modalities.image.io import read_image
from vqkit.models import Tokenizer, TokenizerConfig

FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "fsq": ("fsq", {"levels": [8, 5, 5, 5]}),
    "fsq_k2": ("fsq", {"levels": [2], "symmetric": True}),
    "fsq_2^18": ("fsq", {"levels": [8, 8, 8, 8, 8, 8]}),
    "lfq": ("lfq", {"dim": 10}),
    "lfq_k2": ("lfq", {"dim": 1}),
    "lfq_2^18": ("lfq", {"dim": 18}),
    "bsq": ("bsq", {"dim": 10, "group_size": 4}),
    "bsq_proj": ("bsq", {"dim": 8, "bits": 12}),
    "ibq": ("ibq", {"dim": 8, "codebook_size": 512}),
    "vq": ("vq", {"dim": 8, "codebook_size": 512}),
    "vq_k2": ("vq", {"dim": 4, "codebook_size": 2}),
    "emavq": ("emavq", {"dim": 8, "codebook_size": 256}),
    "factorized": ("factorized", {"dim": 8, "codebook_size": 256, "code_dim": 4}),
    "simvq": ("simvq", {"dim": 8, "codebook_size": 1024}),
    "simvq_2^18": ("simvq", {"dim": 4, "codebook_size": 1 << 18}),
    "rfsq_none": ("rfsq", {"levels": [4, 4, 4], "num_stages": 3, "conditioning": "none"}),
    "rfsq_scale": ("rfsq", {"levels": [4, 4, 4], "num_stages": 2, "conditioning": "scale"}),
    "rfsq_ln": ("rfsq", {"levels": [4, 4, 4], "num_stages": 2, "conditioning": "layernorm"}),
    "rfsq_ln_instance": ("rfsq", {"levels": [4, 4, 4], "num_stages": 2, "conditioning": "layernorm",
                                  "layernorm_stats": "instance"}),
    "rvq": ("rvq", {"dim": 8, "codebook_size": 64, "num_stages": 3}),
    "rsimvq": ("rsimvq", {"dim": 8, "codebook_size": 128, "num_stages": 2, "conditioning": "scale"}),
}


def tokenizer(family: str, seed: int = 0) -> Tokenizer:
    quantizer, args = FAMILIES[family]
    torch.manual_seed(seed)
    config = TokenizerConfig(arch="rfsq_conv", quantizer=quantizer, quantizer_args=args, conv_channels=(8, 16))
    return Tokenizer(config).eval()


def photo(h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    """A smooth image with texture: gradients plus noise, uint8 (h, w, c)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 3 + y) % 256, (y * 2) % 256, (x + y * 5) % 256][:c], axis=-1)
    return np.clip(base + rng.normal(0, 12, (h, w, c)), 0, 255).astype(np.uint8)


def image_codec(model: Tokenizer, tables: PriorTables | None = None, tile: int = 256, margin: int = 32
                ) -> Codec[np.ndarray]:
    """The image codec of ``model`` with tiles and margin given in pixels."""
    f = model.downsample_factor
    return Codec(model, ImageAdapter(), tables, tile // f, margin // f)


def specs_of(model: Tokenizer) -> list[StageSpec]:
    return [StageSpec.from_layout(layout) for layout in model.quantizer.symbol_layout()]


def fitted_codec(family: str, **options: int) -> Codec[np.ndarray]:
    codec = image_codec(tokenizer(family), **options)
    codec.tables = codec.fit_prior([photo(24, 32, seed=s) for s in range(3)])
    return codec


def render(codec: Codec[np.ndarray], grid: np.ndarray, side: np.ndarray | None, shape: tuple[int, ...]
           ) -> np.ndarray:
    return codec.render(grid, side, shape)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_round_trips_bit_exactly(family: str) -> None:
    codec = fitted_codec(family, tile=64, margin=0)
    image = photo(19, 27, seed=9)
    grid, side, shape = codec.tokens(image)
    expected = render(codec, grid, side, shape)
    padded = torch.nn.functional.pad(to_tensor(image), (0, 1, 0, 1), mode="replicate")  # to 20 x 28
    direct, _ = codec.model.encode_tokens(padded)
    direct = direct[0]
    if side is None:  # one tile, no margin: exactly the tokenizer's own tokens
        assert np.array_equal(grid, direct.permute(2, 0, 1).numpy())
    for prior in ("uniform", "static", "context"):
        encoded = codec.encode(image, prior)
        assert np.array_equal(codec.decode(encoded.data), expected), prior
        file = TokenFile.from_bytes(encoded.data)
        assert file.signal_shape == (3, 19, 27) and file.grid == grid.shape
        assert encoded.file_bits - encoded.payload_bits == 8 * file.header_bytes  # the header counted, exactly
        assert encoded.cross_entropy_bits - 8 * len(file.side_info) <= encoded.payload_bits + 1
        # per coded stream at most a 64-bit end; a layered payload (several stages) also frames each stream
        slack = 64 if not file.layered else sum(64 + 8 * (1 + len(layer) // 128) for layer in file.layers())
        assert file.layered == (grid.shape[0] > 1)
        assert encoded.payload_bits <= encoded.cross_entropy_bits - 8 * len(file.side_info) + slack
        assert encoded.file_bits == 8 * len(encoded.data)
    assert (len(file.side_info) > 0) == (family == "rfsq_ln_instance")


def test_decoded_image_equals_the_tokenizers_reconstruction() -> None:
    codec = fitted_codec("rfsq_ln", tile=64, margin=0)
    image = photo(32, 40)
    out = codec.decode(codec.encode(image).data)
    with torch.no_grad():
        recon = codec.model.decode(codec.model.encode(to_tensor(image)))
    expected = recon[0].add(1).mul(127.5).round().clamp(0, 255).permute(1, 2, 0).numpy().astype(np.uint8)
    assert np.array_equal(out, expected)


def test_tiles_with_a_margin_match_the_whole_image() -> None:
    """rfsq_conv's receptive field (10 px) fits in an 8 px margin: tiles give the whole image's tokens
    (but for the odd float-rounding tie: convolutions of other sizes sum in another order)."""
    whole = fitted_codec("fsq", tile=256, margin=0)
    tiled = image_codec(whole.model, whole.tables, tile=16, margin=8)
    image = photo(50, 70, seed=3)
    a, _, shape = whole.tokens(image)
    b, _, _ = tiled.tokens(image)
    assert (a == b).mean() > 0.99
    pa = render(whole, a, None, shape).astype(float)
    pb = render(tiled, a, None, shape).astype(float)
    assert np.abs(pa - pb).max() <= 1  # decoded tiles meet without seams


def test_model_id_covers_weights_and_prior_tables(tmp_path: Path) -> None:
    codec = fitted_codec("vq")
    codec.model.save_pretrained(tmp_path / "m")
    save_prior(tmp_path / "m", codec.tables)
    loaded, _ = open_codec(tmp_path / "m")
    assert loaded.model_id == codec.model_id  # saved or in memory: one model, one id
    data = codec.encode(photo(12, 12)).data
    assert loaded.decode(data).shape == (12, 12, 3)
    data = loaded.encode(photo(16, 16)).data
    assert np.array_equal(loaded.decode(data), open_codec(tmp_path / "m")[0].decode(data))
    other, _ = open_codec(tmp_path / "m")
    other.tables = other.fit_prior([photo(8, 8, seed=42)])
    save_prior(tmp_path / "m", other.tables)
    refit, _ = open_codec(tmp_path / "m")
    assert refit.model_id != loaded.model_id
    with pytest.raises(ModelMismatchError, match="encoded with model"):
        refit.decode(data)
    tokenizer("vq", seed=1).save_pretrained(tmp_path / "other")  # same config and prior, other weights
    save_prior(tmp_path / "other", codec.tables)
    with pytest.raises(ModelMismatchError):
        open_codec(tmp_path / "other")[0].decode(data)


def test_missing_or_damaged_prior_tables(tmp_path: Path) -> None:
    codec = image_codec(tokenizer("fsq"))
    codec.model.save_pretrained(tmp_path)
    bare, _ = open_codec(tmp_path)
    assert bare.tables is None
    assert bare.decode(bare.encode(photo(8, 8), "uniform").data).shape == (8, 8, 3)
    with pytest.raises(ValueError, match="fit-prior"):
        bare.encode(photo(8, 8), "context")
    (tmp_path / PRIOR_FILE).write_bytes(b"\x00" * 40)
    with pytest.raises(ValueError, match="corrupt or truncated prior"):
        open_codec(tmp_path)
    save_prior(tmp_path, codec.fit_prior([photo(8, 8)]))
    blob = bytearray((tmp_path / PRIOR_FILE).read_bytes())
    blob[-3] ^= 1  # a count in the data section: safetensors alone would load it
    (tmp_path / PRIOR_FILE).write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="SHA-256"):
        open_codec(tmp_path)
    save_prior(tmp_path, fitted_codec("vq").fit_prior([photo(8, 8)]))
    with pytest.raises(ValueError, match="another quantizer"):
        load_prior(tmp_path, specs_of(tokenizer("fsq")))


def test_stage_specs_follow_the_quantizers_public_layout() -> None:
    assert specs_of(tokenizer("fsq")) == [StageSpec.digits([8, 5, 5, 5])]
    assert specs_of(tokenizer("lfq")) == [StageSpec.digits([2] * 10)]
    assert specs_of(tokenizer("rvq")) == [StageSpec.nominal(64)] * 3
    assert specs_of(tokenizer("rfsq_none")) == [StageSpec.digits([4, 4, 4])] * 3
    assert specs_of(tokenizer("simvq_2^18")) == [StageSpec.nominal(1 << 18)]


@pytest.mark.parametrize("h, w", [(1, 5000), (333, 517), (1, 1), (4, 4)])
def test_any_size(h: int, w: int) -> None:
    codec = fitted_codec("fsq")
    image = photo(h, w)
    out = codec.decode(codec.encode(image).data)
    assert out.shape == (h, w, 3)


def test_grey_image_stays_grey() -> None:
    codec = fitted_codec("fsq")
    grey = photo(20, 12, c=1)
    encoded = codec.encode(grey)
    assert TokenFile.from_bytes(encoded.data).signal_shape == (1, 20, 12)
    assert codec.decode(encoded.data).shape == (20, 12, 1)


def test_forged_absurd_sizes_are_refused_before_allocating() -> None:
    codec = fitted_codec("fsq")
    data = codec.encode(photo(16, 16)).data
    file = TokenFile.from_bytes(data)
    huge = TokenFile("image", "context", codec.model_id, (3, 60_000, 60_000), (1, 15_000, 15_000),
                     file.codebook_sizes, file.payload, b"", file.tile)
    with pytest.raises(TokenFileError, match="larger than"):
        codec.decode(huge.to_bytes())
    empty = TokenFile("image", "context", codec.model_id, (3, 64, 64), (1, 16, 16), file.codebook_sizes, b"", b"",
                      file.tile)
    with pytest.raises(CorruptFileError, match="not the coding"):
        codec.decode(empty.to_bytes())


def test_the_shipped_default_is_read_only() -> None:
    from vqkit.models.pretrained import resolve

    before = (resolve("default") / PRIOR_FILE).read_bytes()
    with pytest.raises(ValueError, match="read-only"):
        fit_and_save_prior("default", "photos", 1)
    assert (resolve("default") / PRIOR_FILE).read_bytes() == before


def test_decode_errors_name_the_cause() -> None:
    codec = fitted_codec("fsq")
    data = codec.encode(photo(16, 16)).data
    with pytest.raises(CorruptFileError, match="CRC32"):
        codec.decode(data[:-7])
    with pytest.raises(CorruptFileError, match="magic"):
        codec.decode(b"PNG" + data)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 4
    with pytest.raises(CorruptFileError):
        codec.decode(bytes(flipped))
    tiled = image_codec(codec.model, codec.tables, tile=4096)  # the file's 256-px tiles: under a quarter
    with pytest.raises(TokenFileError, match="tiles"):
        tiled.decode(data)


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def test_read_image_modes(tmp_path: Path) -> None:
    ramp = (np.arange(64, dtype=np.uint16) * 1040).reshape(8, 8)  # 16-bit grey, up to 65,520
    (tmp_path / "g16.png").write_bytes(_png(ramp))
    g16 = read_image(tmp_path / "g16.png")
    assert g16.shape == (8, 8, 1) and g16.max() == 255 and g16.min() == 0
    assert 120 <= g16[4, 0, 0] <= 135  # scaled, not clipped to white
    rgba = np.dstack([photo(6, 5), np.full((6, 5), 7, np.uint8)])
    (tmp_path / "rgba.png").write_bytes(_png(rgba))
    assert np.array_equal(read_image(tmp_path / "rgba.png"), rgba[..., :3])
    Image.fromarray(photo(6, 5)).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (6, 5, 3)
    Image.fromarray(photo(9, 7, c=1)[..., 0]).save(tmp_path / "grey.jpg")
    assert read_image(tmp_path / "grey.jpg").shape == (9, 7, 1)
    Image.fromarray(photo(9, 7)).convert("CMYK").save(tmp_path / "cmyk.jpg")
    assert read_image(tmp_path / "cmyk.jpg").shape == (9, 7, 3)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ValueError, match="cannot read image"):
        read_image(tmp_path / "bad.png")


@pytest.mark.parametrize("family", ["fsq", "rfsq_ln_instance"])
def test_files_of_other_tiles_decode_with_their_own(family: str) -> None:
    """A file names the tiles it was encoded in (vqkit wrote 256 px before 512): decoding uses the file's, so
    its side information (one set a tile) and pixels are those of a decoder of its own tiles; tiles smaller
    than a quarter of the codec's (decoding time) or larger than its own (memory) are refused."""
    model = tokenizer(family)
    old, new = image_codec(model, tile=32, margin=8), image_codec(model, tile=128, margin=8)
    image = photo(70, 90)
    data = old.encode(image, "uniform").data
    assert TokenFile.from_bytes(data).tile == 32
    assert np.array_equal(new.decode(data), old.decode(data))
    tiny = image_codec(model, tile=8, margin=8).encode(image, "uniform").data
    with pytest.raises(TokenFileError, match="tiles of 8"):
        new.decode(tiny)
    big = image_codec(model, tile=512, margin=8).encode(image, "uniform").data  # one tile of everything: memory
    with pytest.raises(TokenFileError, match="tiles of 512"):
        new.decode(big)
