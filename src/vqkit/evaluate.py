"""The one evaluation loop, for every modality: a model's reconstructions scored by the modality's
:class:`~vqkit.modalities.Scorer`, codebook use over every token, and real file rates.

One function serves ``vqkit eval`` (:mod:`vqkit.runs`) and the training loop's validation, so a run's
validation numbers and a later ``vqkit eval`` of its final model are computed the same way. With
``distributed=True`` every rank evaluates its shard and the scores and code counts are all-reduced;
every rank must then call it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from .codec.tiled import Codec
from .metrics import CodeUsage
from .modalities.base import Evaluation, FileRates, Scorer
from .models import Tokenizer


@torch.no_grad()
def evaluate(model: Tokenizer, batches: Iterable[Tensor], device: torch.device | str, scorer: Scorer, *,
             amp_dtype: torch.dtype | None = None, distributed: bool = False, keep_samples: int = 0,
             codec: Codec[Any] | None = None, progress: str = "") -> Evaluation:
    """Evaluate ``model`` (eval mode for the duration) on every batch of ``batches`` (the modality's
    ``eval_loader``). ``amp_dtype`` runs the model under autocast (scores are always float32); ``codec``
    (this model's) adds real ``.vqt`` file rates per prior, header included; ``keep_samples`` keeps that
    many (original, reconstruction) pairs for pictures and sounds; ``progress`` names a progress bar shown on a
    terminal (none when empty, or when output is piped)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    usage = CodeUsage(model.quantizer.codebook_sizes)
    rates = FileRates() if codec is not None else None
    samples: list[tuple[Tensor, Tensor]] = []
    if progress:
        batches = tqdm(batches, desc=progress, unit="batch", file=sys.stderr, disable=None, leave=False)
    try:
        for batch in batches:
            rec = scorer.reconstruct(model, batch, device, amp_dtype)
            scorer.update(rec)
            usage.update(rec.indices)
            if codec is not None and rates is not None:
                tokens = rec.indices if model.residual else rec.indices[..., None]
                rates.add(codec.file_bits(tokens, rec.shapes[0]),
                          [_samples(codec, shape) for shape in rec.shapes])
            for original, recon in zip(rec.target, rec.recon, strict=True):
                if len(samples) >= keep_samples:
                    break
                samples.append((original.cpu(), recon.cpu()))
    finally:
        model.train(was_training)
    if distributed:  # no-ops outside a process group
        scorer.all_reduce()
        usage.all_reduce()
    metrics = scorer.result(model, usage, rates)
    return Evaluation(metrics, usage, samples, {} if distributed else scorer.per_item())


def _samples(codec: Codec[Any], shape: tuple[int, ...]) -> int:
    count = 1
    for n in codec.adapter.spatial(shape):
        count *= n
    return count


__all__ = ["evaluate"]
