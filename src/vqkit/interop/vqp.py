"""vector-quantize-pytorch ("vqp", 1.32) modules ⇄ vqkit quantizers, exactly or not at all.

``from_vqp(module)`` and ``to_vqp(quantizer)`` copy the weights, codebooks and EMA state into a module of the
other library whose forward pass gives the same quantized output, indices and gradients (the straight-through
sums ``x + sg(q - x)`` and ``sg(q) + (x - sg(x))`` may differ in the last bit in training mode). Every option of
the source module that the target cannot reproduce is refused by name in one :class:`ConversionError`:

=========================  ========================  ==========================================================
vqp                        vqkit                     notes
=========================  ========================  ==========================================================
FSQ                        FSQ                       ``preserve_symmetry`` ⇄ ``symmetric``; same grid and indices
LFQ                        LFQ(bit_order="msb")      ``inv_temperature`` (a forward argument in vqp) ⇄
                                                     ``temperature``
LFQ(spherical=True)        BSQ(group_size=bits)      vqp's entropy is over all 2^bits codes: one group
VectorQuantize (EMA)       EMAVQ                     decay, eps, ``threshold_ema_dead_code``, commitment weight
                                                     = beta
VectorQuantize             VQ(beta=1)                ``ema_update=False, learnable_codebook=True``: vqp weights
  (learnable)                                        both loss terms by ``commitment_weight``, vqkit's codebook
                                                     term by 1
``rotation_trick=True``    ``gradient="rotation"``   VectorQuantize (its default for dim > 1), SimVQ and
                                                     ResidualSimVQ (their default), ResidualVQ's layers; the same
                                                     gradient except for vectors of norm < 1e-6: vqp clamps the
                                                     norms at 1e-6, vqkit normalises exactly and gives e = 0 the
                                                     straight-through gradient
VectorQuantize(heads=G,    GroupedQuantizer(G        ``codebook_dim = dim / G`` (no projection); one codebook per
  codebook_dim=dim/G)        VQ/EMAVQ groups)        head (``separate_codebook_per_head``) or ``shared=True``;
                                                     vqp's loss is the mean over heads, vqkit's the sum: each
                                                     group's beta is commitment_weight / G (learnable: only
                                                     commitment_weight = G converts)
ResidualVQ                 ResidualQuantizer         ``quant_grad_frac`` 0 ⇄ ``detach_residual=True``, 1 ⇄ False
GroupedResidualVQ          GroupedQuantizer(G        indices (G, ..., S) ⇄ (..., G·S), group-major; losses summed;
                             ResidualQuantizers)     ``groups=1`` converts to its one ResidualQuantizer
SimVQ                      SimVQ                     a bias-free ``code_transform`` becomes a zero, frozen bias
ResidualSimVQ              ResidualQuantizer         its residual is detached: ``detach_residual=True``
=========================  ========================  ==========================================================

Refused, each by name: projections vqkit lacks (``codebook_dim`` of VectorQuantize and ResidualVQ other than
dim / heads, ``frozen_codebook_dim``, non-linear codebook transforms), k-means state not yet initialised,
orthogonal and diversity regularisers, stochastic / Gumbel sampling, frozen or in-place optimised codebooks,
cosine-similarity codebooks (vqp's are EMA-only, vqkit's ``l2_normalize`` VQ is learnable), affine and bridge
codebooks, quantizer dropout, beam search, soft clamps, orthogonal rotations, noise dropout, channel-first
layouts, quantization outside float32, FSQ/LFQ ``num_codebooks``, vqp's ResidualFSQ and GroupedResidualFSQ
(fixed per-level scales L^-k, a hard clamp and an input soft clamp, none of which vqkit's residual FSQ has),
vqp's ResidualLFQ and GroupedResidualLFQ (codes ±2^-k at stage k, LFQ's ``codebook_scale``, which vqkit's LFQ
lacks), and on the way back grouped quantizers vqp has no module for (groups of FSQ, LFQ, SimVQ, residual
SimVQ; shared residual groups; groups with different settings). Options that change
nothing on one process are accepted: ``sync_codebook`` / ``sync_kmeans`` (vqkit all-reduces EMA statistics
whenever ``torch.distributed`` is initialised), masks (a forward argument), ``sample_codebook_temp`` without
stochastic sampling, FSQ's ``scale`` (stored, unused by vqp 1.32), ``allowed_dtypes`` and ``return_indices``
(vqkit computes in float32 and returns indices always). Losses: vqp's LFQ entropy clamps probabilities
at 1e-5 inside the log (vqkit's is exact), vqp reports residual and grouped losses per stage and group (vqkit
sums them), in eval mode vqp's LFQ reports no commitment loss, and a learnable VectorQuantize reports half of
vqkit's VQ loss (one term for both sides, the same gradients); dead-code restarts draw their random rows
differently (and a shared multi-head codebook pools the heads' tokens in another order: EMA sums agree to
rounding).

The converters live in :mod:`.vqp_from` and :mod:`.vqp_to`; :mod:`.vqp_base` holds what both share.
"""

from __future__ import annotations

from .vqp_from import from_vqp
from .vqp_to import to_vqp

__all__ = ["from_vqp", "to_vqp"]
