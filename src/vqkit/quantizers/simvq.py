"""SimVQ: a frozen Gaussian codebook reparameterised by one linear layer.

Zhu et al., "Addressing Representation Collapse in Vector Quantized Models with One Linear
Layer" (SimVQ). Codes are ``W(C) = C·Wᵀ + b`` with C ~ N(0, d^-1/2 std) frozen (a buffer,
no gradient) and W an ``nn.Linear(d, d)`` with bias, so every step moves the whole codebook.

loss = beta·||sg(q) - z||² + ||q - sg(z)||² (encoder commitment 0.25, codebook side 1.0, as
the official code; the paper's eq. 4 prints the weights the other way round). The commitment
term (weight ``beta``) sends gradient only to z; the codebook term (weight 1) only to W (and to
C with ``train_codebook=True``).

Deviation from the official code: ``decode`` applies W — the official decode-from-indices
returns C[i] and forgets it. ``train_codebook=True`` makes C a parameter too, and
``init="uniform"`` draws C from a uniform law of the same std d^-1/2: the two ablations of SimVQ
Table 4. The paper does not give the uniform range; matching the std changes only the shape (taming's
U(-1/K, 1/K) would also shrink the codebook ~K-fold, which tests the scale, not the law).

Speed: C·Wᵀ is formed once per step without gradient for the search; only the N selected
rows go through W with gradient, so backward costs O(N·d²), not O(K·d²).

``gradient="rotation"``: the rotation trick (:mod:`.rotation`) instead of the straight-through gradient to z;
vqp's SimVQ turns it on by default, vqkit keeps the official code's straight-through default.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..validation import Dim, NonNegativeFloat, Size, check_args
from .base import Quantizer, check_codebook, check_size
from .rotation import Gradient, through
from .search import (
    DEFAULT_MAX_BYTES,
    SEARCH_ARGS,
    SearchPrecision,
    check_search_bytes,
    check_search_precision,
    nearest_code,
)

ARGS = {"dim": Dim, "codebook_size": Size, "beta": NonNegativeFloat, "train_codebook": bool,
        "init": Literal["gaussian", "uniform"], "gradient": Gradient, **SEARCH_ARGS}
"""Types of SimVQ's arguments (:func:`vqkit.validation.check_args`); ranges are checked in ``__init__``."""


class SimVQ(Quantizer):
    """z (..., dim) -> nearest row of W(C) -> (..., dim); indices in [0, codebook_size)."""

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        beta: float = 0.25,
        train_codebook: bool = False,
        init: Literal["gaussian", "uniform"] = "gaussian",
        search_bytes: int = DEFAULT_MAX_BYTES,
        check_finite: bool = True,
        search_precision: SearchPrecision = "auto",
        gradient: Gradient = "ste",
    ) -> None:
        super().__init__()
        args = check_args("SimVQ", ARGS, dim=dim, codebook_size=codebook_size, beta=beta, train_codebook=train_codebook,
                          init=init, search_bytes=search_bytes, check_finite=check_finite,
                          search_precision=search_precision, gradient=gradient)
        beta, train_codebook, check_finite = args["beta"], args["train_codebook"], args["check_finite"]
        dim, codebook_size = check_size("SimVQ", "dim", dim, 1), check_size("SimVQ", "codebook_size", codebook_size, 2)
        check_codebook("SimVQ", codebook_size, dim)
        if init not in ("gaussian", "uniform"):
            raise ValueError(f"SimVQ: init must be 'gaussian' or 'uniform', got {init!r}")
        self.dim, self.codebook_size = dim, codebook_size
        self.beta, self.check_finite, self.gradient = beta, check_finite, args["gradient"]
        self.search_bytes = check_search_bytes("SimVQ", search_bytes)
        self.search_precision = check_search_precision("SimVQ", search_precision)
        self.train_codebook, self.init = train_codebook, init
        if init == "gaussian":
            frozen = torch.randn(codebook_size, dim) * dim**-0.5
        else:
            bound = (3.0 / dim) ** 0.5  # std of U(-a, a) is a / sqrt(3)
            frozen = torch.empty(codebook_size, dim).uniform_(-bound, bound)
        if train_codebook:
            self.codebook = nn.Parameter(frozen)
        else:
            self.register_buffer("codebook", frozen)
        self.linear = nn.Linear(dim, dim)

    def codes(self) -> Tensor:
        """(K, dim) effective codebook W(C), without gradient."""
        with torch.no_grad():
            codes: Tensor = self.linear(self.codebook.float())
        return codes

    def _encode(self, z: Tensor) -> Tensor:
        return nearest_code(z, self.codes(), max_bytes=self.search_bytes, precision=self.search_precision)

    def _quantize(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        indices = self._encode(z)
        q = self.linear(self.codebook.float()[indices])  # W sees only the selected rows
        loss = self.beta * F.mse_loss(z, q.detach()) + F.mse_loss(q, z.detach())
        return through(z, q, self.gradient), indices, loss

    def _decode(self, indices: Tensor) -> Tensor:
        codes: Tensor = self.linear(self.codebook.float()[indices])
        return codes

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, codebook_size={self.codebook_size}, "
                f"train_codebook={self.train_codebook}, init={self.init}, gradient={self.gradient!r}")
