"""The ``.vqt`` token file: one signal's tokens, entropy coded, in a self-checking container.

Layout (little-endian; ``varint`` = unsigned LEB128, at most 10 bytes)::

    magic        4 bytes  b"VQT\\x00"
    version      u8       format major version; a reader refuses versions it does not know
    flags        u8       bit 0 = layered payload (below); the other bits are reserved and must be 0
    modality     u8       0 = image, 1 = audio (MODALITIES; a new modality registers its code)
    prior        u8       0 = uniform, 1 = static, 2 = context, 3 = uniform.v2, 4 = learned: prior class and
                          version (PRIORS)
    model_id     16 bytes first 16 bytes of the SHA-256 over what decoding needs (config, weights, prior tables)
    signal       varint n, then n varints: the original signal's shape (image: C, H, W)
    grid         varint n, then n varints: the token grid (stages, *positions), e.g. (S, h, w)
    tile         varint   the encoder's tile size in signal units (pixels per side, samples), 0 = untiled
    sizes        one varint per stage: K, the codebook size of that stage
    side         varint length, then that many bytes (e.g. instance-LayerNorm statistics)
    payload      varint length, then that many bytes: the entropy-coded tokens
    crc32        u32      zlib.crc32 of every byte above

A **layered** payload (flag bit 0) codes each stage in its own range-coder stream, stage after stage:
``varint length, bytes`` per stage present. Stage k's probabilities depend only on stages < k, so the
first k layers alone decode to the coarser signal of k stages: :meth:`TokenFile.truncated` cuts a file
to its first k stages without the model (an embedded bitstream, as JPEG 2000's quality layers), and the
grid and codebook sizes of a cut file name the stages it still holds.

Every size is checked against a cap before anything is allocated, and the whole file must be
consumed: trailing bytes are an error. Parsing lives here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import numbers
import struct
import zlib
from dataclasses import dataclass

MAGIC = b"VQT\x00"
VERSION = 1
MODALITIES = {"image": 0, "audio": 1}
"""The signal kinds a file may hold (the header's modality byte); a new modality registers its own."""
PRIORS = {"uniform": 0, "static": 1, "context": 2, "uniform.v2": 3, "learned": 4}
"""Prior classes (and versions: a new version of a prior is a new code) a file may be coded with."""


def register(table: dict[str, int], name: str, code: int) -> None:
    """Add ``name`` with header byte ``code`` to :data:`MODALITIES` or :data:`PRIORS`; a name or code
    already taken by something else is refused (two meanings for one byte would misread files)."""
    if not 0 <= code <= 255:
        raise ValueError(f"header code {code} is not a byte")
    if table.get(name, code) != code or any(c == code and n != name for n, c in table.items()):
        raise ValueError(f"{name!r} -> {code} clashes with the registered codes {table}")
    table[name] = code
MODEL_ID_BYTES = 16
FLAG_LAYERED = 0x01
KNOWN_FLAGS = FLAG_LAYERED

# Caps: far above any real use, low enough that a hostile header cannot make us allocate much.
MAX_DIMS = 4
MAX_DIM = 1 << 32
MAX_TOKENS = 1 << 30
MAX_STAGES = 64
MAX_CODEBOOK = 1 << 24
MAX_SIDE_BYTES = 1 << 26
MAX_PAYLOAD_BYTES = 1 << 32


class TokenFileError(ValueError):
    """A token file that cannot be decoded: the message names the cause."""


class CorruptFileError(TokenFileError):
    """Bytes damaged, truncated or not a token file."""


class UnsupportedVersionError(TokenFileError):
    """Written by a newer vqkit (a format version this one does not read)."""


class ModelMismatchError(TokenFileError):
    """Encoded with another model (or other prior tables) than the one given to decode it."""


@dataclass(frozen=True)
class TokenFile:
    """The parsed contents of a ``.vqt`` file (no tokens: those are in ``payload``, coded)."""

    modality: str
    prior: str
    model_id: bytes
    signal_shape: tuple[int, ...]
    grid: tuple[int, ...]
    codebook_sizes: tuple[int, ...]
    payload: bytes
    side_info: bytes = b""
    tile: int = 0
    layered: bool = False

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise TokenFileError(f"unknown modality {self.modality!r}; known: {sorted(MODALITIES)}")
        if self.prior not in PRIORS:
            raise TokenFileError(f"unknown prior {self.prior!r}; known: {sorted(PRIORS)}")
        if len(self.model_id) != MODEL_ID_BYTES:
            raise TokenFileError(f"model_id must be {MODEL_ID_BYTES} bytes, got {len(self.model_id)}")
        _check_shape("signal shape", self.signal_shape)
        _check_shape("token grid", self.grid)
        if len(self.grid) < 2:
            raise TokenFileError(f"token grid must be (stages, *positions), got {self.grid}")
        tokens = 1
        for d in self.grid:
            tokens *= d
        if tokens > MAX_TOKENS:
            raise TokenFileError(f"token grid {self.grid} has {tokens} tokens, more than the cap {MAX_TOKENS}")
        if not 1 <= self.grid[0] <= MAX_STAGES:
            raise TokenFileError(f"{self.grid[0]} stages is outside 1..{MAX_STAGES}")
        if len(self.codebook_sizes) != self.grid[0]:
            raise TokenFileError(f"{len(self.codebook_sizes)} codebook sizes for {self.grid[0]} stages")
        for k in self.codebook_sizes:
            if not 2 <= k <= MAX_CODEBOOK:
                raise TokenFileError(f"codebook size {k} is outside 2..{MAX_CODEBOOK}")
        if not 0 <= self.tile <= MAX_DIM:
            raise TokenFileError(f"tile {self.tile} is outside 0..{MAX_DIM}")
        if len(self.side_info) > MAX_SIDE_BYTES or len(self.payload) > MAX_PAYLOAD_BYTES:
            raise TokenFileError("side information or payload larger than the format's caps")
        if self.layered:
            self.layers()  # the stage framing must consume the payload exactly

    def layers(self) -> list[bytes]:
        """A layered file's payload as one coded stream per stage (a plain file: the whole payload, once)."""
        return layers_of(self.payload, self.grid[0]) if self.layered else [self.payload]

    def truncated(self, stages: int) -> TokenFile:
        """This file cut to its first ``stages`` stages (a layered file only): no model needed."""
        held = self.grid[0]
        if not self.layered:
            raise TokenFileError("this file's stages are coded in one stream and cannot be cut" + (
                ": its model has one stage" if held == 1 else
                " (written before layered files): encode it again with this vqkit"))
        stages = int(stages) if isinstance(stages, numbers.Integral) and not isinstance(stages, bool) else stages
        if isinstance(stages, bool) or not isinstance(stages, int) or not 1 <= stages <= held:
            raise TokenFileError(f"stages must be an integer in 1..{held} (the stages this file holds), got {stages!r}")
        return dataclasses.replace(self, grid=(stages, *self.grid[1:]), codebook_sizes=self.codebook_sizes[:stages],
                                   payload=layered_payload(self.layers()[:stages]))

    @property
    def header_bytes(self) -> int:
        """Bytes of the file that are not payload (header, side information and CRC)."""
        return len(self.to_bytes()) - len(self.payload)

    def to_bytes(self) -> bytes:
        out = bytearray(MAGIC)
        flags = FLAG_LAYERED if self.layered else 0
        out += struct.pack("<BBBB", VERSION, flags, MODALITIES[self.modality], PRIORS[self.prior])
        out += self.model_id
        for shape in (self.signal_shape, self.grid):
            out += _varint(len(shape))
            for d in shape:
                out += _varint(d)
        out += _varint(self.tile)
        for k in self.codebook_sizes:
            out += _varint(k)
        for blob in (self.side_info, self.payload):
            out += _varint(len(blob))
            out += blob
        out += struct.pack("<I", zlib.crc32(out))
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> TokenFile:
        """Parse and verify ``data``; raises :class:`TokenFileError` (a ValueError) naming the cause."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TokenFileError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
            raise CorruptFileError("not a vqkit token file (bad magic bytes)")
        if len(data) < len(MAGIC) + 4 + MODEL_ID_BYTES + 4:
            raise CorruptFileError(f"truncated token file ({len(data)} bytes, shorter than any header)")
        body, (crc,) = data[:-4], struct.unpack("<I", data[-4:])
        intact = zlib.crc32(body) == crc
        version = data[len(MAGIC)]
        if version != VERSION:
            if intact:
                raise UnsupportedVersionError(
                    f"token file format version {version} is not supported (this vqkit reads version {VERSION}); "
                    "it was written by a newer vqkit"
                )
            raise CorruptFileError(f"token file is corrupt (unknown format version {version} and CRC32 mismatch)")
        if not intact:
            raise CorruptFileError(
                "token file is corrupt or truncated (CRC32 mismatch): the bytes are not those that were written"
            )
        try:
            return _parse(body)
        except (IndexError, struct.error) as err:  # only reachable if the CRC matched by chance
            raise CorruptFileError(f"malformed token file header ({err})") from err


class _Reader:
    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def take(self, n: int, what: str) -> bytes:
        if n > len(self.data) - self.pos:
            raise CorruptFileError(f"truncated token file: {what} needs {n} bytes, {len(self.data) - self.pos} left")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def varint(self, what: str, cap: int) -> int:
        value, shift = 0, 0
        for _ in range(10):
            byte = self.take(1, what)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if value > cap:
                    raise CorruptFileError(f"{what} = {value} exceeds the format's cap {cap}")
                return value
            shift += 7
        raise CorruptFileError(f"{what}: varint longer than 10 bytes")

    def shape(self, what: str) -> tuple[int, ...]:
        n = self.varint(f"{what} rank", MAX_DIMS)
        return tuple(self.varint(f"{what}[{i}]", MAX_DIM) for i in range(n))


def _parse(body: bytes) -> TokenFile:
    r = _Reader(body, len(MAGIC) + 1)
    flags, modality, prior = r.take(3, "header")
    if flags & ~KNOWN_FLAGS:
        raise CorruptFileError(f"reserved flag bits set (0x{flags:02x}): corrupt, or written by a newer vqkit")
    names = {v: k for k, v in MODALITIES.items()}, {v: k for k, v in PRIORS.items()}
    if modality not in names[0]:
        raise CorruptFileError(f"unknown modality code {modality}")
    if prior not in names[1]:
        raise CorruptFileError(f"unknown prior code {prior}")
    model_id = r.take(MODEL_ID_BYTES, "model id")
    signal, grid = r.shape("signal shape"), r.shape("token grid")
    tile = r.varint("tile", MAX_DIM)
    stages = grid[0] if grid else 0
    if not 1 <= stages <= MAX_STAGES:
        raise CorruptFileError(f"token grid {grid}: stage count outside 1..{MAX_STAGES}")
    sizes = tuple(r.varint(f"codebook size of stage {s}", MAX_CODEBOOK) for s in range(stages))
    side = r.take(r.varint("side information length", MAX_SIDE_BYTES), "side information")
    payload = r.take(r.varint("payload length", MAX_PAYLOAD_BYTES), "payload")
    if r.pos != len(body):
        raise CorruptFileError(f"{len(body) - r.pos} unexpected bytes after the payload")
    try:
        return TokenFile(names[0][modality], names[1][prior], model_id, signal, grid, sizes, payload, side, tile,
                         layered=bool(flags & FLAG_LAYERED))
    except CorruptFileError:
        raise
    except TokenFileError as err:
        raise CorruptFileError(f"invalid token file header: {err}") from err


def layers_of(payload: bytes, stages: int) -> list[bytes]:
    """Inverse of :func:`layered_payload` for ``stages`` layers; the framing must consume ``payload`` exactly."""
    r, out = _Reader(payload, 0), []
    for s in range(stages):
        out.append(r.take(r.varint(f"length of stage {s}'s layer", MAX_PAYLOAD_BYTES), f"stage {s}'s layer"))
    if r.pos != len(payload):
        raise CorruptFileError(f"{len(payload) - r.pos} bytes after the last stage's layer")
    return out


def layered_payload(layers: list[bytes]) -> bytes:
    """One coded stream per stage -> a layered payload (each layer behind its varint length)."""
    return b"".join(_varint(len(layer)) + layer for layer in layers)


def _varint(value: int) -> bytes:
    if value < 0:
        raise TokenFileError(f"varint of a negative number {value}")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _check_shape(what: str, shape: tuple[int, ...]) -> None:
    if not isinstance(shape, tuple) or not 1 <= len(shape) <= MAX_DIMS:
        raise TokenFileError(f"{what} must be a tuple of 1..{MAX_DIMS} sizes, got {shape!r}")
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= MAX_DIM:
            raise TokenFileError(f"{what} {shape}: every size must be an integer in 1..{MAX_DIM}")
