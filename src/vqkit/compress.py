"""Images ⇄ ``.vqt`` files: pad and tile, ``Tokenizer.encode``, a prior, the container — and back.

The data walk is one call per arrow: image → tiles → tokens (S, h, w) → prior + range coder →
payload → :class:`~vqkit.codec.TokenFile` → bytes. Decoding reverses it and crops to the stored
size. Images of any size are padded (edge replication) to a multiple of the model's stride and
processed in tiles of ``tile`` pixels with a margin of context on every side, so that memory stays
bounded (a 4000×3000 photo encodes in a few hundred MB) and tile seams stay invisible.

A model directory (``save_pretrained``) may hold ``prior.safetensors``: the integer tables of the
static and context priors, fitted on training images (:func:`fit_prior`). The model id written in
every file is a hash over the config, the weights and those tables: decoding with anything else is
refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Self, TypeVar

import numpy as np
import safetensors.numpy
import torch
import torch.nn.functional as F
from torch import Tensor

from .codec import PriorModel, StageSpec, TokenFile, coders
from .codec.container import MODEL_ID_BYTES, ModelMismatchError, TokenFileError
from .modalities.image.datasets import from_uint8, training_images
from .modalities.image.datasets import to_uint8 as images_to_uint8
from .models import Tokenizer
from .models import pretrained as stored
from .quantizers import FSQ, LFQ, Quantizer, ResidualQuantizer

PRIOR_NAME = "prior.safetensors"
PRIOR_FORMAT = "vqkit.prior.v1"
DEFAULT_TILE = 256
DEFAULT_MARGIN = 32
MAX_PIXELS = 1 << 27
"""Largest image a file may claim (134 MP, e.g. 11,585²): checked before anything is allocated."""


# -- the quantizer's symbols -----------------------------------------------------------------
def _stages(quantizer: Quantizer) -> list[Quantizer]:
    return quantizer._stage_list if isinstance(quantizer, ResidualQuantizer) else [quantizer]


def stage_specs(quantizer: Quantizer) -> list[StageSpec]:
    """One :class:`StageSpec` per stage: FSQ digits, LFQ bits, otherwise one nominal index."""
    specs = []
    for q in _stages(quantizer):
        if isinstance(q, FSQ):
            specs.append(StageSpec.digits(q.levels))
        elif isinstance(q, LFQ):
            specs.append(StageSpec.digits((2,) * q.bits))
        else:
            specs.append(StageSpec.nominal(q.codebook_size))
    return specs


@torch.no_grad()
def code_embeddings(quantizer: Quantizer, limit: int = 1 << 20) -> list[np.ndarray | None]:
    """Per stage, the code vectors (K, dim) of nominal stages (to bucket similar codes); None else."""
    out: list[np.ndarray | None] = []
    for q in _stages(quantizer):
        if isinstance(q, FSQ | LFQ) or q.codebook_size > limit:
            out.append(None)
            continue
        device = next((b.device for b in q.buffers()), torch.device("cpu"))
        codes = [q._decode(torch.arange(i, min(i + 65536, q.codebook_size), device=device))
                 for i in range(0, q.codebook_size, 65536)]
        out.append(torch.cat(codes).float().cpu().numpy())
    return out


# -- prior tables on disk ------------------------------------------------------------------------
def _tables_digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        h.update(key.encode() + str(arrays[key].dtype).encode() + str(arrays[key].shape).encode())
        h.update(np.ascontiguousarray(arrays[key]).tobytes())
    return h.hexdigest()


def prior_digest(model: PriorModel | None) -> str:
    """SHA-256 of the tables' contents (not of one serialization of them); '' for no tables."""
    if model is None:
        return ""
    arrays, meta = model.to_arrays()
    return hashlib.sha256((meta + _tables_digest(arrays)).encode()).hexdigest()


def prior_bytes(model: PriorModel) -> bytes:
    """The tables as safetensors, with the SHA-256 of their contents in the metadata (safetensors has
    no checksum: a flipped count would otherwise load silently)."""
    arrays, meta = model.to_arrays()
    return safetensors.numpy.save(arrays, metadata={"format": PRIOR_FORMAT, "prior": meta,
                                                    "sha256": _tables_digest(arrays)})


def check_writable(directory: str | os.PathLike[str]) -> None:
    """ValueError for the shipped default model (new tables would change its model id)."""
    if resolve_model_dir(directory).resolve() == stored.resolve("default").resolve():
        raise ValueError("the default tokenizer shipped with vqkit is read-only: copy its folder "
                         f"({stored.resolve('default')}) and fit the copy")


def save_prior(directory: str | os.PathLike[str], model: PriorModel) -> Path:
    """Write the tables to ``directory/prior.safetensors`` atomically (never into the shipped default:
    new tables change its model id, and files encoded before could no longer be decoded)."""
    check_writable(directory)
    path = Path(directory) / PRIOR_NAME
    stored.atomic_write(path, prior_bytes(model))
    return path


def load_prior(directory: str | os.PathLike[str], specs: list[StageSpec]) -> PriorModel | None:
    """The tables (None if the model has none); ValueError if damaged or fitted for another quantizer."""
    path = Path(directory) / PRIOR_NAME
    if not path.is_file():
        return None
    blob = path.read_bytes()
    try:
        arrays = safetensors.numpy.load(blob)
        (header_len,) = struct.unpack("<Q", blob[:8])  # safetensors: u64 length, JSON header, data
        meta = json.loads(blob[8 : 8 + header_len]).get("__metadata__") or {}
    except Exception as err:  # SafetensorError or anything a damaged header provokes
        raise ValueError(f"{path}: corrupt or truncated prior tables ({err})") from err
    if meta.get("format") != PRIOR_FORMAT:
        raise ValueError(f"{path}: not vqkit prior tables (format {meta.get('format')!r})")
    if meta.get("sha256") != _tables_digest(arrays):
        raise ValueError(f"{path}: contents differ from their recorded SHA-256: the file is corrupt")
    try:
        model = PriorModel.from_arrays(arrays, meta.get("prior", "{}"))
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: invalid prior tables: {err}") from err
    if list(model.specs) != specs:
        raise ValueError(f"{path}: prior tables were fitted for another quantizer ({model.specs} vs {specs})")
    return model


# -- images in and out -----------------------------------------------------------------------------
def to_tensor(image: np.ndarray) -> Tensor:
    """uint8 (H, W, C), C in {1, 3, 4} -> float (1, 3, H, W) in [-1, 1]; grey is replicated, alpha dropped."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3, 4) or 0 in image.shape:
        raise ValueError(f"expected a uint8 image (H, W, 1|3|4), got {image.dtype} {image.shape}")
    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[..., :3]
    return from_uint8(torch.from_numpy(np.array(rgb, copy=True))[None], channels_last=True)


def to_uint8(images: Tensor, channels: int) -> np.ndarray:
    """float (1, 3, H, W) in [-1, 1] -> uint8 (H, W, channels); channels 1 = ITU-R 601 luma."""
    rgb = images_to_uint8(images[0].cpu(), channels_last=True).numpy()
    if channels == 1:
        luma = rgb @ np.array([0.299, 0.587, 0.114])
        grey: np.ndarray = np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None]
        return grey
    out: np.ndarray = rgb
    return out


@dataclass(frozen=True)
class Encoded:
    """One encoded signal: the file's bytes and its rates in bits. ``pixels`` counts the image's pixels
    (divide by it for bits per pixel) — or, for speech, the waveform's samples."""

    data: bytes
    pixels: int
    nominal_bits: float
    """tokens × Σ log2 K (what the papers quote), plus side information."""
    cross_entropy_bits: float
    """ideal code length under the prior's model, plus side information"""
    payload_bits: int
    file_bits: int

    def bpp(self) -> dict[str, float]:
        return {"nominal": self.nominal_bits / self.pixels, "cross_entropy": self.cross_entropy_bits / self.pixels,
                "payload": self.payload_bits / self.pixels, "file": self.file_bits / self.pixels}


Signal = TypeVar("Signal")


class Codec(Generic[Signal]):
    """A tokenizer, its prior tables and its model id; subclasses add a modality's signal handling
    (:class:`ImageCodec`, :class:`vqkit.compress_audio.AudioCodec`)."""

    modality = "image"

    def encode(self, signal: Signal, prior: str = "context") -> Encoded:
        """A signal -> the ``.vqt`` bytes and their rates."""
        raise NotImplementedError

    def decode(self, data: bytes) -> Signal:
        """``.vqt`` bytes -> the signal; TokenFileError (a ValueError) naming what is wrong."""
        raise NotImplementedError

    def __init__(self, tokenizer: Tokenizer, prior: PriorModel | None = None, tile: int = DEFAULT_TILE,
                 margin: int = DEFAULT_MARGIN, name: str = "tokenizer") -> None:
        f = tokenizer.downsample_factor
        if tile < f or tile % f or margin < 0 or margin % f:
            raise ValueError(f"tile ({tile}) and margin ({margin}) must be multiples of the stride {f}, tile > 0")
        self.tokenizer, self.tile, self.margin, self.name = tokenizer.eval(), tile, margin, name
        self.specs = stage_specs(tokenizer.quantizer)
        self.prior = prior
        self.device = next(tokenizer.parameters()).device
        # what save_pretrained writes and records in config.json: a saved and an in-memory model agree
        self._weights = hashlib.sha256(stored.weights_blob(tokenizer.state_dict())).hexdigest()
        self._ids: tuple[PriorModel | None, bytes] | None = None

    @property
    def fitted_priors(self) -> tuple[str, ...]:
        """The priors a file can be written with: static and context once tables are fitted, else uniform."""
        return ("static", "context") if self.prior is not None else ("uniform",)

    @property
    def model_id(self) -> bytes:
        """First 16 bytes of SHA-256 over the config, the weights and the prior tables: what decoding needs.
        Recomputed when ``prior`` is replaced (e.g. after :func:`fit_prior`)."""
        if self._ids is None or self._ids[0] is not self.prior:
            h = hashlib.sha256(b"vqkit.model-id.v1\0")
            h.update(json.dumps(self.tokenizer.config.to_dict(), sort_keys=True).encode())
            h.update(self._weights.encode())
            h.update(prior_digest(self.prior).encode())
            self._ids = (self.prior, h.digest()[:MODEL_ID_BYTES])
        return self._ids[1]

    @classmethod
    def from_pretrained(cls, name: str | os.PathLike[str] = "default", device: str | torch.device = "cpu",
                        **options: int) -> Self:
        """Load ``"default"`` (shipped in the package) or a ``save_pretrained`` / run directory."""
        directory = resolve_model_dir(name)
        tokenizer = Tokenizer.from_pretrained(directory, device=device)
        return cls(tokenizer, load_prior(directory, stage_specs(tokenizer.quantizer)), name=str(name), **options)

    @property
    def side_info(self) -> bool:
        return self.tokenizer.quantizer.side_bits_per_sample > 0

    def token_file(self, grid: np.ndarray, side: bytes, signal_shape: tuple[int, ...], prior: str
                   ) -> tuple[bytes, int, float]:
        """Tokens (S, *positions) -> (the ``.vqt`` bytes, payload bytes, the prior's cross-entropy bits)."""
        payload, ce = coders.encode(self._prior_model(prior), prior, grid)
        file = TokenFile(self.modality, prior, self.model_id, signal_shape, tuple(grid.shape),
                         tuple(s.size for s in self.specs), payload, side, self.tile)
        return file.to_bytes(), len(payload), ce

    def check_model(self, file: TokenFile) -> None:
        """TokenFileError unless ``file`` was encoded by this model, for this modality, with these tiles."""
        if file.model_id != self.model_id:
            raise ModelMismatchError(
                f"this file was encoded with model {file.model_id.hex()}, not with {self.name} "
                f"({self.model_id.hex()}): decode it with the model (and prior tables) that encoded it"
            )
        if file.modality != self.modality:
            raise TokenFileError(f"this is an {file.modality} token file; {self.name} decodes {self.modality}")
        if file.tile != self.tile:
            raise TokenFileError(f"file was encoded with tiles of {file.tile}, this codec uses {self.tile}")

    def _prior_model(self, prior: str) -> PriorModel:
        if prior == "uniform":
            return PriorModel.uniform(self.specs)
        if self.prior is None:
            raise ValueError(f"{self.name} has no prior tables ({PRIOR_NAME}): use --prior uniform, "
                             "or fit them with `vqkit fit-prior RUN_DIR --data DIR`")
        return self.prior


class ImageCodec(Codec[np.ndarray]):
    """Images ⇄ ``.vqt`` bytes: padded, tiled with a margin, cropped back."""

    # -- tokens ------------------------------------------------------------------------------
    def _tiles(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """Inner regions (y0, y1, x0, x1) of the tiles of a padded image, in raster order."""
        return [(y, min(y + self.tile, height), x, min(x + self.tile, width))
                for y in range(0, height, self.tile) for x in range(0, width, self.tile)]

    def _padded(self, image: np.ndarray) -> Tensor:
        f = self.tokenizer.downsample_factor
        x = to_tensor(image).to(self.device)
        pad_h, pad_w = -x.shape[2] % f, -x.shape[3] % f
        return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x

    @torch.no_grad()
    def tokens(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 (H, W, C) -> (tokens (S, h, w) int64, side information (tiles, S, 2, dim) or None)."""
        x, f, m = self._padded(image), self.tokenizer.downsample_factor, self.margin
        hp, wp = x.shape[2:]
        grid = np.zeros((len(self.specs), hp // f, wp // f), np.int64)
        sides = []
        for y0, y1, x0, x1 in self._tiles(hp, wp):
            ey0, ex0 = max(0, y0 - m), max(0, x0 - m)
            crop = x[:, :, ey0 : min(hp, y1 + m), ex0 : min(wp, x1 + m)]
            if self.side_info:
                idx, side = self.tokenizer.encode_with_side_info(crop)
                sides.append(side[0].cpu().numpy())
            else:
                idx = self.tokenizer.encode(crop)
            idx = idx[0] if idx.ndim == 4 else idx[0, ..., None]  # (h, w, S)
            ty, tx = (y0 - ey0) // f, (x0 - ex0) // f
            inner = idx[ty : ty + (y1 - y0) // f, tx : tx + (x1 - x0) // f]
            grid[:, y0 // f : y1 // f, x0 // f : x1 // f] = inner.permute(2, 0, 1).cpu().numpy()
        return grid, (np.stack(sides).astype("<f4") if sides else None)

    @torch.no_grad()
    def render(self, grid: np.ndarray, side: np.ndarray | None, height: int, width: int, channels: int) -> np.ndarray:
        """Tokens (S, h, w) -> uint8 (height, width, channels), tile by tile with a token margin."""
        f, m = self.tokenizer.downsample_factor, self.margin // self.tokenizer.downsample_factor
        hp, wp = grid.shape[1] * f, grid.shape[2] * f
        out = torch.zeros(1, 3, hp, wp)
        tokens = torch.from_numpy(grid).to(self.device)
        for t, (y0, y1, x0, x1) in enumerate(self._tiles(hp, wp)):
            ty0, tx0 = max(0, y0 // f - m), max(0, x0 // f - m)
            idx = tokens[:, ty0 : min(grid.shape[1], y1 // f + m), tx0 : min(grid.shape[2], x1 // f + m)]
            idx = idx.permute(1, 2, 0)[None] if self.tokenizer.residual else idx[0][None]
            side_t = None if side is None else torch.from_numpy(side[t][None].astype(np.float32)).to(self.device)
            pixels = self.tokenizer.decode(idx, side_info=side_t) if side_t is not None else self.tokenizer.decode(idx)
            oy, ox = y0 - ty0 * f, x0 - tx0 * f
            out[:, :, y0:y1, x0:x1] = pixels[:, :, oy : oy + y1 - y0, ox : ox + x1 - x0].float().cpu()
        return to_uint8(out[:, :, :height, :width], channels)

    # -- files -------------------------------------------------------------------------------
    def encode(self, image: np.ndarray, prior: str = "context") -> Encoded:
        """uint8 (H, W, C) -> the ``.vqt`` bytes and their rates."""
        grid, side = self.tokens(image)
        return self.pack(grid, b"" if side is None else side.tobytes(), image.shape, prior)

    def pack(self, grid: np.ndarray, side: bytes, shape: tuple[int, ...], prior: str) -> Encoded:
        """Tokens (S, h, w) and side information of an image of ``shape`` (H, W, C) -> file and rates."""
        height, width, channels = shape
        data, payload, ce = self.token_file(grid, side, (channels, height, width), prior)
        side_bits = 8 * len(side)
        nominal = grid[0].size * sum(math.log2(s.size) for s in self.specs)
        return Encoded(data, height * width, nominal + side_bits, ce + side_bits, 8 * payload, 8 * len(data))

    def decode(self, data: bytes) -> np.ndarray:
        """``.vqt`` bytes -> uint8 (H, W, C); TokenFileError (a ValueError) naming what is wrong."""
        file = TokenFile.from_bytes(data)
        grid = self.check(file)
        tokens = coders.decode(self._prior_model(file.prior), file.prior, file.payload, grid)
        side = None
        if self.side_info:
            n_tiles = len(self._tiles(grid[1] * self.tokenizer.downsample_factor,
                                      grid[2] * self.tokenizer.downsample_factor))
            side = np.frombuffer(file.side_info, "<f4").reshape(n_tiles, len(self.specs), 2, -1)
        channels, height, width = file.signal_shape
        return self.render(tokens, side, height, width, channels)

    def check(self, file: TokenFile) -> tuple[int, ...]:
        """The token grid ``file`` must hold for this codec; TokenFileError if it cannot be ours."""
        self.check_model(file)
        if len(file.signal_shape) != 3 or file.signal_shape[0] not in (1, 3, 4):
            raise TokenFileError(f"not an image's shape: {file.signal_shape}")
        if file.signal_shape[1] * file.signal_shape[2] > MAX_PIXELS:
            raise TokenFileError(f"image of {file.signal_shape[2]}x{file.signal_shape[1]} pixels is larger than the "
                                 f"{MAX_PIXELS:,} pixels vqkit decodes: corrupt or forged file")
        f = self.tokenizer.downsample_factor
        _, height, width = file.signal_shape
        grid = (len(self.specs), -(-height // f), -(-width // f))
        if file.grid != grid or file.codebook_sizes != tuple(s.size for s in self.specs):
            raise TokenFileError(f"token grid {file.grid} / sizes {file.codebook_sizes} do not fit this model {grid}")
        if self.side_info:
            n_tiles = len(self._tiles(grid[1] * f, grid[2] * f))
            expected = 4 * n_tiles * len(self.specs) * 2 * self.tokenizer.quantizer.dim
            if len(file.side_info) != expected:
                raise TokenFileError(f"side information is {len(file.side_info)} bytes, expected {expected}")
        elif file.side_info:
            raise TokenFileError(f"unexpected {len(file.side_info)} bytes of side information")
        return grid

    def file_rates(self, indices: Tensor, height: int, width: int) -> dict[str, list[float]]:
        """Whole-file bits per pixel, per prior the model has, of each image's tokens (B, h, w[, S])
        as they come out of the tokenizer; side information counted at its real size."""
        side = b"\0" * (self.tokenizer.quantizer.side_bits_per_sample // 8)
        grids = (indices if indices.ndim == 4 else indices[..., None]).permute(0, 3, 1, 2).cpu().numpy()
        priors = self.fitted_priors
        return {p: [self.pack(g, side, (height, width, 3), p).bpp()["file"] for g in grids] for p in priors}


def fit_prior(codec: ImageCodec, images: Iterable[np.ndarray]) -> PriorModel:
    """Count the tokens of ``images`` (whole images, as the codec encodes them)."""
    grids = [codec.tokens(image)[0] for image in images]
    return PriorModel.fit(codec.specs, grids, code_embeddings(codec.tokenizer.quantizer))


def fit_and_save_prior(model_dir: str | os.PathLike[str], data: str, max_images: int = 0,
                       device: str | torch.device = "cpu", progress: bool = False, *, bad_files: str = "skip",
                       flat: str = "holdout") -> Path:
    """Fit the static and context tables of the model in ``model_dir`` on ``data``'s training images
    and write them beside it (``prior.safetensors``); returns that path. ``bad_files`` and ``flat`` as
    in :func:`vqkit.modalities.image.datasets.training_images` (a run passes its own, so the prior sees its data)."""
    codec = ImageCodec.from_pretrained(model_dir, device=device)
    images: Iterable[np.ndarray] = training_images(data, max_images, bad_files=bad_files, flat=flat)
    if progress:
        from tqdm import tqdm

        images = tqdm(images, desc="fit-prior", unit="image", total=max_images or None, file=sys.stderr)
    return save_prior(resolve_model_dir(model_dir), fit_prior(codec, images))


def resolve_model_dir(name: str | os.PathLike[str]) -> Path:
    """``"default"``, a ``save_pretrained`` directory, or a run directory (its ``final/``)."""
    return stored.resolve(name)
