"""Factorized codes (VQGAN-FC).

Yu et al., "Vector-quantized Image Modeling with Improved VQGAN" (ViT-VQGAN), ICLR 2022,
section 3.2: look codes up in a low-dimensional space (``code_dim``, 8 in SimVQ Table 1) on
the unit sphere, then project back. The "VQGAN-FC" rows of SimVQ Table 1 (8-d and 128-d).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..validation import Dim, NonNegativeFloat, Size, check_args
from .base import Quantizer, check_codebook, check_size, l2_normalize
from .rotation import Gradient, through
from .search import (
    DEFAULT_MAX_BYTES,
    SEARCH_ARGS,
    SearchPrecision,
    check_search_bytes,
    check_search_precision,
    nearest_code,
)

ARGS = {"dim": Dim, "codebook_size": Size, "code_dim": Dim, "beta": NonNegativeFloat, "gradient": Gradient,
        **SEARCH_ARGS}
"""Types of FactorizedVQ's arguments (:func:`vqkit.validation.check_args`); ranges are checked in ``__init__``."""


class FactorizedVQ(Quantizer):
    """z (..., dim) -> Linear -> l2-normalise (..., code_dim) -> nearest code -> Linear -> (..., dim).

    loss = ||sg(x) - q||² + beta·||x - sg(q)||² in the normalised low-dimensional space: the first
    (codebook) term trains only the codebook, the second (commitment) only ``project_in`` and z.
    ``gradient="rotation"``: the rotation trick in the normalised space (λ = 1 there: a pure rotation).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        code_dim: int = 8,
        beta: float = 0.25,
        search_bytes: int = DEFAULT_MAX_BYTES,
        check_finite: bool = True,
        search_precision: SearchPrecision = "auto",
        gradient: Gradient = "ste",
    ) -> None:
        super().__init__()
        owner = "FactorizedVQ"
        args = check_args(owner, ARGS, dim=dim, codebook_size=codebook_size, code_dim=code_dim, beta=beta,
                          search_bytes=search_bytes, check_finite=check_finite, search_precision=search_precision,
                          gradient=gradient)
        beta, check_finite = args["beta"], args["check_finite"]
        dim, code_dim = check_size(owner, "dim", dim, 1), check_size(owner, "code_dim", code_dim, 1)
        codebook_size = check_size(owner, "codebook_size", codebook_size, 2)
        check_codebook(owner, codebook_size, code_dim)
        self.dim, self.codebook_size, self.code_dim = dim, codebook_size, code_dim
        self.beta, self.check_finite, self.gradient = beta, check_finite, args["gradient"]
        self.search_bytes = check_search_bytes(owner, search_bytes)
        self.search_precision = check_search_precision(owner, search_precision)
        self.project_in = nn.Linear(dim, code_dim)
        self.project_out = nn.Linear(code_dim, dim)
        self.codebook = nn.Parameter(torch.randn(codebook_size, code_dim))

    def _lookup_space(self, z: Tensor) -> Tensor:
        y: Tensor = self.project_in(z)
        self._require_finite(y, "project_in(z)")
        return l2_normalize(y)

    def _search(self, x: Tensor) -> Tensor:
        codes = l2_normalize(self.codebook.detach().float())
        return nearest_code(x.detach(), codes, max_bytes=self.search_bytes, precision=self.search_precision)

    def _quantize(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self._lookup_space(z)
        indices = self._search(x)
        q = l2_normalize(self.codebook.float()[indices])
        loss = F.mse_loss(q, x.detach()) + self.beta * F.mse_loss(x, q.detach())
        quantized: Tensor = self.project_out(through(x, q, self.gradient))
        return quantized, indices, loss

    def _encode(self, z: Tensor) -> Tensor:
        return self._search(self._lookup_space(z))

    def _decode(self, indices: Tensor) -> Tensor:
        codes: Tensor = self.project_out(l2_normalize(self.codebook.detach().float()[indices]))
        return codes

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, codebook_size={self.codebook_size}, code_dim={self.code_dim}, "
                f"gradient={self.gradient!r}")
