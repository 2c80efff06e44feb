"""Range coding of token grids with constriction, driven by a :class:`~.priors.Prior`.

constriction's range coder is a queue: symbols come out in the order they went in, so the
decoder walks the grid in the same order as the encoder and rebuilds each context from what it
has already decoded. Models are built with ``perfect=False`` on both sides (the two settings give
different bytes). constriction's decoders do not detect damage (they read zeros past the end): the
container's CRC and exact payload length guard the bytes, decoded indices are checked against each
codebook size, and :func:`decode` re-encodes what it decoded and requires exactly the payload it was
given (encoding is deterministic) — which doubles the range coder's share of a decode.
"""

from __future__ import annotations

import constriction
import numpy as np

from .container import CorruptFileError, TokenFileError, layered_payload, layers_of
from .priors import Prior, code_length

_WORD_BYTES = 4  # constriction's compressed words are uint32


_FAMILY = constriction.stream.model.Categorical(perfect=False)
"""The categorical model family: one distribution per symbol, given as rows of a 2-D array."""


def _model(probs: np.ndarray | int) -> object:
    if isinstance(probs, int):
        return constriction.stream.model.Uniform(probs)
    return constriction.stream.model.Categorical(probs, perfect=False)


def _put(encoder: object, symbols: np.ndarray, probs: np.ndarray | int) -> None:
    if isinstance(probs, np.ndarray) and probs.ndim == 2:
        encoder.encode(symbols.astype(np.int32), _FAMILY, probs)  # type: ignore[attr-defined]
    else:
        encoder.encode(symbols.astype(np.int32), _model(probs))  # type: ignore[attr-defined]


def _get(decoder: object, n: int, probs: np.ndarray | int) -> np.ndarray:
    if isinstance(probs, np.ndarray) and probs.ndim == 2:
        return np.asarray(decoder.decode(_FAMILY, probs), dtype=np.int64)  # type: ignore[attr-defined]
    return np.asarray(decoder.decode(_model(probs), n), dtype=np.int64)  # type: ignore[attr-defined]


def encode(prior: Prior, tokens: np.ndarray, layered: bool = False) -> tuple[bytes, float]:
    """Tokens (S, *positions) int64 -> (payload bytes, the prior's cross-entropy in bits).

    ``layered``: each stage in its own stream, framed as the container's layered payload, so that the
    first k stages decode alone (the prior's walk is stage-major and stage k looks back only)."""
    tokens = np.ascontiguousarray(tokens, dtype=np.int64)
    for s, spec in enumerate(prior.specs):
        if tokens.shape[0] != len(prior.specs) or tokens[s].min() < 0 or tokens[s].max() >= spec.size:
            raise ValueError(f"stage {s}: tokens outside [0, {spec.size}) or grid {tokens.shape} of the wrong rank")
    encoders = [constriction.stream.queue.RangeEncoder() for _ in range(len(prior.specs) if layered else 1)]
    read, bits = prior.reader(tokens), [0.0]

    def visit(s: int, j: int, where: np.ndarray, probs: np.ndarray | int) -> np.ndarray:
        symbols = read(s, j, where, probs)
        _put(encoders[s if layered else 0], symbols, probs)
        bits[0] += code_length(symbols, probs)
        return symbols

    prior.walk(np.zeros_like(tokens), visit)
    streams = [e.get_compressed().astype("<u4").tobytes() for e in encoders]
    return (layered_payload(streams) if layered else streams[0]), bits[0]


def decode(prior: Prior, payload: bytes, grid: tuple[int, ...], layered: bool = False) -> np.ndarray:
    """Inverse of :func:`encode` for a token grid of shape ``grid``; CorruptFileError if the payload
    cannot be the coding of such a grid (wrong length, decoded codes out of range, or a payload that
    is not the encoding of what it decodes to: short, forged, or coded with other prior tables)."""
    try:
        streams = layers_of(payload, len(prior.specs)) if layered else [payload]
    except TokenFileError as err:
        raise CorruptFileError(f"layered payload: {err}") from err
    decoders = []
    for n, stream in enumerate(streams):
        if len(stream) % _WORD_BYTES:
            where = f"stage {n}'s layer" if layered else "payload"
            raise CorruptFileError(f"{where} of {len(stream)} bytes is not a whole number of 32-bit words")
        decoders.append(constriction.stream.queue.RangeDecoder(np.frombuffer(stream, dtype="<u4").astype(np.uint32)))

    def visit(s: int, j: int, where: np.ndarray, probs: np.ndarray | int) -> np.ndarray:
        try:
            return _get(decoders[s if layered else 0], len(where), probs)
        except (AssertionError, ValueError, RuntimeError) as err:  # constriction's word for invalid data
            raise CorruptFileError(f"payload is not a valid coding of this token grid ({err})") from err

    tokens = np.zeros(grid, np.int64)
    prior.walk(tokens, visit)
    for s, spec in enumerate(prior.specs):
        if tokens[s].max() >= spec.size:
            raise CorruptFileError(f"payload decodes to codes beyond stage {s}'s {spec.size}: corrupt file")
    # constriction reads zeros past the end and cannot tell a short or forged payload from a real one;
    # encoding is deterministic, so the real payload is exactly the encoding of what it decodes to.
    if encode(prior, tokens, layered)[0] != payload:
        raise CorruptFileError("payload is not the coding of the tokens it decodes to: corrupt, truncated or "
                               "forged file, or other prior tables")
    return tokens
