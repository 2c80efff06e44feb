"""Lookup-Free Quantization.

Yu et al., "Language Model Beats Diffusion — Tokenizer is Key to Visual Generation"
(MAGVIT-v2), ICLR 2024; the LFQ baseline of both RFSQ and SimVQ.

Each of ``bits`` channels becomes ±1; the codebook is {-1, 1}^bits. The index is a binary number
of the bits [z_i > 0] in ``bit_order``:

* ``"msb"`` (default): channel 0 most significant, index = Σ_i [z_i > 0]·2^(bits-1-i), as vqp,
  the BSQ code and Cosmos number their tokens;
* ``"lsb"``: channel 0 least significant, index = Σ_i [z_i > 0]·2^i, as Open-MAGVIT2 and every vqkit
  LFQ/BSQ before ``bit_order`` existed. A model config without ``bit_order`` means ``"lsb"``
  (:data:`vqkit.models.registry.LEGACY_QUANTIZER_ARGS`), so saved models and their ``.vqt`` files
  decode as they always did.

The order is a property of the model, like its weights: it is in the quantizer's arguments, hence
in the config that a ``.vqt`` file's model id hashes, and the two orders of one model are two models.

The entropy regulariser uses p(c|z) ∝ exp(-||z - c||²/τ) over the 2^bits codes. That
distribution factorises over bits, p(c|z) = Π_i σ(4·c_i·z_i/τ), so

* the per-sample entropy is exactly the sum of ``bits`` binary entropies (O(N·bits));
* the codebook entropy H(E_n p(·|z_n)) does not factorise, but splitting the bits into two
  halves A, B gives E_n p(c|z_n) = (P_Aᵀ P_B)[c_A, c_B] / N — an exact 2^bits table from one
  matrix product of (2^|A|, N)·(N, 2^|B|), instead of the (N, 2^bits) tensor of the
  reference implementations (vqp takes ~18 s a step at 2^16 on 2 CPU cores).

``codebook_entropy="exact"`` (default up to 24 bits) uses that identity; ``"factorized"``
replaces the codebook entropy with Σ_i H(E_n p_i) — an upper bound that is tight when the
bits are independent across the batch — and is the default above 24 bits, where a 2^bits
table no longer fits in memory. The entropy term is a training regulariser: in eval mode
``loss`` holds only the commitment term.

Numerics: the joint log-probabilities are sums of ``logsigmoid`` terms (all ≤ 0, no cancellation),
and logits are clipped to ±:data:`MAX_LOGIT`, where every probability is already 0 or 1 in
float32. Written as c·x/2 - log(2cosh(x/2)) instead, the sum cancels terms of size |x|/2 and
returned garbage entropies from logits of ~1e7 on (|z| ≈ 2.5e4 at temperature 0.01), NaN from
~1e10, although every value was finite.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..validation import Dim, NonNegativeFloat, Size, check_args
from .base import Quantizer, check_size, straight_through
from .layout import SymbolLayout

EntropyMode = Literal["exact", "factorized"]
BitOrder = Literal["msb", "lsb"]
_EXACT_MAX_BITS = 24
MAX_BITS = 62
"""2^62 codes: the largest power-of-two codebook whose size, like its indices, is an int64."""
MAX_LOGIT = 200.0
"""|logit| above which σ is 0 or 1 in float32 (σ(-104) underflows): clipping there changes nothing."""
_MIN_LOG_P = -63 * math.log(2)
ARGS = {"dim": Dim, "bits": Size | None, "entropy_weight": NonNegativeFloat, "commitment_weight": NonNegativeFloat,
        "gamma": float, "temperature": float, "codebook_entropy": EntropyMode | None, "check_finite": bool,
        "bit_order": BitOrder}
"""Types of LFQ's arguments (:func:`vqkit.validation.check_args`); ranges are checked in ``__init__``."""


def binary_entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy (nats) of Bernoulli(σ(logits)), elementwise and stable (finite for infinite logits too)."""
    logits = logits.clamp(-MAX_LOGIT, MAX_LOGIT)
    p = torch.sigmoid(logits)
    return p * F.softplus(-logits) + (1 - p) * F.softplus(logits)


def index_to_signs(indices: Tensor, bits: int, bit_order: BitOrder = "lsb") -> Tensor:
    """int64 (...,) -> (..., bits) of ±1; channel 0 is the least (``"lsb"``) or most (``"msb"``) significant bit."""
    shifts = torch.arange(bits, device=indices.device)
    if bit_order == "msb":
        shifts = shifts.flip(0)
    return ((indices.unsqueeze(-1) >> shifts) & 1).float() * 2 - 1


def bit_powers(bits: int, bit_order: BitOrder) -> Tensor:
    """(bits,) int64 weight of each channel's bit in the index: 2^i (``"lsb"``) or 2^(bits-1-i) (``"msb"``)."""
    powers = 2 ** torch.arange(bits, dtype=torch.long)
    return powers.flip(0) if bit_order == "msb" else powers


def check_bit_order(owner: str, bit_order: str) -> BitOrder:
    if bit_order not in ("msb", "lsb"):
        raise ValueError(f"{owner}: bit_order must be 'msb' or 'lsb', got {bit_order!r}")
    return "msb" if bit_order == "msb" else "lsb"


def exact_codebook_entropy(logits: Tensor) -> Tensor:
    """H(mean_n p(·|z_n)) in nats, where p(c|z_n) = Π_i σ(c_i·logits[n, i]); logits: (N, bits)."""
    n, bits = logits.shape
    logits = logits.clamp(-MAX_LOGIT, MAX_LOGIT)
    half = bits // 2
    log_a = _log_joint(logits[:, :half])  # (N, 2^|A|)
    log_b = _log_joint(logits[:, half:])  # (N, 2^|B|)
    avg = _exp_normal(log_a).t() @ _exp_normal(log_b) / n  # (2^|A|, 2^|B|) = E_n p(c|z_n)
    return -(avg * avg.clamp_min(1e-30).log()).sum()


def _exp_normal(log_p: Tensor) -> Tensor:
    """exp(log_p), with probabilities below 2^-63 set to 0 so that every product of two is a normal float32
    (≥ 2^-126): denormal products make CPU matrix products ~150x slower (1.3 s instead of 8 ms at 4096 tokens
    and 2^18 codes). What is dropped is < 2^-63 per entry, invisible in a float32 entropy."""
    return log_p.masked_fill(log_p < _MIN_LOG_P, -torch.inf).exp()


def _log_joint(logits: Tensor) -> Tensor:
    """(N, b) -> (N, 2^b): log Π_i σ(c_i·logits_i) for every ±1 pattern c of b bits."""
    if logits.shape[1] == 0:
        return logits.new_zeros(logits.shape[0], 1)
    b = logits.shape[1]
    positive = (index_to_signs(torch.arange(2**b, device=logits.device), b) > 0).to(logits.dtype)  # (2^b, b)
    # log σ(c·x) is log σ(x) where c = +1 and log σ(-x) where c = -1: two matmuls of terms ≤ 0, whose
    # sum has no cancellation (the form c·x/2 - log(2cosh(x/2)) cancels terms of size |x|/2).
    return F.logsigmoid(logits) @ positive.t() + F.logsigmoid(-logits) @ (1 - positive).t()


class LFQ(Quantizer):
    """LFQ with entropy and commitment losses; projects ``dim -> bits -> dim`` if they differ.

    loss = commitment_weight·||z - sg(q)||² + entropy_weight·(H_sample - gamma·H_codebook),
    entropy from p(c|z) ∝ exp(-||z - c||²/temperature).
    """

    _powers: Tensor

    def __init__(
        self,
        dim: int,
        bits: int | None = None,
        entropy_weight: float = 0.1,
        commitment_weight: float = 0.25,
        gamma: float = 1.0,
        temperature: float = 0.01,
        codebook_entropy: EntropyMode | None = None,
        check_finite: bool = True,
        bit_order: BitOrder = "msb",
    ) -> None:
        super().__init__()
        args = check_args("LFQ", ARGS, dim=dim, bits=bits, entropy_weight=entropy_weight,
                          commitment_weight=commitment_weight, gamma=gamma, temperature=temperature,
                          codebook_entropy=codebook_entropy, check_finite=check_finite, bit_order=bit_order)
        entropy_weight, commitment_weight, gamma = args["entropy_weight"], args["commitment_weight"], args["gamma"]
        temperature, check_finite = args["temperature"], args["check_finite"]
        self.dim = check_size("LFQ", "dim", dim, 1)
        self.bits = self.dim if args["bits"] is None else args["bits"]
        if not 1 <= self.bits <= MAX_BITS:
            raise ValueError(
                f"LFQ: bits must be in [1, {MAX_BITS}] (2^bits codes, an int64 size and index), got {self.bits}"
            )
        if temperature <= 0:
            raise ValueError(f"LFQ: temperature must be positive, got {temperature}")
        if codebook_entropy is None:
            codebook_entropy = "exact" if self.bits <= _EXACT_MAX_BITS else "factorized"
        if codebook_entropy not in ("exact", "factorized"):
            raise ValueError(f"LFQ: codebook_entropy must be 'exact' or 'factorized', got {codebook_entropy!r}")
        if codebook_entropy == "exact" and self.bits > _EXACT_MAX_BITS:
            raise ValueError(f"LFQ: exact codebook entropy needs a 2^{self.bits} table; use 'factorized'")
        self.codebook_size = 2**self.bits
        self.entropy_weight = entropy_weight
        self.commitment_weight = commitment_weight
        self.gamma = gamma
        self.temperature = temperature
        self.codebook_entropy: EntropyMode = codebook_entropy
        self.check_finite = check_finite
        self.bit_order: BitOrder = check_bit_order("LFQ", bit_order)
        self.register_buffer("_powers", bit_powers(self.bits, self.bit_order), persistent=False)
        self.project_in: nn.Module = nn.Linear(self.dim, self.bits) if self.bits != self.dim else nn.Identity()
        self.project_out: nn.Module = nn.Linear(self.bits, self.dim) if self.bits != self.dim else nn.Identity()

    def entropy_terms(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(mean per-sample entropy, codebook entropy) in nats for projected z (..., bits)."""
        logits = (z.reshape(-1, self.bits) * (4.0 / self.temperature)).clamp(-MAX_LOGIT, MAX_LOGIT)
        per_sample = binary_entropy_from_logits(logits).sum(dim=1).mean()
        if self.codebook_entropy == "exact":
            codebook = exact_codebook_entropy(logits)
        else:
            mean_p = torch.sigmoid(logits).mean(dim=0)
            codebook = binary_entropy_from_logits(torch.logit(mean_p, eps=1e-7)).sum()
        return per_sample, codebook

    def _project_in(self, z: Tensor) -> Tensor:
        x: Tensor = self.project_in(z)
        if not isinstance(self.project_in, nn.Identity):
            self._require_finite(x, "project_in(z)")
        return x

    def _quantize(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self._project_in(z)
        codes = torch.where(x > 0, 1.0, -1.0)
        loss = self.commitment_weight * F.mse_loss(x, codes)
        if self.training and self.entropy_weight != 0:
            per_sample, codebook = self.entropy_terms(x)
            loss = loss + self.entropy_weight * (per_sample - self.gamma * codebook)
        quantized: Tensor = self.project_out(straight_through(x, codes))
        return quantized, self._to_indices(x), loss

    def _to_indices(self, x: Tensor) -> Tensor:
        return ((x > 0).long() * self._powers).sum(dim=-1)

    def _encode(self, z: Tensor) -> Tensor:
        return self._to_indices(self._project_in(z))

    def _decode(self, indices: Tensor) -> Tensor:
        codes: Tensor = self.project_out(index_to_signs(indices, self.bits, self.bit_order))
        return codes

    def symbol_layout(self) -> tuple[SymbolLayout, ...]:
        """One bit per digit of the index, least significant first: digit j is channel j's bit (``"lsb"``) or
        channel bits-1-j's (``"msb"``). The same layout either way; the order is the model's (its config)."""
        return (SymbolLayout.digits((2,) * self.bits),)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, bits={self.bits}, codebook_entropy={self.codebook_entropy!r}, "
                f"bit_order={self.bit_order!r}")
