"""torch.distributed helpers that are no-ops in a single process.

Codebook statistics must be reduced *before* they enter an EMA, and every random choice that
changes a codebook (dead-code restart, k-means init) must be made once and broadcast, so that
every rank holds the same codebook with ``DDP(broadcast_buffers=False)``. The evaluation's sums,
code counts and FID moments are summed over ranks with the same helpers.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_reduce_sum_(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over ranks in place; returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_(tensor: Tensor, src: int = 0) -> Tensor:
    """Overwrite ``tensor`` on every rank with rank ``src``'s value; returns it."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """The sum of ``tensor`` over ranks, on ``tensor``'s device (``tensor`` itself when alone).

    For statistics kept on the CPU (evaluation sums, FID moments, code counts of unseen stages):
    NCCL reduces CUDA tensors only, so under NCCL a CPU tensor makes the trip through the GPU.
    """
    if not is_distributed():
        return tensor
    nccl = dist.get_backend() == "nccl" and not tensor.is_cuda
    work = tensor.to(torch.device("cuda", torch.cuda.current_device())) if nccl else tensor.clone()
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(tensor.device)
