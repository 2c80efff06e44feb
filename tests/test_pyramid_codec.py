"""A token pyramid (MultiScaleRQ, VAR) through the tiled codec and the CLI: tiles of exactly the last scale
with no margin, each tile one pyramid, the file's grid (1, L, *tiles), on images of any size."""

from __future__ import annotations

import dataclasses
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from test_compress import photo
from vqkit.cli import main
from vqkit.codec import CorruptFileError, ModelMismatchError, TokenFile, TokenFileError
from vqkit.codec.priors import save_prior
from vqkit.codec.symbols import neighbours, passes
from vqkit.codec.tiled import Codec
from vqkit.modalities import codec_for, open_codec
from vqkit.modalities.image.codec import ImageAdapter, to_tensor
from vqkit.models import Tokenizer, TokenizerConfig

SCALES, K = (1, 2, 4), 64
SLOTS = sum(s * s for s in SCALES)  # 21 tokens a pyramid
F_ = 4  # rfsq_conv with two conv widths: 4 px a token, tiles of 4 tokens = 16 px


def pyramid_model(seed: int = 0) -> Tokenizer:
    torch.manual_seed(seed)
    config = TokenizerConfig(arch="rfsq_conv", conv_channels=(8, 16), quantizer="msrq",
                             quantizer_args={"dim": 8, "codebook_size": K, "patch_nums": list(SCALES)})
    model = Tokenizer(config).eval()
    with torch.no_grad():  # codes at the latents' scale (the U(±1/K) init gives a couple of distinct tokens)
        model.quantizer.codebook.normal_(0, 0.1)
    return model


@pytest.fixture(scope="module")
def codec() -> Codec[np.ndarray]:
    codec = codec_for(pyramid_model(), name="msrq-test")
    codec.tables = codec.fit_prior([photo(40, 52, seed=s) for s in range(3)])
    return codec


def uint8(x: torch.Tensor) -> np.ndarray:
    out: np.ndarray = x[0].add(1).mul(127.5).round().clamp(0, 255).permute(1, 2, 0).numpy().astype(np.uint8)
    return out


@pytest.mark.parametrize("h, w", [(19, 27), (70, 33)])
def test_round_trip_with_every_prior(codec: Codec[np.ndarray], h: int, w: int) -> None:
    assert (codec.tile, codec.margin, codec.model.downsample_factor) == (SCALES[-1], 0, F_)
    image = photo(h, w, seed=4)
    grid, side, shape = codec.tokens(image)
    tiles = (-(-h // 16), -(-w // 16))
    assert side is None and grid.shape == (1, SLOTS, *tiles)
    expected = codec.render(grid, None, shape)
    assert expected.shape == (h, w, 3)
    sizes = {}
    for prior in ("uniform", "static", "context"):
        encoded = codec.encode(image, prior)
        assert np.array_equal(codec.decode(encoded.data), expected), prior
        file = TokenFile.from_bytes(encoded.data)
        assert file.grid == grid.shape and file.tile == 16 and not file.layered and file.codebook_sizes == (K,)
        assert encoded.nominal_bits == tiles[0] * tiles[1] * SLOTS * 6
        sizes[prior] = encoded.payload_bits
    assert sizes["uniform"] == pytest.approx(tiles[0] * tiles[1] * SLOTS * 6, abs=64)


def test_each_tile_is_the_tokenizers_own_pyramid(codec: Codec[np.ndarray]) -> None:
    """Tile t of the padded image is encoded and decoded by the tokenizer alone: the codec's grid holds its
    pyramid and its pixels are the tokenizer's decode of it (seams between tiles, none inside)."""
    model = codec.model
    assert isinstance(model, Tokenizer)
    image = photo(19, 27, seed=2)
    grid = codec.tokens(image)[0]
    out = codec.decode(codec.encode(image, "context").data)
    padded = F.pad(to_tensor(image), (0, 32 - 27, 0, 32 - 19), mode="replicate")
    for ty in range(2):
        for tx in range(2):
            crop = padded[:, :, 16 * ty : 16 * ty + 16, 16 * tx : 16 * tx + 16]
            idx = model.encode(crop)
            assert torch.equal(torch.from_numpy(grid[0, :, ty, tx]), idx[0])
            ref = uint8(model.decode(idx))
            h, w = min(16, 19 - 16 * ty), min(16, 27 - 16 * tx)
            assert np.array_equal(out[16 * ty : 16 * ty + h, 16 * tx : 16 * tx + w], ref[:h, :w])
    whole = photo(16, 16, seed=3)  # one tile, no padding: the codec's decode is the tokenizer's reconstruction
    x = to_tensor(whole)
    assert np.array_equal(codec.decode(codec.encode(whole).data), uint8(model.decode(model.encode(x))))
    # the rate an evaluation counts from the forward's tokens (B, L, 1) is the file's
    bits = codec.file_bits(model.encode(x)[..., None], (3, 16, 16))
    assert bits["context"] == [codec.encode(whole, "context").file_bits]


def test_context_neighbours_on_the_pyramid_grid() -> None:
    """On the grid (L, *tiles) a slot coded in the second pass is conditioned first on slots l - 1 and l + 1 of
    its own pyramid (what nominal_summary keeps), then on its slot in the adjacent tiles; the first pass on
    nothing — so every context is built from already-decoded tokens."""
    positions = (SLOTS, 2, 3)
    first, second = passes(positions)
    nbr, valid = neighbours(positions, 1, second)
    coords = np.stack(np.unravel_index(nbr, positions), -1)  # (n, 6, 3)
    here, step = np.stack(np.unravel_index(second, positions), -1), np.array([1, 0, 0])
    assert np.array_equal(coords[:, 0][valid[:, 0]], (here - step)[valid[:, 0]])
    assert np.array_equal(coords[:, 1][valid[:, 1]], (here + step)[valid[:, 1]])
    assert np.isin(nbr[valid], first).all()
    assert not neighbours(positions, 0, first)[1].any()


def test_tiling_of_a_pyramid_is_fixed() -> None:
    model = pyramid_model()
    for tile, margin in ((8, 0), (4, 1)):
        with pytest.raises(ValueError, match="tiles of exactly its last scale"):
            Codec(model, ImageAdapter(), None, tile, margin)


def _forged(file: TokenFile, **changes: object) -> bytes:
    return dataclasses.replace(file, **changes).to_bytes()  # type: ignore[arg-type]


def test_corrupt_and_forged_files_are_refused(codec: Codec[np.ndarray]) -> None:
    data = codec.encode(photo(19, 27, seed=1)).data
    file = TokenFile.from_bytes(data)
    with pytest.raises(CorruptFileError, match="CRC32"):
        codec.decode(data[:-5])
    assert len(file.payload) >= 16
    flipped = bytearray(data)
    flipped[len(data) - 4 - len(file.payload) // 2] ^= 8  # in the payload
    with pytest.raises(CorruptFileError):
        codec.decode(bytes(flipped))
    raw = bytearray(flipped[:-4])  # the same damage with a CRC that matches: the coder refuses the payload
    with pytest.raises(CorruptFileError, match=r"not the coding|not a valid coding|beyond"):
        codec.decode(bytes(raw) + struct.pack("<I", zlib.crc32(raw)))
    for grid in ((1, SLOTS, 2, 3), (1, SLOTS - 1, 2, 2), (1, 32, 32)):  # the grid of another tiling or model
        with pytest.raises(TokenFileError, match="do not fit"):
            codec.decode(_forged(file, grid=grid))
    with pytest.raises(TokenFileError, match="tiles of 32"):
        codec.decode(_forged(file, tile=32))
    with pytest.raises(TokenFileError, match="stages"):
        codec.decode(data, stages=1)  # one stage: nothing to cut
    other = codec_for(pyramid_model(seed=1))  # the same architecture, other weights
    with pytest.raises(ModelMismatchError):
        other.decode(data)


def test_cli_encode_decode_info_and_fit_prior(codec: Codec[np.ndarray], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model"
    codec.model.save_pretrained(model)
    assert codec.tables is not None
    save_prior(model, codec.tables)
    assert open_codec(model)[0].model_id == codec.model_id
    images = tmp_path / "images"
    images.mkdir()
    for name, (h, w) in {"a": (19, 27), "b": (70, 33)}.items():
        Image.fromarray(photo(h, w, seed=len(name) + h)).save(images / f"{name}.png")
    assert main(["encode", str(images), "-o", str(tmp_path / "vqt"), "--model", str(model), "--check"]) == 0
    assert main(["decode", str(tmp_path / "vqt"), "-o", str(tmp_path / "png"), "--model", str(model)]) == 0
    for name in ("a", "b"):
        data = (tmp_path / "vqt" / f"{name}.vqt").read_bytes()
        decoded = np.asarray(Image.open(tmp_path / "png" / f"{name}.png"))
        original = np.asarray(Image.open(images / f"{name}.png"))
        assert np.array_equal(decoded, codec.decode(data))
        assert np.array_equal(decoded, codec.render(*codec.tokens(original)))
    capsys.readouterr()
    assert main(["info", str(tmp_path / "vqt" / "b.vqt"), "--model", str(model)]) == 0
    out = capsys.readouterr().out
    assert f"{SLOTS}x5x3 positions x 1 stage(s)" in out and "tiles of 16" in out and "yes" in out
    assert main(["info", str(tmp_path / "vqt" / "a.vqt"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)[0]
    assert info["token_grid"] == [1, SLOTS, 2, 2] and info["layer_bytes"] is None
    # --stages needs a model of several stages: a usage error before any work
    assert main(["encode", str(images / "a.png"), "-o", str(tmp_path / "cut"), "--model", str(model),
                 "--stages", "1"]) == 2
    # fit-prior on a folder of odd-sized images: tables of the pyramid grids, and files coded with them decode
    train = tmp_path / "data" / "train"
    train.mkdir(parents=True)
    for s in range(3):
        Image.fromarray(photo(23 + 9 * s, 41 - 5 * s, seed=s)).save(train / f"{s}.png")
    assert main(["fit-prior", str(model), "--data", str(tmp_path / "data")]) == 0
    refit = open_codec(model)[0]
    assert refit.tables is not None and refit.model_id != codec.model_id
    image = photo(19, 27, seed=8)
    assert np.array_equal(refit.decode(refit.encode(image, "context").data), codec.render(*codec.tokens(image)))
    assert np.array_equal(refit.decode((tmp_path / "vqt" / "a.vqt").read_bytes()),  # archived tables
                          codec.decode((tmp_path / "vqt" / "a.vqt").read_bytes()))


def test_evaluation_rates_of_a_pyramid_model(codec: Codec[np.ndarray]) -> None:
    """`vqkit eval`'s loop with the codec: file rates are the files' and the nominal rate counts Σ s_k² tokens
    per s_K² latent positions."""
    from vqkit.evaluate import evaluate
    from vqkit.modalities.image.scorer import ImageScorer

    assert isinstance(codec.model, Tokenizer)
    images = [photo(16, 16, seed=s) for s in range(2)]
    batch = torch.cat([to_tensor(image) for image in images])
    metrics = evaluate(codec.model, [batch], "cpu", ImageScorer(), codec=codec).metrics
    assert metrics["bits_per_pixel"] == pytest.approx(SLOTS * 6 / 256)
    files = [codec.encode(image, "context").file_bits / 256 for image in images]
    assert metrics["file_bpp"]["context"] == pytest.approx(sum(files) / 2)
