"""Factorized codes (VQGAN-FC).

Yu et al., "Vector-quantized Image Modeling with Improved VQGAN" (ViT-VQGAN), ICLR 2022,
section 3.2: look codes up in a low-dimensional space (``code_dim``, 8 in SimVQ Table 1) on
the unit sphere, then project back. The "VQGAN-FC" rows of SimVQ Table 1 (8-d and 128-d).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Quantizer, straight_through
from .search import DEFAULT_MAX_BYTES, nearest_code


class FactorizedVQ(Quantizer):
    """z (..., dim) -> Linear -> l2-normalise (..., code_dim) -> nearest code -> Linear -> (..., dim).

    loss = ||sg(x) - q||² + beta·||x - sg(q)||² in the normalised low-dimensional space.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        code_dim: int = 8,
        beta: float = 0.25,
        search_bytes: int = DEFAULT_MAX_BYTES,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        if dim < 1 or code_dim < 1 or codebook_size < 2:
            raise ValueError(f"FactorizedVQ: bad sizes dim={dim}, code_dim={code_dim}, codebook_size={codebook_size}")
        self.dim, self.codebook_size, self.code_dim = int(dim), int(codebook_size), int(code_dim)
        self.beta, self.search_bytes, self.check_finite = beta, search_bytes, check_finite
        self.project_in = nn.Linear(dim, code_dim)
        self.project_out = nn.Linear(code_dim, dim)
        self.codebook = nn.Parameter(torch.randn(codebook_size, code_dim))

    def _lookup_space(self, z: Tensor) -> Tensor:
        return F.normalize(self.project_in(z), dim=-1)

    def _search(self, x: Tensor) -> Tensor:
        codes = F.normalize(self.codebook.detach().float(), dim=-1)
        return nearest_code(x.detach(), codes, max_bytes=self.search_bytes)

    def _quantize(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self._lookup_space(z)
        indices = self._search(x)
        q = F.normalize(self.codebook.float()[indices], dim=-1)
        loss = F.mse_loss(q, x.detach()) + self.beta * F.mse_loss(x, q.detach())
        quantized: Tensor = self.project_out(straight_through(x, q))
        return quantized, indices, loss

    def _encode(self, z: Tensor) -> Tensor:
        return self._search(self._lookup_space(z))

    def _decode(self, indices: Tensor) -> Tensor:
        codes: Tensor = self.project_out(F.normalize(self.codebook.detach().float()[indices], dim=-1))
        return codes

    def extra_repr(self) -> str:
        return f"dim={self.dim}, codebook_size={self.codebook_size}, code_dim={self.code_dim}"
