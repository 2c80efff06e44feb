"""What both directions of :mod:`.vqp` share: importing vqp, copying tensors, the rotation-trick setting and the
reasons for refusing vqp's residual FSQ and LFQ."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..quantizers import Quantizer
from .errors import ConversionError


def rotation_kwargs(rotation_trick: bool) -> dict[str, Any]:
    """vqp's ``rotation_trick=True`` (VectorQuantize's default for dim > 1, SimVQ's and ResidualSimVQ's) is vqkit's
    ``gradient="rotation"``: the same Householder-form estimator, O(d) per token."""
    return {"gradient": "rotation"} if rotation_trick else {}


def rotation_of(q: Quantizer) -> bool:
    return getattr(q, "gradient", "ste") == "rotation"


def vqp_module() -> Any:
    try:
        import vector_quantize_pytorch
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ConversionError("from_vqp and to_vqp need vector-quantize-pytorch "
                              "(pip install vector-quantize-pytorch)") from err
    return vector_quantize_pytorch


@torch.no_grad()
def copy_tensor(dst: Tensor, src: Tensor) -> None:
    if dst.shape != src.shape:
        raise ConversionError(f"shape {tuple(src.shape)} cannot be copied into {tuple(dst.shape)}")
    dst.copy_(src.to(dst.dtype))


def copy_linear(dst: nn.Module, src: nn.Module) -> None:
    """Weights of one nn.Linear into another (both Identity: nothing to copy)."""
    if isinstance(dst, nn.Linear) and isinstance(src, nn.Linear):
        copy_tensor(dst.weight, src.weight)
        if dst.bias is not None and src.bias is not None:
            copy_tensor(dst.bias, src.bias)
    elif not (isinstance(dst, nn.Identity) and isinstance(src, nn.Identity)):
        raise ConversionError(f"cannot copy a {type(src).__name__} projection into a {type(dst).__name__}")


RFSQ_WHY = ("vqp's ResidualFSQ soft-clamps its input to ±(1 + 1/(L-1)), divides stage k by fixed per-channel scales "
            "L^-k and bounds with a hard clamp; vqkit's ResidualFSQ bounds with tanh and learns (or omits) one scale "
            "per stage: the grids differ, so no conversion is exact")


RLFQ_WHY = ("vqp's ResidualLFQ gives stage k the codes ±2^-k (LFQ's codebook_scale), which also scale its entropy "
            "logits; vqkit's LFQ has codebook_scale 1 only and its residual quantizer no fixed per-stage code scale "
            "(its 'scale' conditioning is a learned α_k on the residual): not converted")
