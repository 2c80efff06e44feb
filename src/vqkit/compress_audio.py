"""Speech ⇄ ``.vqt`` files: the audio modality of :mod:`vqkit.compress`.

A waveform at the model's sample rate is zero-padded to a multiple of the hop and tokenized in
chunks of ``tile`` samples (1,000 tokens, 20 s at 50 tokens/s) with ``margin`` samples of context
on each side (100 tokens), so memory stays bounded for hour-long files and chunk seams stay
inaudible; the token grid (S, t) is coded with the same priors as images (1-D contexts: previous
stage, the two neighbours in time, the previous digit). The file stores the length in samples;
decoding crops to it and gives audio at the model's rate.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .codec import PriorModel, TokenFile, coders
from .codec.container import TokenFileError
from .compress import Codec, Encoded, code_embeddings, resolve_model_dir, save_prior
from .models import Tokenizer
from .models.speech import sample_rate_of

TILE_TOKENS = 1000
MARGIN_TOKENS = 100
MAX_SAMPLES = 1 << 31
"""Longest waveform a file may claim (37 h at 16 kHz): checked before anything is allocated."""


class AudioCodec(Codec[Tensor]):
    """Mono speech (T,) float in [-1, 1] at ``sample_rate`` ⇄ ``.vqt`` bytes."""

    modality = "audio"

    def __init__(self, tokenizer: Tokenizer, prior: PriorModel | None = None, tile: int = 0, margin: int = -1,
                 name: str = "tokenizer") -> None:
        hop = tokenizer.downsample_factor
        if tokenizer.signal_ndim != 1:
            raise ValueError(f"AudioCodec: {tokenizer.config.arch} is not a speech tokenizer")
        super().__init__(tokenizer, prior, tile or hop * TILE_TOKENS,
                         margin if margin >= 0 else hop * MARGIN_TOKENS, name)
        if self.side_info:
            raise ValueError("AudioCodec: instance-LayerNorm side information is not supported for audio")
        self.sample_rate = sample_rate_of(tokenizer.config.arch_args)

    def _chunks(self, tokens: int) -> list[tuple[int, int]]:
        step = self.tile // self.tokenizer.downsample_factor
        return [(t, min(t + step, tokens)) for t in range(0, tokens, step)]

    @torch.no_grad()
    def tokens(self, audio: Tensor) -> np.ndarray:
        """(T,) -> tokens (S, t) int64, t = ceil(T / hop)."""
        x, hop = self._check(audio), self.tokenizer.downsample_factor
        x = F.pad(x, (0, -len(x) % hop)).to(self.device)
        n, m = len(x) // hop, self.margin // hop
        grid = np.zeros((len(self.specs), n), np.int64)
        for t0, t1 in self._chunks(n):
            a0, a1 = max(0, t0 - m), min(n, t1 + m)
            idx = self.tokenizer.encode(x[a0 * hop : a1 * hop].reshape(1, 1, -1))[0]
            idx = idx if idx.ndim == 2 else idx[:, None]  # (t, S)
            grid[:, t0:t1] = idx[t0 - a0 : t1 - a0].T.cpu().numpy()
        return grid

    @torch.no_grad()
    def render(self, grid: np.ndarray, length: int) -> Tensor:
        """Tokens (S, t) -> (length,) float32 in [-1, 1], chunk by chunk with a token margin."""
        hop, m, n = self.tokenizer.downsample_factor, self.margin // self.tokenizer.downsample_factor, grid.shape[1]
        tokens = torch.from_numpy(grid).to(self.device)
        out = torch.zeros(n * hop)
        for t0, t1 in self._chunks(n):
            a0, a1 = max(0, t0 - m), min(n, t1 + m)
            idx = tokens[:, a0:a1].T[None] if self.tokenizer.residual else tokens[0, a0:a1][None]
            audio = self.tokenizer.decode(idx).reshape(-1).float().cpu()
            out[t0 * hop : t1 * hop] = audio[(t0 - a0) * hop : (t1 - a0) * hop]
        return out[:length].clamp(-1, 1)

    def encode(self, audio: Tensor, prior: str = "context") -> Encoded:
        """(T,) at the model's rate -> the ``.vqt`` bytes and their rates (``pixels`` = samples)."""
        grid = self.tokens(audio)
        return self.pack(grid, len(audio), prior)

    def pack(self, grid: np.ndarray, length: int, prior: str) -> Encoded:
        data, payload, ce = self.token_file(grid, b"", (1, length), prior)
        nominal = grid.shape[1] * sum(math.log2(s.size) for s in self.specs)
        return Encoded(data, length, nominal, ce, 8 * payload, 8 * len(data))

    def decode(self, data: bytes) -> Tensor:
        """``.vqt`` bytes -> (T,) float32 at ``sample_rate``; TokenFileError naming what is wrong."""
        file = TokenFile.from_bytes(data)
        self.check_model(file)
        if len(file.signal_shape) != 2 or file.signal_shape[0] != 1:
            raise TokenFileError(f"not a mono waveform's shape: {file.signal_shape}")
        length, hop = file.signal_shape[1], self.tokenizer.downsample_factor
        if length > MAX_SAMPLES:
            raise TokenFileError(f"{length:,} samples is longer than the {MAX_SAMPLES:,} vqkit decodes: corrupt file")
        grid = (len(self.specs), -(-length // hop))
        if file.grid != grid or file.codebook_sizes != tuple(s.size for s in self.specs) or file.side_info:
            raise TokenFileError(f"token grid {file.grid} / sizes {file.codebook_sizes} do not fit this model {grid}")
        tokens = coders.decode(self._prior_model(file.prior), file.prior, file.payload, grid)
        return self.render(tokens, length)

    def file_bits(self, indices: Tensor, length: int) -> dict[str, float]:
        """Whole-file bits, per prior the model has, of one utterance's tokens (t[, S])."""
        grid = (indices if indices.ndim == 2 else indices[:, None]).T.cpu().numpy()
        priors = self.fitted_priors
        return {p: float(self.pack(grid, length, p).file_bits) for p in priors}

    def _check(self, audio: Tensor) -> Tensor:
        if not isinstance(audio, Tensor) or audio.ndim != 1 or not audio.dtype.is_floating_point or not len(audio):
            shape = tuple(audio.shape) if isinstance(audio, Tensor) else type(audio).__name__
            raise ValueError(f"AudioCodec: expected a non-empty float waveform (T,), got {shape}")
        if not bool(torch.isfinite(audio).all()):
            raise ValueError("AudioCodec: the waveform contains NaN or Inf")
        return audio.float()


def fit_audio_prior(codec: AudioCodec, clips: Iterable[Tensor]) -> PriorModel:
    """Count the tokens of whole training utterances (as the codec encodes them)."""
    grids = [codec.tokens(clip.reshape(-1)) for clip in clips]
    return PriorModel.fit(codec.specs, grids, code_embeddings(codec.tokenizer.quantizer))


def fit_and_save_audio_prior(model_dir: str | os.PathLike[str], data: str, max_items: int = 0,
                             device: str | torch.device = "cpu", progress: bool = False, *,
                             bad_files: str = "skip") -> Path:
    """:func:`~vqkit.compress.fit_and_save_prior` for speech: the tables of the model in ``model_dir``
    fitted on ``data``'s training utterances (its train/ folder if it has one), written beside it."""
    from .modalities.audio.io import AudioFolder, split_folder

    codec = AudioCodec.from_pretrained(model_dir, device=device)
    clips = AudioFolder(split_folder(data, "train"), codec.sample_rate, train=False, max_items=max_items or None,
                        bad_files=bad_files)
    indices: Iterable[int] = range(len(clips))
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="fit-prior", unit="clip", file=sys.stderr)
    return save_prior(resolve_model_dir(model_dir), fit_audio_prior(codec, (clips[i] for i in indices)))
