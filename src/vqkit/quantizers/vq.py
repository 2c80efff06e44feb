"""Vector quantization with a learned codebook: gradient-trained (VQ) and EMA-trained (EMAVQ).

VQ:    van den Oord et al., "Neural Discrete Representation Learning" (VQ-VAE), 2017, as
       trained in VQGAN (Esser et al., 2021): codebook loss + β·commitment loss, codebook
       initialised U(-1/K, 1/K) as in taming-transformers. The "VQGAN" row of SimVQ Table 1.
EMAVQ: Razavi et al., "VQ-VAE-2", 2019: codes are EMA cluster means with Laplace smoothing;
       the "VQ-EMA" of RFSQ Table 1 and "VQGAN-EMA" of SimVQ Table 1. Adds the usual
       dead-code restart and k-means initialisation.

Under ``torch.distributed`` EMAVQ all-reduces the per-code counts and sums *before* the EMA
and broadcasts rank 0's random choices (restart vectors, k-means seeds), so every rank holds
the same codebook with ``DDP(broadcast_buffers=False)``.

EMA statistics are summed in float64 (a float32 sum of finite tokens can overflow), then cast
back to the float32 buffers; a batch whose updated counts, sums or codebook would not be finite
in float32 leaves all three untouched and adds 1 to ``skipped_updates`` (a non-persistent
buffer: not in ``state_dict``). The decision is made on all-reduced statistics, so every rank
makes the same one, on the device (no host sync). k-means initialisation and dead-code restarts
likewise never write a non-finite row.

Loss convention of VQ, FactorizedVQ and SimVQ (van den Oord et al.): the *codebook* term
||sg(z) - q||² has weight 1 and sends gradient only to the codebook; the *commitment* term
beta·||z - sg(q)||² sends gradient only to z (the encoder).

Gradient to z through the output: straight-through (``gradient="ste"``, the default) or the rotation trick
(``gradient="rotation"``, :mod:`.rotation`), for all four code-vector quantizers (VQ, EMAVQ, FactorizedVQ,
SimVQ) and their residual forms (a stage option). It changes no forward value, index or loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import distributed
from ..validation import Dim, NonNegativeFloat, Size, check_args
from .base import Quantizer, check_codebook, check_size, l2_normalize
from .rotation import Gradient, through
from .search import (
    DEFAULT_MAX_BYTES,
    SEARCH_ARGS,
    SearchPrecision,
    check_search_bytes,
    check_search_precision,
    nearest_code,
)

VQ_ARGS = {"dim": Dim, "codebook_size": Size, "beta": NonNegativeFloat, "l2_normalize": bool, "gradient": Gradient,
           **SEARCH_ARGS}
EMAVQ_ARGS = {"dim": Dim, "codebook_size": Size, "decay": float, "beta": NonNegativeFloat, "eps": float,
              "dead_code_threshold": NonNegativeFloat, "kmeans_init": bool, "kmeans_iters": Size, "gradient": Gradient,
              **SEARCH_ARGS}
"""Types of the arguments (:func:`vqkit.validation.check_args`); ranges are checked in ``__init__``."""


def cluster_statistics(flat: Tensor, indices: Tensor, codebook_size: int) -> tuple[Tensor, Tensor]:
    """(counts (K,), sums (K, D)) of tokens per code, float64, summed over ranks; no one-hot matrix.

    float64: a float32 sum of finite float32 tokens can overflow; a float64 one cannot.
    """
    stats = flat.new_zeros(codebook_size, flat.shape[1] + 1, dtype=torch.float64)
    stats[:, 0].index_add_(0, indices, stats.new_ones(indices.shape[0]))
    stats[:, 1:].index_add_(0, indices, flat.double())
    distributed.all_reduce_sum_(stats)  # one collective for both
    return stats[:, 0], stats[:, 1:]


def _all_finite(*tensors: Tensor) -> Tensor:
    """0-d bool on the device: every value of every tensor is finite."""
    return torch.stack([torch.isfinite(t).all() for t in tensors]).all()


def sample_rows(flat: Tensor, count: int) -> Tensor:
    """``count`` rows of ``flat`` chosen at random on rank 0 and broadcast to every rank."""
    n = flat.shape[0]
    if count <= n:
        pick = torch.randperm(n, device=flat.device)[:count]
    else:
        pick = torch.randint(n, (count,), device=flat.device)
    return distributed.broadcast_(flat[pick].contiguous())


class VQ(Quantizer):
    """Learned codebook trained by gradient.

    loss = ||sg(z) - q||² + beta·||z - sg(q)||²; with ``l2_normalize`` both z and the codes
    are projected on the unit sphere first (cosine similarity; the output lives there too).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        beta: float = 0.25,
        l2_normalize: bool = False,
        search_bytes: int = DEFAULT_MAX_BYTES,
        check_finite: bool = True,
        search_precision: SearchPrecision = "auto",
        gradient: Gradient = "ste",
    ) -> None:
        super().__init__()
        args = check_args("VQ", VQ_ARGS, dim=dim, codebook_size=codebook_size, beta=beta, l2_normalize=l2_normalize,
                          search_bytes=search_bytes, check_finite=check_finite, search_precision=search_precision,
                          gradient=gradient)
        beta, l2_normalize, check_finite = args["beta"], args["l2_normalize"], args["check_finite"]
        dim, codebook_size = check_size("VQ", "dim", dim, 1), check_size("VQ", "codebook_size", codebook_size, 2)
        check_codebook("VQ", codebook_size, dim)
        self.dim, self.codebook_size = dim, codebook_size
        self.beta, self.l2_normalize, self.gradient = beta, l2_normalize, args["gradient"]
        self.search_bytes, self.check_finite = check_search_bytes("VQ", search_bytes), check_finite
        self.search_precision = check_search_precision("VQ", search_precision)
        bound = 1.0 / codebook_size
        self.codebook = nn.Parameter(torch.empty(codebook_size, dim).uniform_(-bound, bound))

    def _normed(self, x: Tensor) -> Tensor:
        return l2_normalize(x) if self.l2_normalize else x

    def _search(self, x: Tensor) -> Tensor:
        """Nearest code of already-normalised x."""
        codes = self._normed(self.codebook.detach().float())
        return nearest_code(x.detach(), codes, max_bytes=self.search_bytes, precision=self.search_precision)

    def _encode(self, z: Tensor) -> Tensor:
        return self._search(self._normed(z))

    def _quantize(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self._normed(z)
        indices = self._search(x)
        q = self._normed(self.codebook.float()[indices])  # gradient reaches the selected codes only
        loss = F.mse_loss(q, x.detach()) + self.beta * F.mse_loss(x, q.detach())
        return through(x, q, self.gradient), indices, loss

    def _decode(self, indices: Tensor) -> Tensor:
        return self._normed(self.codebook.detach().float()[indices])

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, codebook_size={self.codebook_size}, l2_normalize={self.l2_normalize}, "
                f"gradient={self.gradient!r}")


class EMAVQ(Quantizer):
    """Codebook of EMA cluster means; loss = beta·||z - sg(q)||² (commitment only).

    dead_code_threshold: codes whose EMA count falls below it are restarted from batch
    vectors (0 disables it, as in the papers' baselines). kmeans_init: the first training
    batch seeds the codebook by ``kmeans_iters`` rounds of k-means over all ranks' tokens.
    """

    codebook: Tensor
    cluster_size: Tensor
    embed_sum: Tensor
    initialized: Tensor
    skipped_updates: Tensor

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        decay: float = 0.99,
        beta: float = 0.25,
        eps: float = 1e-5,
        dead_code_threshold: float = 0.0,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        search_bytes: int = DEFAULT_MAX_BYTES,
        check_finite: bool = True,
        search_precision: SearchPrecision = "auto",
        gradient: Gradient = "ste",
    ) -> None:
        super().__init__()
        args = check_args("EMAVQ", EMAVQ_ARGS, dim=dim, codebook_size=codebook_size, decay=decay, beta=beta, eps=eps,
                          dead_code_threshold=dead_code_threshold, kmeans_init=kmeans_init, kmeans_iters=kmeans_iters,
                          search_bytes=search_bytes, check_finite=check_finite, search_precision=search_precision,
                          gradient=gradient)
        decay, beta, eps, check_finite = args["decay"], args["beta"], args["eps"], args["check_finite"]
        dead_code_threshold, kmeans_init = args["dead_code_threshold"], args["kmeans_init"]
        dim, codebook_size = check_size("EMAVQ", "dim", dim, 1), check_size("EMAVQ", "codebook_size", codebook_size, 2)
        check_codebook("EMAVQ", codebook_size, dim)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMAVQ: decay must be in [0, 1), got {decay}")
        if not eps > 0:
            raise ValueError(f"EMAVQ: eps (Laplace smoothing) must be > 0, got {eps}")
        self.dim, self.codebook_size = dim, codebook_size
        self.decay, self.beta, self.eps, self.gradient = decay, beta, eps, args["gradient"]
        self.dead_code_threshold = dead_code_threshold
        self.kmeans_init, self.kmeans_iters = kmeans_init, check_size("EMAVQ", "kmeans_iters", kmeans_iters, 0)
        self.search_bytes, self.check_finite = check_search_bytes("EMAVQ", search_bytes), check_finite
        self.search_precision = check_search_precision("EMAVQ", search_precision)
        codebook = torch.randn(codebook_size, dim)
        self.register_buffer("codebook", codebook)
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("embed_sum", codebook.clone())
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        # updates refused for a non-finite statistic; not persistent: checkpoints keep their keys
        self.register_buffer("skipped_updates", torch.zeros((), dtype=torch.long), persistent=False)

    def _encode(self, z: Tensor) -> Tensor:
        return nearest_code(z, self.codebook.float(), max_bytes=self.search_bytes, precision=self.search_precision)

    def _quantize(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        flat = z.reshape(-1, self.dim)
        if self.training and not bool(self.initialized):
            self._kmeans(flat.detach())
        indices = self._encode(z)
        q = self.codebook.float()[indices]  # the codebook before this step's update
        if self.training:
            self._ema_update(flat.detach(), indices.reshape(-1))
        loss = self.beta * F.mse_loss(z, q)
        return through(z, q, self.gradient), indices, loss

    def _decode(self, indices: Tensor) -> Tensor:
        return self.codebook.float()[indices]

    @torch.no_grad()
    def _ema_update(self, flat: Tensor, indices: Tensor) -> None:
        """One EMA step in float64; skipped (and counted) if its float32 result would not be finite."""
        counts, sums = cluster_statistics(flat, indices, self.codebook_size)  # float64, all-reduced
        cluster_size = (self.cluster_size.double() * self.decay + counts * (1 - self.decay)).float()
        embed_sum = (self.embed_sum.double() * self.decay + sums * (1 - self.decay)).float()
        total = cluster_size.double().sum()
        smoothed = (cluster_size.double() + self.eps) / (total + self.codebook_size * self.eps) * total
        codebook = (embed_sum.double() / smoothed.unsqueeze(1)).float()
        ok = _all_finite(cluster_size, embed_sum, codebook)  # from all-reduced values: same on every rank
        self.cluster_size.copy_(torch.where(ok, cluster_size, self.cluster_size))
        self.embed_sum.copy_(torch.where(ok, embed_sum, self.embed_sum))
        self.codebook.copy_(torch.where(ok, codebook, self.codebook))
        self.skipped_updates.add_((~ok).long())
        if self.dead_code_threshold > 0:
            self._restart_dead_codes(flat)

    @torch.no_grad()
    def _restart_dead_codes(self, flat: Tensor) -> None:
        dead = self.cluster_size < self.dead_code_threshold  # identical on every rank
        count = int(dead.sum())
        if count == 0:
            return
        fresh = sample_rows(flat, count)  # rank 0's rows on every rank
        embed = fresh * self.dead_code_threshold
        # a row that is not finite (check_finite=False), or whose EMA sum would not be, restarts nothing:
        # an inf embed_sum would make every later EMA step non-finite, hence skipped, for good
        finite = torch.isfinite(embed).all(dim=1) & torch.isfinite(fresh).all(dim=1)
        codes = dead.nonzero().squeeze(1)[finite]
        self.codebook[codes] = fresh[finite]
        self.embed_sum[codes] = embed[finite]
        self.cluster_size[codes] = self.dead_code_threshold

    @torch.no_grad()
    def _kmeans(self, flat: Tensor) -> None:
        centers = sample_rows(flat, self.codebook_size)
        for _ in range(self.kmeans_iters):
            assigned = nearest_code(flat, centers, max_bytes=self.search_bytes, precision=self.search_precision)
            counts, sums = cluster_statistics(flat, assigned, self.codebook_size)
            filled = counts > 0
            centers[filled] = (sums[filled] / counts[filled].unsqueeze(1)).float()
        if not bool(torch.isfinite(centers).all()):  # same on every rank; only with check_finite=False
            self.skipped_updates.add_(1)  # stay uninitialised: the next finite batch seeds the codebook
            return
        self.codebook.copy_(centers)
        self.embed_sum.copy_(centers)
        self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, decay={self.decay}, "
            f"dead_code_threshold={self.dead_code_threshold}, kmeans_init={self.kmeans_init}, "
            f"gradient={self.gradient!r}"
        )
