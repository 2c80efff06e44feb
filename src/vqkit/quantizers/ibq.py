"""Index Backpropagation Quantization (IBQ).

Shi, Luo, Ge, Yang, Shan, Wang, "Taming Scalable Visual Tokenizer for Autoregressive Image Generation",
2024; the official class is ``IndexPropagationQuantize`` (TencentARC SEED-Voken / Open-MAGVIT2). vqp has
no IBQ.

Forward, for the N tokens z_n (rows of z, (N, d)) and the K codes c_k (rows of the codebook, (K, d)):

    l_nk = z_n · c_k                       dot-product logits, temperature 1 (as the official code)
    p_n  = softmax_k(l_n)                  the soft one-hot
    i_n  = argmax_k l_nk                   the index (lowest k on ties), h_n its hard one-hot
    y_n  = Σ_k (h_nk + p_nk - sg(p_nk)) c_k    the straight-through one-hot times the codebook

The value of y_n is exactly c_{i_n} (decode(encode(z)) == the forward output); its gradient reaches z and
*every* code through the softmax. With g_n = ∂L/∂y_n (derived by hand, and what the backward computes):

    a_nk = g_n · c_k                       ∂L/∂p_nk
    s_n  = Σ_k p_nk a_nk = g_n · ȳ_n       ȳ_n = Σ_k p_nk c_k, the soft code (kept from the forward)
    ∂L/∂l_nk = p_nk (a_nk - s_n)           (the softmax's Jacobian)
    ∂L/∂z_n  = Σ_k ∂L/∂l_nk c_k
    ∂L/∂c_k  = Σ_n ∂L/∂l_nk z_n + Σ_{n: i_n = k} g_n   (the second sum: the one-hot's value is h)

Memory: nothing of shape (N, K) is ever built. Tokens and codes are cut into blocks of at most
``token_chunk × code_chunk`` logits (32 MiB by default). The forward makes one pass over the code blocks per
token block with a running max, argmax, Σ exp and soft code ȳ (the online softmax: earlier sums are rescaled
when the max grows) and keeps only max_n, log Σ_n, ȳ (N, d) and i (N,); the backward recomputes each block's
logits (and a_nk, from the same product with [z; g] stacked) and accumulates ∂L/∂z and ∂L/∂codes. Peak
memory: O(N·d + K·d) plus two blocks. Cost: 6 products of the size of z @ codesᵀ (2 forward, 4 backward),
and two exp passes over the N·K logits (probabilities below 3e-20 count as 0: :func:`exp_`).

Range: when max|z|·max|c|·d would let a logit overflow float32 (or sink below its normal range), z is first
multiplied by a power of two 2^-e and the softmax is taken of 2^e·(l' - max l'): exact scaling, so the
argmax is that of the exact logits and huge logits give a one-hot softmax instead of NaN.

Loss: the official code's ``quant_loss`` (checked in ``IndexPropagationQuantize.forward``; the paper, not in
this repository, calls it the double quantization loss: the VQ terms of the hard code q = c_i plus one term
through the straight-through one-hot):

    loss = mean((y - z)²) + mean((sg(q) - z)²) + beta·mean((q - sg(z))²)

the first term through the straight-through one-hot (to z and every code), the second to the encoder only,
the third (weight beta = 0.25) to the selected codes only. Its value is (2 + beta)·mean((q - z)²).

Where vqkit follows or deviates, on purpose:
* follows the official code: dot-product logits without temperature or normalisation, the loss above,
  the codebook initialised N(0, 1) (``nn.Embedding``'s default), the output y (not z + sg(q - z)): the
  encoder's gradient goes through the softmax only, as in the official code;
* entropy terms: not implemented. The official class has them off by default (``use_entropy_loss=False``),
  but its released IBQ configs turn them on (temperature 0.01, weight 0.05): training those recipes
  needs them added;
* the forward value is exactly c_i (the official (h - p + p) @ E rounds to it).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..validation import Dim, NonNegativeFloat, Size, check_args
from .base import Quantizer, check_codebook, check_size, float32_math

DEFAULT_TOKEN_CHUNK = 4096
DEFAULT_CODE_CHUNK = 2048
"""Default block: 4096 tokens × 2048 codes = 32 MiB of float32 logits (the backward holds two such blocks)."""
ARGS = {"dim": Dim, "codebook_size": Size, "beta": NonNegativeFloat, "token_chunk": Size, "code_chunk": Size,
        "check_finite": bool}
"""Types of IBQ's arguments (:func:`vqkit.validation.check_args`); ranges are checked in ``__init__``."""

_SAFE_LOG2 = 100  # logits stay below 2^100 (and above 2^-40 at the top) once z is rescaled
_LOW_LOG2 = -40
_EXP_FLOOR = -45.0  # exp(-45) = 2.9e-20 ...
_P_FLOOR = 3e-20  # ... is below this threshold, so that every clamped argument gives exactly 0


def logit_exponent(z: Tensor, codes: Tensor) -> int:
    """e such that the logits of z·2^-e are safe: |z'·c| ≤ max|z'|·max|c|·d in [2^-40, 2^100]; 0 when the
    bound already is (the ordinary range), or is 0 or not finite (NaN lets through). One host sync."""
    ranges = torch.stack([*torch.aminmax(z.detach()), *torch.aminmax(codes.detach())]).tolist()  # no |x| copy
    bound = max(-ranges[0], ranges[1]) * max(-ranges[2], ranges[3]) * z.shape[-1]  # float64: cannot overflow
    if not math.isfinite(bound) or bound == 0:
        return 0
    exponent = math.frexp(bound)[1]  # bound < 2^exponent
    if exponent > _SAFE_LOG2:
        return exponent - _SAFE_LOG2
    if exponent < _LOW_LOG2:
        return exponent
    return 0


def times_pow2_(x: Tensor, exponent: int) -> Tensor:
    """x·2^exponent in place, in steps that each stay a normal float32 scalar (exact but for under/overflow)."""
    while exponent != 0:
        step = max(-100, min(100, exponent))
        x.mul_(2.0**step)
        exponent -= step
    return x


def exp_(x: Tensor) -> Tensor:
    """exp in place, with every result below 3e-20 (about 2^-65) set to exactly 0.

    Why: on CPU, exp of arguments below ~-87 takes a slow path (30× slower, measured on AVX-512), and a
    matrix product with subnormal terms another (~10×); most logits of a large codebook sit there. Clamping
    at -45 and thresholding avoids both. What is dropped cannot show in float32: at most K·3e-20 of a
    softmax whose sum is 1 (below float32's 2^-24 resolution for any K < 2^40).
    """
    return F.threshold(x.clamp_(min=_EXP_FLOOR).exp_(), _P_FLOOR, 0.0, inplace=True)


def _code_blocks(codes: Tensor, code_chunk: int) -> list[tuple[int, Tensor]]:
    return [(k0, codes[k0 : k0 + code_chunk]) for k0 in range(0, codes.shape[0], code_chunk)]


def argmax_logits(zs: Tensor, codes: Tensor, token_chunk: int, code_chunk: int) -> Tensor:
    """argmax_k zs_n·c_k (lowest k on ties) for (N, d) ``zs``, in blocks: the index, no softmax. (N,) int64."""
    n, k = zs.shape[0], codes.shape[0]
    out = torch.zeros(n, dtype=torch.long, device=zs.device)
    buf = zs.new_empty(min(n, token_chunk) * min(k, code_chunk))
    for n0 in range(0, n, token_chunk):
        zb = zs[n0 : n0 + token_chunk]
        best = zs.new_full((zb.shape[0],), -math.inf)
        for k0, c in _code_blocks(codes, code_chunk):
            logits = torch.mm(zb, c.t(), out=buf[: zb.shape[0] * c.shape[0]].view(zb.shape[0], c.shape[0]))
            top, arg = logits.max(dim=1)
            better = top > best  # strictly: an earlier block keeps a tie
            out[n0 : n0 + zb.shape[0]] = torch.where(better, arg + k0, out[n0 : n0 + zb.shape[0]])
            best = torch.maximum(best, top)
    return out


def _soft_statistics(zs: Tensor, codes: Tensor, exponent: int, token_chunk: int, code_chunk: int
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(indices (N,), max_n of the scaled logits (N,), log Σ_k exp(l_nk - max_n) (N,), ȳ (N, d)), one pass over
    the code blocks per token block (online softmax)."""
    n, k = zs.shape[0], codes.shape[0]
    indices = torch.zeros(n, dtype=torch.long, device=zs.device)
    top = zs.new_full((n,), -math.inf)
    total = zs.new_zeros(n)
    soft = zs.new_zeros(n, codes.shape[1])
    buf = zs.new_empty(min(n, token_chunk) * min(k, code_chunk))
    for n0 in range(0, n, token_chunk):
        rows = slice(n0, min(n, n0 + token_chunk))
        zb, m, s, y = zs[rows], top[rows], total[rows], soft[rows]
        for k0, c in _code_blocks(codes, code_chunk):
            logits = torch.mm(zb, c.t(), out=buf[: zb.shape[0] * c.shape[0]].view(zb.shape[0], c.shape[0]))
            block_top, arg = logits.max(dim=1)
            better = block_top > m
            indices[rows] = torch.where(better, arg + k0, indices[rows])
            new_top = torch.maximum(m, block_top)
            rescale = times_pow2_(m - new_top, exponent).exp_()  # exp(-inf) = 0 on the first block
            exp_(times_pow2_(logits.sub_(new_top[:, None]), exponent))
            s.mul_(rescale).add_(logits.sum(dim=1))
            y.mul_(rescale[:, None]).addmm_(logits, c)
            m.copy_(new_top)
    soft.div_(total[:, None])
    return indices, top, total.log_(), soft


class _SoftOneHotProduct(torch.autograd.Function):
    """(z (N, d), codes (K, d)) -> (y = codes[i] with the gradients of the module docstring, i); blocked."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, codes: Tensor, exponent: int, token_chunk: int, code_chunk: int
                ) -> tuple[Tensor, Tensor]:
        zs = times_pow2_(z.detach().clone(), -exponent) if exponent else z.detach()
        indices, top, log_total, soft = _soft_statistics(zs, codes.detach(), exponent, token_chunk, code_chunk)
        ctx.save_for_backward(z, codes, indices, top, log_total, soft)
        ctx.chunks = (exponent, token_chunk, code_chunk)
        ctx.mark_non_differentiable(indices)
        return codes.detach()[indices], indices

    @staticmethod
    def backward(ctx: Any, grad: Tensor, _unused: Tensor | None) -> tuple[Tensor | None, ...]:
        z, codes, indices, top, log_total, soft = ctx.saved_tensors
        exponent, token_chunk, code_chunk = ctx.chunks
        with float32_math(z.device):
            grad_z, grad_codes = _soft_backward(grad.to(z.dtype).contiguous(), z, codes, indices, top, log_total, soft,
                                                exponent, token_chunk, code_chunk)
        return (grad_z if ctx.needs_input_grad[0] else None, grad_codes if ctx.needs_input_grad[1] else None,
                None, None, None)


def _soft_backward(g: Tensor, z: Tensor, codes: Tensor, indices: Tensor, top: Tensor, log_total: Tensor,
                   soft: Tensor, exponent: int, token_chunk: int, code_chunk: int) -> tuple[Tensor, Tensor]:
    """(∂L/∂z, ∂L/∂codes) by the formulas of the module docstring, block by block."""
    n, k = z.shape[0], codes.shape[0]
    zs = times_pow2_(z.detach().clone(), -exponent) if exponent else z.detach()
    codes = codes.detach()
    s = (g * soft).sum(dim=1)  # s_n = g_n · ȳ_n
    grad_z = torch.zeros_like(z)
    grad_codes = torch.zeros_like(codes).index_add_(0, indices, g)  # the hard one-hot's own path
    buf = z.new_empty(2 * min(n, token_chunk) * min(k, code_chunk))
    for n0 in range(0, n, token_chunk):
        rows = slice(n0, min(n, n0 + token_chunk))
        nb = rows.stop - n0
        both = torch.cat([zs[rows], g[rows]])  # one product gives the logits and a_nk
        shift = top[rows, None] if exponent else (top[rows] + log_total[rows])[:, None]
        for k0, c in _code_blocks(codes, code_chunk):
            la = torch.mm(both, c.t(), out=buf[: 2 * nb * c.shape[0]].view(2 * nb, c.shape[0]))
            p, a = la[:nb], la[nb:]
            if exponent:
                times_pow2_(p.sub_(shift), exponent).sub_(log_total[rows, None])
            else:
                p.sub_(shift)
            exp_(p)
            a.sub_(s[rows, None]).mul_(p)  # ∂L/∂l = p (a - s)
            grad_z[rows].addmm_(a, c)
            grad_codes[k0 : k0 + c.shape[0]].addmm_(a.t(), z[rows].detach())
    return grad_z, grad_codes


class IBQ(Quantizer):
    """Index backpropagation quantization: z (..., dim) -> codes[argmax z·cᵀ] (..., dim), indices (...,) in
    [0, codebook_size); every code gets gradient through the softmax. See the module docstring.

    token_chunk, code_chunk: the block of logits computed at once (memory, not results: any values give the
    same indices and, up to float32 rounding, the same gradients).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        beta: float = 0.25,
        token_chunk: int = DEFAULT_TOKEN_CHUNK,
        code_chunk: int = DEFAULT_CODE_CHUNK,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        args = check_args("IBQ", ARGS, dim=dim, codebook_size=codebook_size, beta=beta, token_chunk=token_chunk,
                          code_chunk=code_chunk, check_finite=check_finite)
        self.dim = check_size("IBQ", "dim", dim, 1)
        self.codebook_size = check_size("IBQ", "codebook_size", codebook_size, 2)
        check_codebook("IBQ", self.codebook_size, self.dim)
        self.beta: float = args["beta"]
        self.token_chunk = check_size("IBQ", "token_chunk", token_chunk, 1)
        self.code_chunk = check_size("IBQ", "code_chunk", code_chunk, 1)
        self.check_finite = args["check_finite"]
        self.codebook = nn.Parameter(torch.randn(self.codebook_size, self.dim))  # nn.Embedding's N(0, 1)

    def _encode(self, z: Tensor) -> Tensor:
        flat = z.reshape(-1, self.dim)
        codes = self.codebook.detach().float()
        exponent = logit_exponent(flat, codes)
        zs = times_pow2_(flat.clone(), -exponent) if exponent else flat
        return argmax_logits(zs, codes, self.token_chunk, self.code_chunk).reshape(z.shape[:-1])

    def _quantize(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        flat = z.reshape(-1, self.dim)
        codes = self.codebook.float()
        if torch.is_grad_enabled() and (flat.requires_grad or codes.requires_grad):
            exponent = logit_exponent(flat, codes)
            y, indices = _SoftOneHotProduct.apply(  # type: ignore[no-untyped-call]
                flat, codes, exponent, self.token_chunk, self.code_chunk)
        else:  # no gradient wanted: the index alone
            indices = self._encode(z).reshape(-1)
            y = codes[indices]
        q = codes[indices]  # the hard code, with gradient to the selected rows only
        loss = F.mse_loss(y, flat) + F.mse_loss(flat, q.detach()) + self.beta * F.mse_loss(q, flat.detach())
        return y.reshape(z.shape), indices.reshape(z.shape[:-1]), loss

    def _decode(self, indices: Tensor) -> Tensor:
        return self.codebook.detach().float()[indices]

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, codebook_size={self.codebook_size}, beta={self.beta}, "
                f"token_chunk={self.token_chunk}, code_chunk={self.code_chunk}")
