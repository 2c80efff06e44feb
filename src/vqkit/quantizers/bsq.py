"""Binary Spherical Quantization.

Zhao, Xiong, Krähenbühl, "Image and Video Tokenization with Binary Spherical Quantization" (BSQ-ViT),
2024; in vector-quantize-pytorch ("vqp") it is ``LFQ(spherical=True)``.

z (..., dim) is projected to ``bits`` channels if ``dim != bits`` (x = W_in z + b), put on the unit
sphere, u = x / ||x||, and quantized to the nearest corner of the hypercube scaled onto the sphere,
q = sign(u) / √bits (sign(0) = -1): the corner with the largest <u, c>, hence the nearest one on the
sphere. The index is the binary number of the bits [x_j > 0] in ``bit_order`` (``"msb"``, the default:
channel 0 most significant, as the official code and vqp; ``"lsb"``: as vqkit before ``bit_order``, and
what a config without it means — see :mod:`.lfq`), so the codes decode from the indices alone; the
output is project_out(q) with the straight-through gradient of u (the
gradient flows through the normalisation, as in vqp and the official code).

Losses, loss = commitment_weight·mean((u - sg(q))²) + entropy_weight·(H_sample - gamma·H_codebook),
from the soft assignment p(c|u) ∝ exp(-||u - c||²/τ) over the 2^bits sphere corners c. On the sphere
-||u - c||² = 2<u, c> - 2, so p factorises over bits: p(c|u) = Π_j σ(c_j√bits · ℓ_j) with the bit
logits ℓ_j = 4·u_j / (τ·√bits) (vqp's softmax(2·inv_temperature·<u, c>) with τ = 1/inv_temperature).

* H_sample = mean_n Σ_j h(σ(ℓ_nj)): the exact per-sample entropy over all 2^bits codes (the paper's
  "analytical" form; its per-group form is the same number), O(N·bits).
* H_codebook = Σ_g H(mean_n p_g(·|u_n)): the paper's group factorisation. The bits are cut into
  consecutive groups of ``group_size`` (the last one may be shorter), and each group's entropy is exact
  over its 2^group_size codes, computed with LFQ's two-halves identity
  (:func:`~.lfq.exact_codebook_entropy`): memory O(N·2^(g/2) + 2^g) a group, never (N, 2^bits).
  ``group_size = bits`` (up to 24) is vqp's entropy over the whole codebook.
The entropy terms are training regularisers (like LFQ's): in eval mode ``loss`` is the commitment term.

Where vqkit follows or deviates, on purpose:
* follows vqp: the loss form above (entropy weight 0.1, gamma 1, τ = 0.01, i.e. vqp's default
  ``inv_temperature=100``), the commitment term as a mean over elements, projections with bias;
* follows the paper: codebook entropy per group (default groups of 9 bits, its default); vqp has no
  groups and builds the (N, 2^bits) probabilities;
* deviates from the official code: bits need not be a multiple of ``group_size`` (it asserts so); the
  entropy penalty is not divided by its ``inv_temperature`` and the commitment term is a mean over
  channels, not a sum (fold either into the weights); the commitment term is on by default (0.25, as
  vqkit's LFQ) where the official configs and recent vqp set it to 0;
* numerics: vqp clamps p at 1e-5 (the official code adds 1e-8) inside the logs; vqkit's entropies are
  exact (logsigmoid sums, probabilities below 2^-63 dropped);
* index bit order: MSB first by default, as the official code and vqp (``bit_order="lsb"`` for vqkit's
  earlier order).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..validation import Dim, NonNegativeFloat, PositiveFloat, Size, check_args
from .base import Quantizer, check_size, l2_normalize, straight_through
from .layout import SymbolLayout
from .lfq import (
    MAX_BITS,
    MAX_LOGIT,
    BitOrder,
    binary_entropy_from_logits,
    bit_powers,
    check_bit_order,
    exact_codebook_entropy,
    index_to_signs,
)

DEFAULT_GROUP_SIZE = 9
"""The paper's group size (BSQ-ViT's default ``group_size=9``)."""
MAX_GROUP_SIZE = 24
"""Largest group whose exact entropy table (2^group_size float32) is computed: 64 MiB."""
ARGS = {"dim": Dim, "bits": Size | None, "group_size": Size | None, "entropy_weight": NonNegativeFloat,
        "commitment_weight": NonNegativeFloat, "gamma": float, "temperature": PositiveFloat, "check_finite": bool,
        "bit_order": BitOrder}
"""Types of BSQ's arguments (:func:`vqkit.validation.check_args`); ranges are checked in ``__init__``."""


class BSQ(Quantizer):
    """BSQ with the per-group exact entropy terms; projects ``dim -> bits -> dim`` if they differ.

    z: (..., dim) -> quantized (..., dim), indices (...,) int64 in [0, 2^bits); codes of the bits space
    have norm 1. See the module docstring for the losses.
    """

    _powers: Tensor

    def __init__(
        self,
        dim: int,
        bits: int | None = None,
        group_size: int | None = None,
        entropy_weight: float = 0.1,
        commitment_weight: float = 0.25,
        gamma: float = 1.0,
        temperature: float = 0.01,
        check_finite: bool = True,
        bit_order: BitOrder = "msb",
    ) -> None:
        super().__init__()
        args = check_args("BSQ", ARGS, dim=dim, bits=bits, group_size=group_size, entropy_weight=entropy_weight,
                          commitment_weight=commitment_weight, gamma=gamma, temperature=temperature,
                          check_finite=check_finite, bit_order=bit_order)
        self.dim = check_size("BSQ", "dim", dim, 1)
        self.bits = self.dim if args["bits"] is None else args["bits"]
        if not 1 <= self.bits <= MAX_BITS:
            raise ValueError(
                f"BSQ: bits must be in [1, {MAX_BITS}] (2^bits codes, an int64 size and index), got {self.bits}"
            )
        size = min(DEFAULT_GROUP_SIZE, self.bits) if args["group_size"] is None else args["group_size"]
        if not 1 <= size <= min(self.bits, MAX_GROUP_SIZE):
            raise ValueError(f"BSQ: group_size must be in [1, min(bits, {MAX_GROUP_SIZE})] = "
                             f"[1, {min(self.bits, MAX_GROUP_SIZE)}] (an exact 2^group_size table), got {size}")
        self.group_size: int = size
        self.codebook_size = 2**self.bits
        self.entropy_weight: float = args["entropy_weight"]
        self.commitment_weight: float = args["commitment_weight"]
        self.gamma: float = args["gamma"]
        self.temperature: float = args["temperature"]
        self.check_finite = args["check_finite"]
        self.bit_order: BitOrder = check_bit_order("BSQ", bit_order)
        self.register_buffer("_powers", bit_powers(self.bits, self.bit_order), persistent=False)
        self.project_in: nn.Module = nn.Linear(self.dim, self.bits) if self.bits != self.dim else nn.Identity()
        self.project_out: nn.Module = nn.Linear(self.bits, self.dim) if self.bits != self.dim else nn.Identity()

    @property
    def groups(self) -> tuple[int, ...]:
        """Bits of each entropy group, in channel order (the last group holds the remainder)."""
        full, rest = divmod(self.bits, self.group_size)
        return (self.group_size,) * full + ((rest,) if rest else ())

    def entropy_terms(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """(mean per-sample entropy, Σ over groups of the group codebook entropies), nats, for u (..., bits)
        on the unit sphere (the normalised projection)."""
        logits = (u.reshape(-1, self.bits) * (4.0 / (self.temperature * math.sqrt(self.bits))))
        logits = logits.clamp(-MAX_LOGIT, MAX_LOGIT)  # (N, bits)
        per_sample = binary_entropy_from_logits(logits).sum(dim=1).mean()
        codebook = sum((exact_codebook_entropy(part) for part in torch.split(logits, list(self.groups), dim=1)),
                       start=logits.new_zeros(()))
        return per_sample, codebook

    def _project_in(self, z: Tensor) -> Tensor:
        """x (..., bits): its signs are the bits; the sphere point is x / ||x||."""
        x: Tensor = self.project_in(z)
        if not isinstance(self.project_in, nn.Identity):
            self._require_finite(x, "project_in(z)")
        return x

    def _corner(self, x: Tensor) -> Tensor:
        """sign(x)/√bits, sign(0) = -1: the nearest corner on the sphere, (..., bits)."""
        scale = 1.0 / math.sqrt(self.bits)
        return torch.where(x > 0, scale, -scale)

    def _quantize(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self._project_in(z)
        u = l2_normalize(x)  # overflow-safe: |x| beyond ~1.8e19 is rescaled first
        codes = self._corner(x)
        loss = self.commitment_weight * F.mse_loss(u, codes)
        if self.training and self.entropy_weight != 0:
            per_sample, codebook = self.entropy_terms(u)
            loss = loss + self.entropy_weight * (per_sample - self.gamma * codebook)
        quantized: Tensor = self.project_out(straight_through(u, codes))
        return quantized, self._to_indices(x), loss

    def _to_indices(self, x: Tensor) -> Tensor:
        return ((x > 0).long() * self._powers).sum(dim=-1)

    def _encode(self, z: Tensor) -> Tensor:
        return self._to_indices(self._project_in(z))  # the signs of x are those of u: no normalisation

    def _decode(self, indices: Tensor) -> Tensor:
        signs = index_to_signs(indices, self.bits, self.bit_order)
        codes: Tensor = self.project_out(signs * (1.0 / math.sqrt(self.bits)))
        return codes

    def symbol_layout(self) -> tuple[SymbolLayout, ...]:
        """One bit per digit of the index, least significant first (see :meth:`.LFQ.symbol_layout`)."""
        return (SymbolLayout.digits((2,) * self.bits),)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, bits={self.bits}, group_size={self.group_size}, temperature={self.temperature}, "
                f"bit_order={self.bit_order!r}")
