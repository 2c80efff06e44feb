"""Shared catalogue of quantizers for the contract tests.

Every entry builds a small, fast quantizer with a fixed seed. ``make(name)`` returns a fresh
module; ``z_for(q, kind)`` returns a fixed-seed input of a given leading shape.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from vqkit.quantizers import (
    BSQ,
    EMAVQ,
    FSQ,
    IBQ,
    LFQ,
    VQ,
    FactorizedVQ,
    GroupedQuantizer,
    ResidualQuantizer,
    SimVQ,
)

LEVELS = (8, 5, 5, 5)


def _rq(stages: Callable[[], list], conditioning: str, **kw) -> Callable[..., ResidualQuantizer]:
    def build(check_finite: bool = True) -> ResidualQuantizer:
        return ResidualQuantizer(stages(), conditioning, check_finite=check_finite, **kw)

    return build


SINGLE: dict[str, Callable[..., torch.nn.Module]] = {
    "fsq": lambda check_finite=True: FSQ(LEVELS, check_finite=check_finite),
    "fsq_sym": lambda check_finite=True: FSQ((2, 4, 5, 3), symmetric=True, check_finite=check_finite),
    "fsq_proj": lambda check_finite=True: FSQ(LEVELS, dim=12, check_finite=check_finite),
    "lfq": lambda check_finite=True: LFQ(8, check_finite=check_finite),
    "lfq_proj": lambda check_finite=True: LFQ(12, bits=8, check_finite=check_finite),
    "bsq": lambda check_finite=True: BSQ(8, group_size=3, check_finite=check_finite),
    "bsq_proj": lambda check_finite=True: BSQ(12, bits=8, check_finite=check_finite),
    "ibq": lambda check_finite=True: IBQ(8, 64, token_chunk=20, code_chunk=24, check_finite=check_finite),
    "vq": lambda check_finite=True: VQ(8, 64, check_finite=check_finite),
    "vq_l2": lambda check_finite=True: VQ(8, 64, l2_normalize=True, check_finite=check_finite),
    "emavq": lambda check_finite=True: EMAVQ(8, 64, check_finite=check_finite),
    "factorized": lambda check_finite=True: FactorizedVQ(12, 64, code_dim=8, check_finite=check_finite),
    "simvq": lambda check_finite=True: SimVQ(8, 64, check_finite=check_finite),
    "vq_rot": lambda check_finite=True: VQ(8, 64, gradient="rotation", check_finite=check_finite),
    "emavq_rot": lambda check_finite=True: EMAVQ(8, 64, gradient="rotation", check_finite=check_finite),
    "simvq_rot": lambda check_finite=True: SimVQ(8, 64, gradient="rotation", check_finite=check_finite),
}

RESIDUAL: dict[str, Callable[..., torch.nn.Module]] = {
    "rfsq_none": _rq(lambda: [FSQ(LEVELS) for _ in range(3)], "none"),
    "rfsq_scale": _rq(lambda: [FSQ(LEVELS) for _ in range(3)], "scale"),
    "rfsq_scale_softplus": _rq(lambda: [FSQ(LEVELS) for _ in range(3)], "scale", scale_param="softplus"),
    "rfsq_ln_running": _rq(lambda: [FSQ(LEVELS) for _ in range(3)], "layernorm"),
    "rfsq_ln_instance": _rq(lambda: [FSQ(LEVELS) for _ in range(3)], "layernorm", layernorm_stats="instance"),
    "rvq_ema": _rq(lambda: [EMAVQ(8, 32) for _ in range(3)], "none"),
    "rvq_ema_scale": _rq(lambda: [EMAVQ(8, 32) for _ in range(3)], "scale"),
    "rvq_grad_ln": _rq(lambda: [VQ(8, 32) for _ in range(2)], "layernorm"),
    "rsimvq_ln_instance": _rq(lambda: [SimVQ(8, 32) for _ in range(2)], "layernorm", layernorm_stats="instance"),
    "rsimvq_scale": _rq(lambda: [SimVQ(8, 32) for _ in range(2)], "scale"),
    # grouped: a trailing axis of groups × stages, like residual stages
    "grouped_fsq": lambda check_finite=True: GroupedQuantizer(lambda: FSQ(LEVELS), 2, check_finite=check_finite),
    "grouped_lfq": lambda check_finite=True: GroupedQuantizer(lambda: LFQ(4), 2, check_finite=check_finite),
    "grouped_vq_shared": lambda check_finite=True: GroupedQuantizer(lambda: VQ(4, 32), 2, shared=True,
                                                                    check_finite=check_finite),
    "grouped_simvq_rot": lambda check_finite=True: GroupedQuantizer(lambda: SimVQ(4, 32, gradient="rotation"), 2,
                                                                    check_finite=check_finite),
    "grouped_rfsq": lambda check_finite=True: GroupedQuantizer(
        lambda: ResidualQuantizer([FSQ((5, 5, 5)), FSQ((5, 5, 5))], "scale"), 2, check_finite=check_finite),
}

ALL = {**SINGLE, **RESIDUAL}
# identity straight-through estimator: d quantized / d z == 1 exactly
IDENTITY_STE = ("vq", "emavq", "simvq", "lfq")


def make(name: str, check_finite: bool = True, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return ALL[name](check_finite=check_finite)


def is_instance_ln(q: torch.nn.Module) -> bool:
    return getattr(q, "conditioning", None) == "layernorm" and getattr(q, "layernorm_stats", None) == "instance"


def fsq_digits(levels: tuple[int, ...], indices: torch.Tensor) -> torch.Tensor:
    """Mixed-radix digits (..., n) of indices, channel 0 least significant (independent of vqkit)."""
    digits, rest = [], indices.clone()
    for level in levels:
        digits.append(rest % level)
        rest = rest // level
    return torch.stack(digits, dim=-1)


def fsq_preimage(levels: tuple[int, ...], indices: torch.Tensor, symmetric: bool = False) -> torch.Tensor:
    """z (..., n) that FSQ without projection maps to ``indices``: the centre of each digit's cell.

    Reproduces the FSQ bound independently (float64): asymmetric b = tanh(z + atanh(o/h))·h - o with
    h = (L-1)(1+1e-3)/2, o = ½ for even L; symmetric y = (L-1)(tanh z + 1)/2 + ½, digit = floor(y).
    """
    d = fsq_digits(levels, indices).double()
    lv = torch.tensor(levels, dtype=torch.float64)
    if symmetric:
        steps = lv - 1
        y = torch.where(d == 0, 0.75, torch.where(d == steps, steps + 0.25, d + 0.5))
        t = 2 * (y - 0.5) / steps - 1
        return torch.atanh(t).float()
    half = (lv - 1) * (1 + 1e-3) / 2
    offset = torch.where(lv % 2 == 0, 0.5, 0.0)
    m = d - torch.div(lv, 2, rounding_mode="floor")
    return (torch.atanh((m + offset) / half) - torch.atanh(offset / half)).float()


SHAPES = {"bhwd": (2, 4, 4), "btd": (3, 10), "nd": (48,), "big": (4, 16, 8)}


def z_for(q: torch.nn.Module, kind: str = "bhwd", seed: int = 1, scale: float = 1.0) -> torch.Tensor:
    """Fixed-seed input (..., q.dim); instance LayerNorm needs positions, so "nd" becomes (B, T)."""
    lead = SHAPES[kind]
    if kind == "nd" and is_instance_ln(q):
        lead = (4, 12)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*lead, q.dim, generator=g) * scale


def roundtrip(q: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    """decode(encode(z)), passing the side information where the module needs it."""
    if is_instance_ln(q):
        idx, side = q.encode_with_side_info(z)
        assert torch.equal(idx, q.encode(z))
        return q.decode(idx, side_info=side)
    return q.decode(q.encode(z))


def train_few(q: torch.nn.Module, kind: str = "bhwd", steps: int = 3, lr: float = 1e-2) -> None:
    """A few training steps on the quantizer's own loss plus reconstruction; leaves q in eval mode."""
    q.train()
    params = [p for p in q.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr) if params else None
    for step in range(steps):
        z = z_for(q, kind, seed=100 + step, scale=1.5)
        out = q(z)
        loss = out.loss + (out.quantized - z).pow(2).mean()
        if opt is not None:
            opt.zero_grad()
            loss.backward()
            opt.step()
    q.eval()


@pytest.fixture(params=sorted(SINGLE))
def single_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=sorted(ALL))
def any_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=sorted(RESIDUAL))
def residual_name(request: pytest.FixtureRequest) -> str:
    return request.param
