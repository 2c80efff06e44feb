"""The quantizers of the papers' official code, from their state dicts, key by key.

* SimVQ (github youngsheen/SimVQ, ``taming/modules/vqvae/quantize.py``, class ``SimVQ(n_e, e_dim, beta)``):
  a frozen ``nn.Embedding(n_e, e_dim)`` and ``embedding_proj = nn.Linear(e_dim, e_dim)`` with bias; the codes
  are ``embedding.weight @ embedding_proj.weight.T + embedding_proj.bias``.
* taming-transformers' ``VectorQuantizer2(n_e, e_dim, beta)`` (the VQGAN quantizer): one learned
  ``nn.Embedding(n_e, e_dim)``; the codes are its rows.

In a whole model's state dict the quantizer's keys carry a prefix (``quantize.`` in both repositories):
pass ``prefix="quantize."`` and every other key is ignored. Under the prefix, each expected key must be
present with its shape, and any other key is an error: e.g. ``used``, the buffer of both classes'
``remap`` option (a remapped index space, which vqkit does not have).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ..quantizers import VQ, SimVQ
from .errors import ConversionError


def _take(state_dict: Mapping[str, object], prefix: str, expected: list[str], owner: str) -> dict[str, Tensor]:
    """The tensors of ``expected`` keys under ``prefix``; ConversionError naming missing, unexpected or
    non-tensor entries (keys outside ``prefix`` are not looked at)."""
    if not isinstance(state_dict, Mapping):
        raise ConversionError(f"{owner}: expected a state dict (a mapping of names to tensors), "
                              f"got {type(state_dict).__name__}")
    if not isinstance(prefix, str):
        raise ConversionError(f"{owner}: prefix must be a string, got {prefix!r}")
    mine = {k[len(prefix):]: v for k, v in state_dict.items() if isinstance(k, str) and k.startswith(prefix)}
    missing = [prefix + k for k in expected if k not in mine]
    unexpected = sorted(prefix + k for k in mine if k not in expected)
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        hint = " ('used' is the buffer of the remap option, which vqkit does not support)" if any(
            k.endswith("used") for k in unexpected) else ""
        problems.append(f"unexpected keys {unexpected}{hint}")
    not_tensors = [prefix + k for k in expected if k in mine and not isinstance(mine[k], Tensor)]
    if not_tensors:
        problems.append(f"not tensors: {not_tensors}")
    if problems:
        want = [prefix + k for k in expected]
        raise ConversionError(f"{owner}: " + "; ".join(problems) + f" (expected exactly {want})")
    out: dict[str, Tensor] = {}
    for k in expected:
        tensor = mine[k]
        assert isinstance(tensor, Tensor)
        if not tensor.is_floating_point() or not bool(torch.isfinite(tensor).all()):
            raise ConversionError(f"{owner}: {prefix + k} must hold finite floating-point values")
        out[k] = tensor.detach().to("cpu", torch.float32)
    return out


def _shape_error(owner: str, key: str, got: Tensor, want: str) -> ConversionError:
    return ConversionError(f"{owner}: {key} has shape {tuple(got.shape)}, expected {want}")


def simvq_from_official(state_dict: Mapping[str, object], *, prefix: str = "", beta: float = 0.25) -> SimVQ:
    """vqkit's :class:`~vqkit.quantizers.SimVQ` holding the official SimVQ quantizer's weights.

    Keys (after ``prefix``), exactly these:

    * ``embedding.weight``: (K, d), the frozen codebook C (official init N(0, d^-1/2)) -> ``SimVQ.codebook``;
    * ``embedding_proj.weight``: (d, d), W of ``nn.Linear(d, d)`` -> ``SimVQ.linear.weight``;
    * ``embedding_proj.bias``: (d,), b -> ``SimVQ.linear.bias``.

    The codes are ``C @ W.T + b``, as the official forward computes them (and as its decode from indices
    forgets: vqkit's applies W and b). ``beta`` weights the encoder's commitment term, 0.25 as the official
    default (its codebook term has weight 1, as vqkit's).
    """
    owner = "simvq_from_official"
    t = _take(state_dict, prefix, ["embedding.weight", "embedding_proj.weight", "embedding_proj.bias"], owner)
    codebook, weight, bias = t["embedding.weight"], t["embedding_proj.weight"], t["embedding_proj.bias"]
    if codebook.ndim != 2 or codebook.shape[0] < 2:
        raise _shape_error(owner, prefix + "embedding.weight", codebook, "(K, d) with K >= 2")
    k, d = codebook.shape
    if weight.shape != (d, d):
        raise _shape_error(owner, prefix + "embedding_proj.weight", weight, f"({d}, {d}) (embedding dim d = {d})")
    if bias.shape != (d,):
        raise _shape_error(owner, prefix + "embedding_proj.bias", bias, f"({d},)")
    q = SimVQ(d, k, beta=beta)
    with torch.no_grad():
        q.codebook.copy_(codebook)
        q.linear.weight.copy_(weight)
        q.linear.bias.copy_(bias)
    return q


def vq_from_taming(state_dict: Mapping[str, object], *, prefix: str = "", beta: float = 0.25) -> VQ:
    """vqkit's :class:`~vqkit.quantizers.VQ` holding taming-transformers' ``VectorQuantizer2`` codebook.

    Keys (after ``prefix``), exactly this one:

    * ``embedding.weight``: (K, d), the codebook (taming's init U(-1/K, 1/K), vqkit's too) -> ``VQ.codebook``.

    Indices are the nearest rows in squared L2, as taming's argmin of ``|z|² + |e|² - 2 z·e``. The loss:
    vqkit weights the commitment term ``||z - sg(q)||²`` by ``beta`` and the codebook term by 1, which is
    taming's ``legacy=False``; taming's default ``legacy=True`` puts ``beta`` on the codebook term instead.
    """
    owner = "vq_from_taming"
    codebook = _take(state_dict, prefix, ["embedding.weight"], owner)["embedding.weight"]
    if codebook.ndim != 2 or codebook.shape[0] < 2:
        raise _shape_error(owner, prefix + "embedding.weight", codebook, "(K, d) with K >= 2")
    k, d = codebook.shape
    q = VQ(d, k, beta=beta)
    with torch.no_grad():
        q.codebook.copy_(codebook)
    return q
