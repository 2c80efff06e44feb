"""Multi-scale residual quantization: a token pyramid with one shared codebook (VAR's tokenizer).

Tian et al., "Visual Autoregressive Modeling: Scalable Image Generation via Next-Scale Prediction"
(VAR), 2024, Algorithms 1–2, as its official ``VectorQuantizer2`` computes them. A latent map f of
shape (B, h, w, dim) with h = w = ``patch_nums[-1]`` is quantized coarse to fine over the scales
s_1 < … < s_K = h, with r_0 = f and f̂_0 = 0:

    x_k = area(r_{k-1}, s_k × s_k)                 (no resampling at the last scale, s_K = h)
    i_k = argmin_c ||x_k - c||²                    (vqkit's exact nearest-code search, one codebook)
    h_k = φ_k(bicubic(codebook[i_k], h × w))       (no resampling at the last scale)
    f̂_k = f̂_{k-1} + h_k,   r_k = r_{k-1} - h_k

φ_k(x) = (1 - ratio)·x + ratio·conv3×3(x) (``phi_ratio``, VAR's 0.5; 0: φ is the identity and no conv
is built). ``num_phi`` convs are shared across the K scales as VAR's ``PhiPartiallyShared``: scale k sits
at t = k/(K-1) and uses the conv whose tick is nearest, ticks = linspace(1/(3n), 1-1/(3n), n) for n = 4
(VAR's default) and linspace(1/(2n), 1-1/(2n), n) otherwise; n = 1 is VAR's fully shared φ, n = K gives
every scale its own conv (VAR's ``PhiNonShared``).

Loss, exactly VAR's: the mean over the K scales of the codebook and commitment terms on the *partial*
reconstruction f̂_k (not only the final one), so that every prefix of the pyramid is trained to decode:

    loss = (1/K) Σ_k [ mse(f̂_k, sg(f)) + beta·mse(sg(f̂_k), f) ]

The first term trains the codebook and the φ convs, the second the encoder. The output is
straight-through, f̂_K in the forward pass and the identity to f in the backward pass (VAR's
``f_hat.data - f.detach() + f``): the decoder's gradient reaches the encoder, not the codebook or φ.

Tokens: ``indices`` is (B, L), L = Σ s_k², scale by scale from the coarsest, each scale's s_k × s_k grid
in raster order (VAR's order). ``decode`` accepts any prefix of whole scales, (B, Σ_{k<K'} s_k²), and
returns f̂_{K'}: the coarser reconstruction after K' scales. :meth:`MultiScaleRQ.split_scales` gives the
per-scale grids. The symbol contract is one nominal index per token (:meth:`symbol_layout`): the tiled codec
codes an image of any size in tiles of one latent map each, a pyramid a tile, one stage (``vqkit.codec.tiled``).

Where vqkit differs from VAR, on purpose:
* the input is channels-last (B, h, w, dim) like every vqkit quantizer, and must be square with side
  ``patch_nums[-1]`` (VAR's convention too): a map of another size is refused by name, not resampled;
* the residual r_k is kept out of the autograd graph (VAR subtracts h_k with its graph, which reaches
  nothing since r only feeds the argmin): the same gradients, less memory;
* no cosine (``using_znorm``) search and no EMA usage counters (usage and perplexity come from the
  indices, as for every vqkit quantizer); codebook initialised U(-1/K, 1/K) as vqkit's VQ (taming).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Annotated

import annotated_types as at
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..validation import Dim, NonNegativeFloat, Size, Width, check_args
from .base import Quantizer, check_codebook, check_size, straight_through
from .layout import SymbolLayout
from .search import (
    DEFAULT_MAX_BYTES,
    SEARCH_ARGS,
    SearchPrecision,
    check_search_bytes,
    check_search_precision,
    nearest_code,
)

VAR_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
"""VAR's scales for a 16 × 16 latent map (680 tokens)."""
MAX_SCALES = 64
ARGS = {"dim": Dim, "codebook_size": Size,
        "patch_nums": Annotated[tuple[Width, ...], at.MinLen(1), at.MaxLen(MAX_SCALES)],
        "beta": NonNegativeFloat, "phi_ratio": NonNegativeFloat, "num_phi": Size | None, **SEARCH_ARGS}
"""Types of the arguments (:func:`vqkit.validation.check_args`); ranges are checked in ``__init__``."""


def phi_assignment(num_scales: int, num_phi: int) -> tuple[int, ...]:
    """The φ conv each scale uses: VAR's ``PhiPartiallyShared`` tick rule (module docstring), computed with
    numpy as VAR does, so that the ties (scale 2 of 10 sits halfway between two ticks) break alike."""
    n = num_phi
    ticks = np.linspace(1 / 3 / n, 1 - 1 / 3 / n, n) if n == 4 else np.linspace(1 / 2 / n, 1 - 1 / 2 / n, n)
    return tuple(int(np.argmin(np.abs(ticks - (k / (num_scales - 1) if num_scales > 1 else 0.0))))
                 for k in range(num_scales))


class Phi(nn.Module):
    """φ(x) = (1 - ratio)·x + ratio·conv3×3(x) on (B, dim, h, w): VAR's ``Phi``."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        self.ratio = ratio
        self.conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = x * (1 - self.ratio) + self.conv(x) * self.ratio
        return out


class MultiScaleRQ(Quantizer):
    """VAR's multi-scale residual quantizer with one shared codebook and φ refinement convs.

    z (B, h, w, dim), h = w = patch_nums[-1] -> quantized (B, h, w, dim), indices (B, L) int64,
    L = Σ s_k² (see the module docstring for the algorithm, the loss and the token order).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        patch_nums: Sequence[int] = VAR_PATCH_NUMS,
        beta: float = 0.25,
        phi_ratio: float = 0.5,
        num_phi: int | None = None,
        search_bytes: int = DEFAULT_MAX_BYTES,
        check_finite: bool = True,
        search_precision: SearchPrecision = "auto",
    ) -> None:
        super().__init__()
        args = check_args("MultiScaleRQ", ARGS, dim=dim, codebook_size=codebook_size, patch_nums=patch_nums,
                          beta=beta, phi_ratio=phi_ratio, num_phi=num_phi, search_bytes=search_bytes,
                          check_finite=check_finite, search_precision=search_precision)
        dim = check_size("MultiScaleRQ", "dim", dim, 1)
        codebook_size = check_size("MultiScaleRQ", "codebook_size", codebook_size, 2)
        check_codebook("MultiScaleRQ", codebook_size, dim)
        scales: tuple[int, ...] = args["patch_nums"]
        if any(b <= a for a, b in itertools.pairwise(scales)):
            raise ValueError(f"MultiScaleRQ: patch_nums must be strictly increasing (coarse to fine), got {scales}")
        if not 0.0 <= args["phi_ratio"] <= 1.0:
            raise ValueError(f"MultiScaleRQ: phi_ratio must be in [0, 1], got {args['phi_ratio']}")
        n_phi = min(4, len(scales)) if args["num_phi"] is None else args["num_phi"]
        if not 1 <= n_phi <= len(scales):
            raise ValueError(f"MultiScaleRQ: num_phi must be in [1, {len(scales)}] (the number of scales), got {n_phi}")
        self.dim, self.codebook_size = dim, codebook_size
        self.patch_nums = scales
        self.beta, self.phi_ratio, self.num_phi = args["beta"], args["phi_ratio"], n_phi
        self.search_bytes = check_search_bytes("MultiScaleRQ", search_bytes)
        self.search_precision = check_search_precision("MultiScaleRQ", search_precision)
        self.check_finite = args["check_finite"]
        bound = 1.0 / codebook_size
        self.codebook = nn.Parameter(torch.empty(codebook_size, dim).uniform_(-bound, bound))
        self.phi = nn.ModuleList([Phi(dim, self.phi_ratio) for _ in range(n_phi)] if self.phi_ratio > 0 else [])
        self.phi_of_scale = phi_assignment(len(scales), n_phi)
        ends = [0]
        for s in scales:
            ends.append(ends[-1] + s * s)
        self._ends = tuple(ends)

    # -- the pyramid's layout ---------------------------------------------------------------------
    @property
    def side(self) -> int:
        """h = w of the latent map: the last scale."""
        return self.patch_nums[-1]

    @property
    def num_tokens(self) -> int:
        """L = Σ s_k², the tokens of one latent map."""
        return self._ends[-1]

    def scale_slices(self) -> tuple[slice, ...]:
        """Where each scale's s_k² tokens sit in the (B, L) indices."""
        return tuple(slice(a, b) for a, b in zip(self._ends, self._ends[1:], strict=False))

    def split_scales(self, indices: Tensor) -> list[Tensor]:
        """(B, L') indices of a prefix of scales -> one (B, s_k, s_k) grid per scale present."""
        self._check_pyramid(indices)
        count = self._ends.index(indices.shape[1])
        return [indices[:, sl].reshape(-1, s, s) for sl, s in zip(self.scale_slices()[:count], self.patch_nums,
                                                                   strict=False)]

    def symbol_layout(self) -> tuple[SymbolLayout, ...]:
        """One nominal index per token, every scale from the one codebook."""
        return (SymbolLayout.nominal(self.codebook_size),)

    @torch.no_grad()
    def code_vectors(self, stage: int = 0) -> Tensor | None:
        """The (K, dim) codebook (before upsampling and φ: what groups similar indices)."""
        if stage != 0:
            raise ValueError(f"MultiScaleRQ: stage {stage} out of range (one codebook)")
        return self.codebook.detach().float().clone()

    # -- the algorithm ----------------------------------------------------------------------------
    def _refine(self, k: int, code: Tensor) -> Tensor:
        """(B, dim, s_k, s_k) codes -> h_k (B, dim, h, w): bicubic upsampling then φ."""
        if code.shape[-1] != self.side:
            code = F.interpolate(code, size=(self.side, self.side), mode="bicubic")
        return self.phi[self.phi_of_scale[k]](code) if self.phi_ratio > 0 else code

    def _run(self, z: Tensor, train_path: bool) -> tuple[Tensor, Tensor, Tensor]:
        """(f̂_K channels-last, indices (B, L), loss); the loss only on the training path (else 0)."""
        f = z.permute(0, 3, 1, 2)  # (B, dim, h, w)
        rest, f_hat = f.detach(), torch.zeros_like(f)
        codebook = self.codebook.float()
        codes = codebook.detach()
        loss, indices, ranges = z.new_zeros(()), [], []
        for k, s in enumerate(self.patch_nums):
            x = rest if s == self.side else F.interpolate(rest, size=(s, s), mode="area")
            if self.check_finite and k > 0:
                ranges.append(torch.stack(torch.aminmax(x)))  # NaN/±inf iff an element is (NaN propagates)
            idx = nearest_code(x.permute(0, 2, 3, 1), codes, max_bytes=self.search_bytes,
                               precision=self.search_precision)  # (B, s, s)
            h_k = self._refine(k, (codebook if train_path else codes)[idx].permute(0, 3, 1, 2))
            f_hat = f_hat + h_k
            rest = rest - h_k.detach()
            indices.append(idx.reshape(idx.shape[0], s * s))
            if train_path:
                loss = loss + F.mse_loss(f_hat, f.detach()) + self.beta * F.mse_loss(f_hat.detach(), f)
        if self.check_finite:
            ranges.append(torch.stack(torch.aminmax(f_hat.detach())))
            if not bool(torch.isfinite(torch.stack(ranges)).all()):  # one host sync for every scale
                raise self._overflow_error("a scale's residual or the reconstruction")
        return f_hat.permute(0, 2, 3, 1), torch.cat(indices, dim=1), loss / len(self.patch_nums)

    def _quantize(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        f_hat, indices, loss = self._run(z, train_path=True)
        return straight_through(z, f_hat), indices, loss

    def _encode(self, z: Tensor) -> Tensor:
        return self._run(z, train_path=False)[1]

    def _decode(self, indices: Tensor) -> Tensor:
        codes = self.codebook.detach().float()
        f_hat: Tensor | None = None
        for k, grid in enumerate(self.split_scales(indices)):
            h_k = self._refine(k, codes[grid].permute(0, 3, 1, 2))
            f_hat = h_k if f_hat is None else f_hat + h_k
        assert f_hat is not None
        return f_hat.permute(0, 2, 3, 1)

    # -- checks -----------------------------------------------------------------------------------
    def _check_input(self, z: Tensor) -> None:
        super()._check_input(z)
        h = self.side
        if z.ndim != 4 or z.shape[1] != h or z.shape[2] != h:
            raise ValueError(
                f"MultiScaleRQ: expected z of shape (B, {h}, {h}, {self.dim}): a square channels-last latent map "
                f"whose side is the last scale of patch_nums {self.patch_nums}, got {tuple(z.shape)}"
            )

    def _check_pyramid(self, indices: Tensor) -> None:
        if indices.ndim != 2 or indices.shape[1] not in self._ends[1:]:
            got = tuple(indices.shape)
            raise ValueError(
                f"MultiScaleRQ: expected indices of shape (B, L) with L the tokens of the first scales, one of "
                f"{self._ends[1:]} (patch_nums {self.patch_nums}), got {got}"
            )

    def _check_indices(self, indices: Tensor) -> None:
        super()._check_indices(indices)  # type, dtype, emptiness and range first
        self._check_pyramid(indices)

    @property
    def bits_per_sample(self) -> float:
        """L·log2 K: the nominal bits of one latent map's pyramid."""
        return self.num_tokens * math.log2(self.codebook_size)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, codebook_size={self.codebook_size}, patch_nums={self.patch_nums}, "
                f"phi_ratio={self.phi_ratio}, num_phi={self.num_phi}")
