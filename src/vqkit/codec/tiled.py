"""One codec for signals of any spatial rank: a token model, a modality's signal adapter, priors, the
container — images (2-D) and speech (1-D) are two instances of this code.

The data walk, one call per arrow: signal → adapter (tensor (1, C, *spatial) in [-1, 1]) → padded to a
multiple of the stride → tiles with a margin of context on every side → tokens (S, *positions) →
prior + range coder → payload → :class:`TokenFile` → bytes. Decoding reverses it and the adapter crops
to the stored shape. Tile and margin are counted in tokens, so memory stays bounded for any signal size
(a 4000×3000 photo, an hour of speech) and seams stay invisible. Tokens always carry a stage axis here.

A **token pyramid** model (``TokenModel.pyramid``: VAR's multi-scale quantizer) gives one pyramid of
L = Σ s_k^n tokens per latent map of exactly s_K positions a side, every scale depending on the whole map:
it is coded in tiles of exactly s_K tokens a side with no margin (the signal padded to a multiple of s_K·f),
each tile one pyramid, and the file's grid is (1, L, *tiles): position (l, *t) is slot l of tile t's
pyramid, scale by scale in raster order. One stage, not one per scale: the container's grid gives every
stage the same positions, and scale k holds s_k^n tokens a tile. On that grid the context prior's
neighbours of slot l are slots l ± 1 of the same pyramid (the left and right tokens of its scale's row,
but at a row's ends) and then slot l of the adjacent tiles — all decodable, as every context is. Tiles
meet with seams (no margin can be given to a pyramid).

The model id written in every file is a hash over the model's identity (its config and weights) and its
prior tables: decoding with anything else is refused.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..quantizers.layout import SymbolLayout
from ..validation import flushed_subnormals
from . import coders
from .container import MODEL_ID_BYTES, ModelMismatchError, TokenFile, TokenFileError
from .priors import Prior, PriorTables, digest_of, prior_of
from .priors.uniform import uniform_name
from .symbols import StageSpec

CODE_VECTORS_LIMIT = 1 << 20
"""Nominal stages with more codes are grouped by frequency, not by their vectors (memory)."""

Signal = TypeVar("Signal")
Method = TypeVar("Method", bound=Callable[..., Any])


def flushed(method: Method) -> Method:
    """Run a method of the codec with subnormals flushed on its device (:func:`flushed_subnormals`)."""

    @functools.wraps(method)
    def run(self: Codec[Any], *args: Any, **kwargs: Any) -> Any:
        with flushed_subnormals(self.device):
            return method(self, *args, **kwargs)

    return run  # type: ignore[return-value]  # same signature, by functools.wraps


class TokenModel(Protocol):
    """What the codec needs of a tokenizer (:class:`vqkit.models.Tokenizer` is one)."""

    @property
    def downsample_factor(self) -> int: ...
    @property
    def signal_ndim(self) -> int: ...
    @property
    def side_shape(self) -> tuple[int, ...]:
        """Shape of the float32 side information one encoded tile needs besides its tokens; () for none."""
    @property
    def pyramid(self) -> tuple[int, ...]:
        """Per-scale sides (s_1, …, s_K) of a model whose tokens are one pyramid per latent map of exactly s_K
        positions a side (``encode_tokens`` gives (1, L, S)); () for tokens aligned with the signal's positions."""
    def symbol_layout(self) -> tuple[SymbolLayout, ...]: ...
    def code_vectors(self, stage: int) -> Tensor | None: ...
    def encode_tokens(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(1, C, *spatial) -> (tokens (1, *positions, S), side information (1, *side_shape) or None)."""
    def decode_tokens(self, tokens: Tensor, side: Tensor | None) -> Tensor:
        """(1, *positions, S) -> (1, C, *spatial)."""
    def identity(self) -> bytes:
        """Bytes that change whenever decoding would (config and weights)."""
    def parameters(self) -> Iterable[torch.nn.Parameter]: ...


class SignalAdapter(Protocol[Signal]):
    """A modality's side of the codec: its signal ⇄ a float tensor, and the shapes a file may claim."""

    modality: str
    """The container's modality name (registered in :data:`vqkit.codec.container.MODALITIES`)."""
    pad_mode: str
    """How positions are padded to a multiple of the stride: 'replicate' (images) or 'constant' (zeros)."""

    def to_tensor(self, signal: Signal) -> tuple[Tensor, tuple[int, ...]]:
        """(float (1, C, *spatial) in [-1, 1], the shape the file stores); ValueError for a bad signal."""
    def allocate(self, shape: tuple[int, ...]) -> Any:
        """The output of a decode of a signal of stored ``shape``, filled tile by tile by :meth:`place`."""
    def place(self, out: Any, piece: Tensor, where: tuple[slice, ...]) -> None:
        """Write a decoded tile (1, C, *tile) at spatial ``where`` (slices of the padded signal; the part
        beyond the stored shape is dropped)."""
    def finish(self, out: Any, shape: tuple[int, ...]) -> Signal:
        """The decoded signal of stored ``shape``."""
    def spatial(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The spatial sizes of a stored shape; TokenFileError if no signal of this modality has it."""


@dataclass(frozen=True)
class Encoded:
    """One encoded signal: the file's bytes and its rates in bits. ``samples`` counts the signal's samples
    (an image's pixels, a waveform's samples): a modality derives its unit (bpp, kbps) from it."""

    data: bytes
    samples: int
    nominal_bits: float
    """tokens × Σ log2 K (what the papers quote), plus side information."""
    cross_entropy_bits: float
    """code length under the prior's model as the coder codes it (24-bit fixed point), plus side information:
    the payload is this plus at most a 32-bit word of stream end"""
    payload_bits: int
    file_bits: int

    def bits_per_sample(self) -> dict[str, float]:
        return {"nominal": self.nominal_bits / self.samples, "cross_entropy": self.cross_entropy_bits / self.samples,
                "payload": self.payload_bits / self.samples, "file": self.file_bits / self.samples}


class Codec(Generic[Signal]):
    """A token model, a signal adapter, prior tables (None: uniform only) and tiles of ``tile`` tokens with
    ``margin`` tokens of context per side (0 = one tile). A pyramid model takes tile = its last scale and
    margin = 0 only."""

    def __init__(self, model: TokenModel, adapter: SignalAdapter[Signal], tables: PriorTables | None = None,
                 tile: int = 64, margin: int = 8, name: str = "tokenizer") -> None:
        if tile < 1 or margin < 0:
            raise ValueError(f"tile ({tile}) must be >= 1 token and margin ({margin}) >= 0 tokens")
        self.pyramid = tuple(model.pyramid)
        if self.pyramid and (tile != self.pyramid[-1] or margin):
            raise ValueError(f"{name}: a token pyramid is coded in tiles of exactly its last scale "
                             f"({self.pyramid[-1]} tokens a side) without a margin, not tile={tile}, margin={margin}")
        self.model, self.adapter, self.tile, self.margin, self.name = model, adapter, tile, margin, name
        self.specs = [StageSpec.from_layout(layout) for layout in model.symbol_layout()]
        if tables is not None and list(tables.specs) != self.specs:
            raise ValueError(f"{name}: prior tables were fitted for another quantizer")
        self.tables = tables
        self.device = next(iter(model.parameters())).device
        self._identity = model.identity()
        self._ids: tuple[PriorTables | None, bytes] | None = None
        self.archived: Callable[[], Iterable[PriorTables]] = tuple
        self._archive: dict[bytes, PriorTables] | None = None
        """Earlier prior tables of this model (``prior-archive/``): files they coded still decode."""

    # -- identity -------------------------------------------------------------------------------
    @property
    def fitted_priors(self) -> tuple[str, ...]:
        """The priors a file can be written with: static and context once tables are fitted (and learned where
        it was fitted too), else uniform."""
        if self.tables is None:
            return ("uniform",)
        return ("static", "context", "learned") if self.tables.learned is not None else ("static", "context")

    @property
    def model_id(self) -> bytes:
        """First 16 bytes of SHA-256 over the model's identity and the prior tables: what decoding needs.
        Recomputed when ``tables`` is replaced (e.g. after :meth:`fit_prior`)."""
        if self._ids is None or self._ids[0] is not self.tables:
            self._ids = (self.tables, self._id_with(self.tables))
        return self._ids[1]

    def _id_with(self, tables: PriorTables | None) -> bytes:
        h = hashlib.sha256(b"vqkit.model-id.v1\0")
        h.update(self._identity)
        h.update(digest_of(tables).encode())
        return h.digest()[:MODEL_ID_BYTES]

    def tables_for(self, model_id: bytes) -> PriorTables | None:
        """The prior tables that coded a file of ``model_id``: this model's current ones or an archived set;
        ModelMismatchError if the file is another model's."""
        if model_id == self.model_id:
            return self.tables
        if self.tables is not None and model_id == self._id_with(None):
            return None  # written before the model had tables (uniform prior only)
        if self._archive is None:  # read and hashed once per codec, on the first file that needs it
            self._archive = {self._id_with(tables): tables for tables in self.archived()}
        if model_id in self._archive:
            return self._archive[model_id]
        raise ModelMismatchError(
            f"this file was encoded with model {model_id.hex()}, not with {self.name} ({self.model_id.hex()}) "
            "nor with its archived prior tables: decode it with the model (and prior tables) that encoded it"
        )

    def prior(self, name: str) -> Prior:
        return prior_of(name, self.specs, self.tables)

    # -- tokens ---------------------------------------------------------------------------------------
    def _tiles(self, positions: Sequence[int], tile: int | None = None) -> list[tuple[tuple[int, int], ...]]:
        """Inner regions ((start, stop) per axis, in tokens) of tiles of ``tile`` tokens (None: the codec's),
        in raster order."""
        step = tile or self.tile
        axes = [[(a, min(a + step, n)) for a in range(0, n, step)] for n in positions]
        return list(itertools.product(*axes))

    def _region(self, inner: tuple[tuple[int, int], ...], positions: Sequence[int]) -> tuple[slice, ...]:
        m = self.margin
        return tuple(slice(max(0, a - m), min(n, b + m)) for (a, b), n in zip(inner, positions, strict=True))

    def _positions(self, spatial: Sequence[int]) -> tuple[list[int], tuple[int, ...]]:
        """A signal's sizes -> (token positions of the signal padded to the codec's stride, the file grid's
        positions): the same for tokens aligned with the signal, (L, *tiles) for a pyramid."""
        f, side = self.model.downsample_factor, self.tile if self.pyramid else 1
        positions = [-(-n // (f * side)) * side for n in spatial]
        if not self.pyramid:
            return positions, tuple(positions)
        slots = sum(s ** len(positions) for s in self.pyramid)
        return positions, (slots, *(n // side for n in positions))

    def _slots(self, inner: tuple[tuple[int, int], ...]) -> tuple[slice | int, ...]:
        """Where the pyramid of the tile ``inner`` sits in a grid (L, *tiles, ...)."""
        return (slice(None), *(a // self.tile for a, _ in inner))

    @torch.no_grad()
    @flushed
    def tokens(self, signal: Signal) -> tuple[np.ndarray, np.ndarray | None, tuple[int, ...]]:
        """A signal -> (tokens (S, *positions) int64, side information (tiles, *side_shape) float32 or None,
        the stored shape)."""
        x, shape = self.adapter.to_tensor(signal)
        self.adapter.spatial(shape)  # what no file may hold is not encoded either (one set of limits)
        f = self.model.downsample_factor
        positions, held = self._positions(x.shape[2:])
        pad = [p for n, m in zip(reversed(x.shape[2:]), reversed(positions), strict=True) for p in (0, m * f - n)]
        if any(pad):
            x = F.pad(x, pad, mode=self.adapter.pad_mode)
        x = x.to(self.device)
        grid = np.zeros((len(self.specs), *held), np.int64)
        sides = []
        for inner in self._tiles(positions):
            region = self._region(inner, positions)
            crop = x[(slice(None), slice(None), *(slice(r.start * f, r.stop * f) for r in region))]
            idx, side = self.model.encode_tokens(crop)
            if side is not None:
                sides.append(side[0].cpu().numpy())
            if self.pyramid:  # (1, L, S): the tile's pyramid
                grid[(slice(None), *self._slots(inner))] = idx[0].T.cpu().numpy()
                continue
            keep = tuple(slice(a - r.start, b - r.start) for (a, b), r in zip(inner, region, strict=True))
            inner_tokens = idx[0][keep].cpu().numpy()  # (*inner, S)
            grid[(slice(None), *(slice(a, b) for a, b in inner))] = np.moveaxis(inner_tokens, -1, 0)
        return grid, (np.stack(sides).astype("<f4") if sides else None), shape

    @torch.no_grad()
    @flushed
    def render(self, grid: np.ndarray, side: np.ndarray | None, shape: tuple[int, ...],
               tile: int | None = None) -> Signal:
        """Tokens (S, *positions) -> the signal of stored ``shape``, tile by tile with a margin, each tile
        written into the output as it is decoded: memory is the output plus one tile, whatever the size.
        ``tile``: the tiles (in tokens) the side information was encoded in, when not the codec's own."""
        f, positions = self.model.downsample_factor, grid.shape[1:]
        if self.pyramid:  # (S, L, *tiles): the signal's token positions are the tiles' s_K each
            positions = tuple(n * self.tile for n in grid.shape[2:])
        tokens = torch.from_numpy(np.moveaxis(grid, 0, -1)).to(self.device)  # (*positions, S); (L, *tiles, S)
        out = self.adapter.allocate(shape)
        for t, inner in enumerate(self._tiles(positions, tile)):
            region = self._region(inner, positions)
            side_t = None if side is None else torch.from_numpy(side[t][None].astype(np.float32)).to(self.device)
            part = tokens[self._slots(inner) if self.pyramid else region]  # (*region, S) or a pyramid (L, S)
            piece = self.model.decode_tokens(part[None], side_t)
            src = tuple(slice((a - r.start) * f, (b - r.start) * f) for (a, b), r in zip(inner, region, strict=True))
            self.adapter.place(out, piece[(slice(None), slice(None), *src)].float().cpu(),
                               tuple(slice(a * f, b * f) for a, b in inner))
        return self.adapter.finish(out, shape)

    # -- files -----------------------------------------------------------------------------------
    def encode(self, signal: Signal, prior: str = "context", stages: int | None = None) -> Encoded:
        """A signal -> the ``.vqt`` bytes and their rates; ``stages``: keep only the first k stages of a
        multi-stage model (the file is the full one cut, :meth:`TokenFile.truncated`)."""
        grid, side, shape = self.tokens(signal)
        return self.pack(grid, b"" if side is None else side.tobytes(), shape, prior, stages)

    def pack(self, grid: np.ndarray, side: bytes, shape: tuple[int, ...], prior: str,
             stages: int | None = None) -> Encoded:
        """Tokens (S, *positions) and side information of a signal of stored ``shape`` -> file and rates.
        A model of several stages writes a layered payload (each stage its own stream), so files can be cut."""
        if prior == "uniform":
            prior = uniform_name(self.specs)  # the current version (what coding split codebooks needs)
        layered = len(self.specs) > 1
        if stages is not None and not layered:
            raise ValueError(f"{self.name} has one stage: only a model of several stages (RFSQ, RVQ) can keep fewer")
        if stages is not None and not 1 <= stages <= len(self.specs):
            raise ValueError(f"{self.name}: stages must be in 1..{len(self.specs)}, got {stages}")
        k = len(self.specs) if stages is None else stages
        payload, ce = coders.encode(self.prior(prior).prefix(k), grid[:k], layered)
        f = self.model.downsample_factor
        file = TokenFile(self.adapter.modality, prior, self.model_id, shape, tuple(grid[:k].shape),
                         tuple(s.size for s in self.specs[:k]), payload, side, self.tile * f, layered)
        data, side_bits = file.to_bytes(), 8 * len(side)
        nominal = math.prod(grid.shape[1:]) * sum(math.log2(s.size) for s in self.specs[:k])
        samples = math.prod(self.adapter.spatial(shape))
        return Encoded(data, samples, nominal + side_bits, ce + side_bits, 8 * len(payload), 8 * len(data))

    def decode(self, data: bytes, stages: int | None = None) -> Signal:
        """``.vqt`` bytes -> the signal; TokenFileError (a ValueError) naming what is wrong. ``stages``:
        decode only the first k stages of a layered file (the coarser signal, from a prefix of the payload)."""
        file = TokenFile.from_bytes(data)
        if stages is not None:
            file = file.truncated(stages)
        tables = self.tables_for(file.model_id)
        grid, side = self.check(file, check_id=False)
        prior = prior_of(file.prior, self.specs, tables).prefix(grid[0])
        tokens = coders.decode(prior, file.payload, grid, file.layered)
        return self.render(tokens, side, file.signal_shape, self.file_tile(file))

    def file_tile(self, file: TokenFile) -> int:
        """The tiles (in tokens) ``file`` was encoded in: this codec's, or — a file written with smaller tiles,
        e.g. by an earlier vqkit (256 px before 512) — the file's own, down to a quarter of this codec's (smaller
        ones would only cost decoding time; larger ones, memory: a forged file could ask for one tile of the
        whole image); TokenFileError else. A pyramid model's tiles are fixed by its last scale."""
        f, tile = self.model.downsample_factor, self.tile
        low = tile if self.pyramid else max(1, tile // 4)
        if file.tile % f or not low <= file.tile // f <= tile:
            raise TokenFileError(f"file was encoded with tiles of {file.tile}, this codec uses {tile * f}"
                                 + ("" if self.pyramid else f" (and decodes tiles of {low * f} to {tile * f})"))
        return file.tile // f

    def check(self, file: TokenFile, check_id: bool = True) -> tuple[tuple[int, ...], np.ndarray | None]:
        """(the token grid ``file`` must hold, its side information) for this codec; TokenFileError if the
        file cannot be ours (another model, modality or tiling, a grid or side information that does not fit)."""
        if check_id:
            self.tables_for(file.model_id)
        if file.modality != self.adapter.modality:
            raise TokenFileError(f"this is an {file.modality} token file; {self.name} decodes {self.adapter.modality}")
        tile = self.file_tile(file)
        positions, held_positions = self._positions(self.adapter.spatial(file.signal_shape))
        held = file.grid[0] if file.layered and len(self.specs) > 1 else len(self.specs)  # a cut file: fewer
        grid = (min(held, len(self.specs)), *held_positions)
        if file.layered and len(self.specs) == 1:
            raise TokenFileError(f"a layered file, but {self.name} has one stage")
        if file.grid != grid or file.codebook_sizes != tuple(s.size for s in self.specs[: grid[0]]):
            raise TokenFileError(f"token grid {file.grid} / sizes {file.codebook_sizes} do not fit this model "
                                 f"{(len(self.specs), *held_positions)}")
        side_shape = tuple(self.model.side_shape)
        if not side_shape:
            if file.side_info:
                raise TokenFileError(f"unexpected {len(file.side_info)} bytes of side information")
            return grid, None
        tiles = len(self._tiles(positions, tile))
        expected = 4 * tiles * math.prod(side_shape)
        if len(file.side_info) != expected:
            raise TokenFileError(f"side information is {len(file.side_info)} bytes, expected {expected}")
        side = np.frombuffer(file.side_info, "<f4").reshape(tiles, *side_shape)
        if not np.isfinite(side).all():  # a decoder would turn it into NaN pixels: never garbage out
            raise TokenFileError("side information holds NaN or Inf: corrupt or forged file")
        return grid, side

    def file_bits(self, tokens: Tensor, shape: tuple[int, ...]) -> dict[str, list[float]]:
        """Whole-file bits, per prior the model has, of each item's tokens (B, *positions, S) as a tokenizer's
        forward gave them, for signals of stored ``shape``; side information counted at its real size. A
        pyramid model's forward gives one pyramid (B, L, S) an item: one tile."""
        grids = np.moveaxis(tokens.cpu().numpy(), -1, 1)
        if self.pyramid:
            grids = grids.reshape(*grids.shape, *(1,) * len(self.adapter.spatial(shape)))
        tiles = 1 if self.pyramid else len(self._tiles(grids.shape[2:]))
        side = b"\0" * (4 * tiles * math.prod(self.model.side_shape)) if self.model.side_shape else b""
        return {p: [float(self.pack(g, side, shape, p).file_bits) for g in grids] for p in self.fitted_priors}

    def fit_prior(self, signals: Iterable[Signal], learned: bool = False) -> PriorTables:
        """Count the tokens of ``signals`` (whole, as the codec encodes them); ``learned``: also train the
        learned prior on them."""
        grids = [self.tokens(signal)[0] for signal in signals]
        vectors: list[Any] = []
        for s, spec in enumerate(self.specs):
            codes = None if spec.ordinal or spec.size > CODE_VECTORS_LIMIT else self.model.code_vectors(s)
            vectors.append(None if codes is None else codes.float().cpu().numpy())
        return PriorTables.fit(self.specs, grids, vectors, learned)
