"""vector-quantize-pytorch ("vqp", 1.32) modules ⇄ vqkit quantizers, exactly or not at all.

``from_vqp(module)`` and ``to_vqp(quantizer)`` copy the weights, codebooks and EMA state into a module of the
other library whose forward pass gives the same quantized output, indices and gradients (the straight-through
sums ``x + sg(q - x)`` and ``sg(q) + (x - sg(x))`` may differ in the last bit in training mode). Every option of
the source module that the target cannot reproduce is refused by name in one :class:`ConversionError`:

=====================  ======================  ==============================================================
vqp                    vqkit                   notes
=====================  ======================  ==============================================================
FSQ                    FSQ                     ``preserve_symmetry`` ⇄ ``symmetric``; same grid and indices
LFQ                    LFQ(bit_order="msb")    ``inv_temperature`` (a forward argument in vqp) ⇄ ``temperature``
LFQ(spherical=True)    BSQ(group_size=bits)    vqp's entropy is over all 2^bits codes: one group
VectorQuantize (EMA)   EMAVQ                   decay, eps, ``threshold_ema_dead_code``, commitment weight = beta
VectorQuantize         VQ(beta=1)              ``ema_update=False, learnable_codebook=True``: vqp weights both
  (learnable)                                  loss terms by ``commitment_weight``, vqkit's codebook term by 1
ResidualVQ             ResidualQuantizer       ``quant_grad_frac`` 0 ⇄ ``detach_residual=True``, 1 ⇄ False
SimVQ                  SimVQ                   a bias-free ``code_transform`` becomes a zero, frozen bias
ResidualSimVQ          ResidualQuantizer       its residual is detached: ``detach_residual=True``
=====================  ======================  ==============================================================

Refused, each by name: multi-head / grouped codebooks, projections vqkit lacks (``codebook_dim`` of
VectorQuantize and ResidualVQ, ``frozen_codebook_dim``, non-linear codebook transforms), k-means state not
yet initialised, orthogonal and diversity regularisers, stochastic / Gumbel sampling, frozen or in-place
optimised codebooks, cosine-similarity codebooks (vqp's are EMA-only, vqkit's ``l2_normalize`` VQ is
learnable), affine and bridge codebooks, quantizer dropout, beam search, soft clamps, orthogonal rotations,
noise dropout, channel-first layouts, quantization outside float32, vqp's ResidualFSQ (fixed per-level
scales L^-k, a hard clamp and an input soft clamp, none of which vqkit's residual FSQ has) and the rotation
trick until vqkit has ``gradient="rotation"`` (:data:`ROTATION_TRICK_SUPPORTED`). Options that change
nothing on one process are accepted: ``sync_codebook`` / ``sync_kmeans`` (vqkit all-reduces EMA statistics
whenever ``torch.distributed`` is initialised), masks (a forward argument), ``sample_codebook_temp`` without
stochastic sampling, FSQ's ``scale`` (stored, unused by vqp 1.32), ``allowed_dtypes`` and ``return_indices``
(vqkit computes in float32 and returns indices always). Losses: vqp's LFQ entropy clamps probabilities
at 1e-5 inside the log (vqkit's is exact), vqp reports residual losses per stage (vqkit sums them), in eval
mode vqp's LFQ reports no commitment loss, and a learnable VectorQuantize reports half of vqkit's VQ loss
(one term for both sides, the same gradients); dead-code restarts draw their random rows differently.
"""

from __future__ import annotations

from .vqp_from import from_vqp
from .vqp_to import to_vqp

__all__ = ["from_vqp", "to_vqp"]
