"""Embedded bitstream: a multi-stage model writes one coded layer per stage, and a file cut to its first k
stages (without the model) decodes to the k-stage reconstruction — byte for byte the file an encoder asked
for k stages writes."""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np
import pytest
import torch

from vqkit.codec import CorruptFileError, TokenFile, TokenFileError
from vqkit.codec.container import layered_payload
from vqkit.modalities import codec_for, open_codec
from vqkit.models import Tokenizer, TokenizerConfig

STAGES = 3


@pytest.fixture(scope="module")
def codec():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    config = TokenizerConfig(arch="rfsq_conv", quantizer="rfsq", conv_channels=(8, 16),
                             quantizer_args={"levels": [4, 4, 3], "num_stages": STAGES, "conditioning": "scale"})
    model = Tokenizer(config).eval()
    codec = codec_for(model, name="rfsq-test")
    codec.tables = codec.fit_prior([photo(s) for s in range(3)])
    return codec


def photo(seed: int, size: tuple[int, int] = (40, 52)) -> np.ndarray:
    """A smooth uint8 picture (H, W, 3)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: size[0], : size[1]]
    base = np.stack([np.sin(x / (5 + c) + seed) + np.cos(y / (7 + c)) for c in range(3)], -1)
    return np.clip(127 + 60 * base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("prior", ["uniform", "static", "context"])
def test_a_cut_file_is_the_file_of_fewer_stages(codec, prior: str) -> None:  # type: ignore[no-untyped-def]
    image = photo(7)
    full = codec.encode(image, prior)
    tokens = codec.tokens(image)[0]
    sizes = []
    for k in range(1, STAGES + 1):
        cut = TokenFile.from_bytes(full.data).truncated(k)
        direct = codec.encode(image, prior, stages=k)
        assert cut.to_bytes() == direct.data  # layers are independent streams: cutting = encoding fewer
        assert cut.grid[0] == k and len(cut.codebook_sizes) == k
        sizes.append(len(direct.data))
        want = codec.render(tokens[:k], None, cut.signal_shape)
        assert np.array_equal(codec.decode(direct.data), want)
        assert np.array_equal(codec.decode(full.data, stages=k), want)
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert np.array_equal(codec.decode(full.data), codec.render(tokens, None, cut.signal_shape))


def test_fewer_stages_reconstruct_coarser(codec) -> None:  # type: ignore[no-untyped-def]
    """The k-stage decode is the tokenizer's own decode of the first k stages (RFSQ's coarse-to-fine)."""
    image = photo(3, (32, 32))
    data = codec.encode(image).data
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    idx = codec.model.encode(x)
    for k in (1, 2):
        ref = ((codec.model.decode(idx[..., :k]).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        got = codec.decode(data, stages=k)
        assert np.abs(got.astype(int) - ref[0].permute(1, 2, 0).numpy().astype(int)).max() <= 1


def test_cut_and_layer_errors(codec) -> None:  # type: ignore[no-untyped-def]
    data = codec.encode(photo(1)).data
    file = TokenFile.from_bytes(data)
    assert file.layered and len(file.layers()) == STAGES
    for bad in (0, STAGES + 1, 1.5, True):
        with pytest.raises(TokenFileError, match="stages must be an integer"):
            file.truncated(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stages must be in"):
        codec.encode(photo(1), stages=STAGES + 1)
    # a layer framing that does not consume the payload is refused when parsed, not decoded into garbage
    layers = file.layers()
    torn = layered_payload(layers[:-1]) + layers[-1]  # the last layer without its length
    with pytest.raises(CorruptFileError, match="layer"):
        TokenFile.from_bytes(_with_flag(dataclasses.replace(file, payload=torn, layered=False), 1))
    # the same bytes with the flag cleared are a plain file of the wrong payload: the decoder refuses them
    with pytest.raises(CorruptFileError):
        codec.decode(dataclasses.replace(file, layered=False).to_bytes())
    # a single-stage file cannot be cut
    single = TokenFile(file.modality, file.prior, file.model_id, file.signal_shape, (1, *file.grid[1:]),
                       file.codebook_sizes[:1], b"\0" * 4, b"", file.tile)
    with pytest.raises(TokenFileError, match="cannot be cut"):
        single.truncated(1)


def _with_flag(file: TokenFile, flags: int) -> bytes:
    """``file``'s bytes with the header's flag byte replaced (CRC recomputed): what a damaged writer could leave."""
    raw = bytearray(file.to_bytes()[:-4])
    raw[5] = flags
    return bytes(raw) + struct.pack("<I", zlib.crc32(raw))


def test_cli_truncate_and_decode_stages(codec, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    from vqkit.cli import main
    from vqkit.codec.priors import save_prior

    model = tmp_path / "model"
    codec.model.save_pretrained(model)
    save_prior(model, codec.tables)
    Image.fromarray(photo(5)).save(tmp_path / "a.png")
    assert main(["encode", str(tmp_path / "a.png"), "-o", str(tmp_path / "vqt"), "--model", str(model)]) == 0
    full = tmp_path / "vqt" / "a.vqt"
    assert main(["truncate", str(full), "-o", str(tmp_path / "cut"), "--stages", "1"]) == 0
    cut = (tmp_path / "cut" / "a.vqt").read_bytes()
    assert len(cut) < full.stat().st_size and TokenFile.from_bytes(cut).grid[0] == 1
    assert main(["decode", str(full), "-o", str(tmp_path / "k1"), "--model", str(model), "--stages", "1"]) == 0
    assert main(["decode", str(tmp_path / "cut"), "-o", str(tmp_path / "c1"), "--model", str(model)]) == 0
    a, b = (np.asarray(Image.open(tmp_path / d / "a.png")) for d in ("k1", "c1"))
    assert np.array_equal(a, b)
    # a cut file cannot be asked for stages it no longer holds: the error names the file and the range
    assert main(["decode", str(tmp_path / "cut"), "-o", str(tmp_path / "c2"), "--model", str(model),
                 "--stages", "2"]) == 1
    # the shipped single-stage default cannot drop stages: a usage error before any work
    assert main(["encode", str(tmp_path / "a.png"), "-o", str(tmp_path / "d"), "--stages", "1"]) == 2
    assert not (tmp_path / "d").exists()


def test_quality_is_a_stage_count_and_decode_finds_shipped_models(codec, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    from vqkit.cli import main
    from vqkit.codec.priors import save_prior

    model = tmp_path / "model"
    codec.model.save_pretrained(model)
    save_prior(model, codec.tables)
    Image.fromarray(photo(5)).save(tmp_path / "a.png")
    sizes = []
    for q in range(1, STAGES + 1):
        out = tmp_path / f"q{q}"
        assert main(["encode", str(tmp_path / "a.png"), "-o", str(out), "--model", str(model),
                     "--quality", str(q)]) == 0
        data = (out / "a.vqt").read_bytes()
        assert TokenFile.from_bytes(data).grid[0] == q
        sizes.append(len(data))
    assert sizes == sorted(sizes)
    assert main(["encode", str(tmp_path / "a.png"), "-o", str(tmp_path / "bad"), "--model", str(model),
                 "--quality", str(STAGES + 1)]) == 2
    assert main(["encode", str(tmp_path / "a.png"), "-o", str(tmp_path / "bad"), "--model", str(model),
                 "--quality", "1", "--stages", "1"]) == 2
    # without --model, decode picks the shipped model a file names; a file of another model is an error
    assert main(["encode", str(tmp_path / "a.png"), "-o", str(tmp_path / "dflt")]) == 0
    assert main(["decode", str(tmp_path / "dflt"), "-o", str(tmp_path / "back")]) == 0
    assert (tmp_path / "back" / "a.png").is_file()
    assert main(["decode", str(tmp_path / "q1"), "-o", str(tmp_path / "none")]) == 1


def test_the_shipped_codec_family(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`--quality Q` with no --model: the Q-th point of the shipped ladder (model, stages), every one a valid
    learned-prior file of that model and stage count, decoded without --model by the id it holds; qualities
    outside the ladder refused; the shipped models are read-only."""
    from PIL import Image

    from vqkit.cli import main
    from vqkit.models.pretrained import QUALITY, check_writable, shipped

    Image.fromarray(photo(2, (48, 64))).save(tmp_path / "a.png")
    for q, (name, stages) in enumerate(QUALITY, 1):
        assert shipped(name) is not None
        assert main(["encode", str(tmp_path / "a.png"), "-o", str(tmp_path / f"q{q}"), "--quality", str(q)]) == 0
        file = TokenFile.from_bytes((tmp_path / f"q{q}" / "a.vqt").read_bytes())
        assert file.model_id == open_codec(name)[0].model_id
        assert file.grid[0] == stages and file.prior == "learned"
        assert main(["decode", str(tmp_path / f"q{q}"), "-o", str(tmp_path / f"back{q}")]) == 0
        assert np.asarray(Image.open(tmp_path / f"back{q}" / "a.png")).shape == (48, 64, 3)
    for bad in (0, len(QUALITY) + 1):
        assert main(["encode", str(tmp_path / "a.png"), "-o", str(tmp_path / "bad"), "--quality", str(bad)]) == 2
    assert not (tmp_path / "bad").exists()
    for name in {name for name, _ in QUALITY}:
        with pytest.raises(ValueError, match="read-only"):
            check_writable(name)
