"""Modules and weights from other libraries, and back.

* :func:`from_vqp` / :func:`to_vqp`: vector-quantize-pytorch ("vqp", tested against 1.32.0) modules ⇄ vqkit
  quantizers with the same quantized outputs, indices and gradients (:mod:`.vqp` has the table): FSQ, LFQ and
  spherical LFQ, VectorQuantize (EMA, learnable, multi-head), ResidualVQ, GroupedResidualVQ, SimVQ and
  ResidualSimVQ, with vqp's ``rotation_trick`` as vqkit's ``gradient="rotation"``; every vqp option or module
  vqkit cannot reproduce is refused by name (:class:`ConversionError`), never dropped.
* :func:`simvq_from_official`, :func:`vq_from_taming`: the quantizers of the papers' official code, from
  their state dicts (:mod:`.official`).

vqp is optional: it is imported only when a vqp module is built or checked.
"""

from .errors import ConversionError
from .official import simvq_from_official, vq_from_taming
from .vqp import from_vqp, to_vqp

__all__ = [
    "ConversionError",
    "from_vqp",
    "simvq_from_official",
    "to_vqp",
    "vq_from_taming",
]
