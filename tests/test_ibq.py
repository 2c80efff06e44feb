"""IBQ: the blocked softmax straight-through product against the explicit (N, K) form, and the module."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vqkit.models.registry import QUANTIZERS
from vqkit.quantizers import IBQ
from vqkit.quantizers.ibq import _SoftOneHotProduct, exp_, logit_exponent


def dense(z: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The official form, written out with the (N, K) tensors: (h - sg(p) + p) @ codes, argmax of z·cᵀ."""
    logits = z @ codes.t()
    soft = logits.softmax(dim=-1)
    idx = logits.argmax(dim=-1)
    hard = F.one_hot(idx, codes.shape[0]).to(z.dtype)
    return (hard - soft.detach() + soft) @ codes, idx


def dense_loss(z: torch.Tensor, codes: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, loss) of the official IndexPropagationQuantize, channels last."""
    y, idx = dense(z, codes)
    q = codes[idx]
    loss = (y - z).pow(2).mean() + (q.detach() - z).pow(2).mean() + beta * (q - z.detach()).pow(2).mean()
    return y, loss


def blocked(z: torch.Tensor, codes: torch.Tensor, token_chunk: int, code_chunk: int, exponent: int = 0):  # type: ignore[no-untyped-def]
    return _SoftOneHotProduct.apply(z, codes, exponent, token_chunk, code_chunk)


@pytest.mark.parametrize(("n", "k", "d", "token_chunk", "code_chunk"),
                         [(13, 37, 5, 4, 7), (16, 16, 3, 16, 16), (7, 50, 4, 100, 3), (9, 11, 6, 1, 1)])
@pytest.mark.parametrize("exponent", [0, 5, -3])
def test_gradients_match_brute_force_float64(n: int, k: int, d: int, token_chunk: int, code_chunk: int,
                                             exponent: int) -> None:
    """Chunk sizes that do not divide N or K, one chunk for all, one element a chunk; the rescaled-logit
    path (exponent != 0) computes the same softmax."""
    g = torch.Generator().manual_seed(n * k + d)
    z = (torch.randn(n, d, generator=g, dtype=torch.float64) * 0.8).requires_grad_()
    codes = torch.randn(k, d, generator=g, dtype=torch.float64).requires_grad_()
    up = torch.randn(n, d, generator=g, dtype=torch.float64)
    y, idx = blocked(z, codes, token_chunk, code_chunk, exponent)
    y_ref, idx_ref = dense(z, codes)
    assert torch.equal(idx, idx_ref)
    assert torch.equal(y, codes.detach()[idx_ref])  # the value is exactly the code
    grads = torch.autograd.grad((y * up).sum(), (z, codes))
    grads_ref = torch.autograd.grad((y_ref * up).sum(), (z, codes))
    for got, want in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_gradients_match_hand_formulas() -> None:
    """The docstring's formulas, evaluated independently: ∂L/∂l = p(a - s), ∂z = (∂l) C, ∂C = (∂l)ᵀ z + hᵀ g."""
    g = torch.Generator().manual_seed(3)
    z = torch.randn(6, 4, generator=g, dtype=torch.float64).requires_grad_()
    codes = torch.randn(9, 4, generator=g, dtype=torch.float64).requires_grad_()
    up = torch.randn(6, 4, generator=g, dtype=torch.float64)
    y, idx = blocked(z, codes, 4, 5)
    gz, gc = torch.autograd.grad((y * up).sum(), (z, codes))
    with torch.no_grad():
        p = (z @ codes.t()).softmax(dim=-1)
        a = up @ codes.t()
        s = (p * a).sum(dim=1, keepdim=True)
        dl = p * (a - s)
        hard = F.one_hot(idx, 9).double()
        torch.testing.assert_close(gz, dl @ codes, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(gc, dl.t() @ z + hard.t() @ up, rtol=1e-12, atol=1e-14)


def test_module_loss_and_gradients_match_the_official_form() -> None:
    torch.manual_seed(0)
    q = IBQ(6, 40, beta=0.25, token_chunk=7, code_chunk=9)
    z = (torch.randn(3, 5, 6) * 0.5).requires_grad_()
    out = q(z)
    codes = q.codebook
    z_ref = z.detach().clone().requires_grad_()
    y_ref, loss_ref = dense_loss(z_ref.reshape(-1, 6), codes, 0.25)
    torch.testing.assert_close(out.quantized, y_ref.reshape(z.shape).detach())
    torch.testing.assert_close(out.loss, loss_ref.detach())
    up = torch.randn(3, 5, 6)
    gz, gc = torch.autograd.grad((out.quantized * up).sum() + out.loss, (z, codes))
    gz_ref, gc_ref = torch.autograd.grad((y_ref.reshape(z.shape) * up).sum() + loss_ref, (z_ref, codes))
    torch.testing.assert_close(gz, gz_ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gc, gc_ref, rtol=1e-4, atol=1e-6)
    q_hard = codes.detach()[out.indices]
    assert out.loss.item() == pytest.approx(2.25 * (q_hard - z.detach()).pow(2).mean().item(), rel=1e-5)


def test_every_code_receives_gradient() -> None:
    torch.manual_seed(1)
    q = IBQ(4, 16, token_chunk=5, code_chunk=3)
    z = torch.randn(10, 4)
    out = q(z)
    (out.quantized.square().mean() + out.loss).backward()
    assert q.codebook.grad is not None
    assert (q.codebook.grad.abs().sum(dim=1) > 0).all()  # all 16 rows, not only the selected ones
    assert out.indices.unique().numel() < 16  # some codes were not selected, and still got gradient


def test_no_n_by_k_tensor_is_saved_for_backward() -> None:
    """The autograd graph keeps O(N·d + K·d): no saved tensor has N·K elements (N = 64, K = 512)."""
    q = IBQ(4, 512, token_chunk=16, code_chunk=32)
    z = torch.randn(64, 4, requires_grad=True)
    sizes: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = q(z)
        (out.quantized.sum() + out.loss).backward()
    assert sizes and max(sizes) <= 512 * 4 < 64 * 512


@pytest.mark.parametrize(("token_chunk", "code_chunk"), [(1, 1), (7, 13), (48, 64), (1000, 1000)])
def test_chunk_sizes_do_not_change_results(token_chunk: int, code_chunk: int) -> None:
    torch.manual_seed(2)
    ref = IBQ(8, 64, token_chunk=48, code_chunk=64)
    q = IBQ(8, 64, token_chunk=token_chunk, code_chunk=code_chunk)
    q.load_state_dict(ref.state_dict())
    z = torch.randn(48, 8)
    grads = []
    for module in (ref, q):
        zz = z.clone().requires_grad_()
        out = module(zz)
        (out.quantized.pow(3).mean() + out.loss).backward()
        grads.append((out.indices, out.quantized.detach(), zz.grad, module.codebook.grad))
    assert torch.equal(grads[0][0], grads[1][0])
    assert torch.equal(grads[0][1], grads[1][1])
    for a, b in zip(grads[0][2:], grads[1][2:], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert torch.equal(q.encode(z), grads[0][0])


def test_decode_of_encode_equals_forward_exactly() -> None:
    torch.manual_seed(4)
    q = IBQ(8, 300, token_chunk=11, code_chunk=17)
    z = torch.randn(2, 9, 8, requires_grad=True)
    out = q(z)  # training path, with gradient
    assert torch.equal(q.decode(q.encode(z)), out.quantized.detach())
    q.eval()
    with torch.no_grad():
        out = q(z)
    assert torch.equal(q.decode(q.encode(z)), out.quantized)
    logits = z.detach().reshape(-1, 8).double() @ q.codebook.detach().double().t()
    assert torch.equal(out.indices.reshape(-1), logits.argmax(dim=1))  # argmax of the dot product


@pytest.mark.parametrize("scale", [2.0**-90, 2.0**100])
def test_extreme_scales_keep_the_exact_argmax(scale: float) -> None:
    """Tiny z: its products would underflow; huge z: its logits would overflow. Both are rescaled by a
    power of two: the argmax is the float64 one, and the gradients are finite."""
    torch.manual_seed(5)
    q = IBQ(8, 64, token_chunk=10, code_chunk=20)
    z = torch.randn(30, 8) * scale
    assert logit_exponent(z, q.codebook) != 0
    z.requires_grad_()
    out = q(z)
    logits = z.detach().double() @ q.codebook.detach().double().t()
    assert torch.equal(out.indices, logits.argmax(dim=1))
    gz, gc = torch.autograd.grad(out.quantized.sum(), (z, q.codebook))
    assert torch.isfinite(gz).all() and torch.isfinite(gc).all()
    assert logit_exponent(torch.randn(30, 8), q.codebook) == 0  # the ordinary range is left alone


def test_training_steps_lower_the_loss() -> None:
    """An encoder and decoder around IBQ learn to reconstruct clustered data; the loss falls."""
    torch.manual_seed(6)
    centres = torch.randn(8, 4) * 3
    data = centres[torch.randint(0, 8, (256,))] + 0.1 * torch.randn(256, 4)
    enc, dec, q = torch.nn.Linear(4, 8), torch.nn.Linear(8, 4), IBQ(8, 32, token_chunk=100, code_chunk=10)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters(), *q.parameters()], lr=3e-2)
    losses = []
    for _ in range(40):
        out = q(enc(data))
        loss = (dec(out.quantized) - data).pow(2).mean() + 0.1 * out.loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_bad_arguments_and_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match=r"IBQ: codebook_size must be >= 2, got 1"):
        IBQ(4, 1)
    with pytest.raises(ValueError, match=r"IBQ: dim must be >= 1, got 0"):
        IBQ(0, 8)
    with pytest.raises(ValueError, match=r"IBQ: token_chunk must be >= 1, got 0"):
        IBQ(4, 8, token_chunk=0)
    with pytest.raises(ValueError, match=r"IBQ: code_chunk must be >= 1, got -2"):
        IBQ(4, 8, code_chunk=-2)
    with pytest.raises(ValueError, match=r"IBQ: invalid beta = -0.5"):
        IBQ(4, 8, beta=-0.5)
    with pytest.raises(ValueError, match=r"IBQ: codebook_size × dim"):
        IBQ(2**16, 2**30)
    q = IBQ(4, 8)
    with pytest.raises(ValueError, match=r"IBQ: expected z of shape \(\.\.\., 4\)"):
        q(torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"IBQ: index out of range: values span \[0, 8\], codebook has 8 codes"):
        q.decode(torch.tensor([0, 8]))
    bad = torch.randn(3, 4)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        q(bad)


def test_registry_and_layout() -> None:
    q = QUANTIZERS["ibq"](dim=4, codebook_size=100)
    assert isinstance(q, IBQ)
    (layout,) = q.symbol_layout()
    assert layout.size == 100 and layout.radices == (100,) and not layout.ordinal
    codes = q.code_vectors()
    assert codes is not None and torch.equal(codes, q.codebook.detach())
    assert q.bits_per_token == pytest.approx(6.643856189774724)


def test_autocast_keeps_float32_math() -> None:
    torch.manual_seed(7)
    q = IBQ(8, 64, token_chunk=9, code_chunk=10)
    z = torch.randn(20, 8, requires_grad=True)
    ref = q(z)
    (gz_ref,) = torch.autograd.grad(ref.quantized.sum() + ref.loss, z)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = q(z)
        (gz,) = torch.autograd.grad(out.quantized.sum() + out.loss, z)
    assert out.quantized.dtype == torch.float32
    assert torch.equal(out.indices, ref.indices)
    torch.testing.assert_close(gz, gz_ref)


def test_exp_drops_only_what_float32_cannot_see() -> None:
    x = torch.tensor([0.0, -1.0, -44.0, -45.0, -46.0, -200.0, -float("inf")])
    got = exp_(x.clone())
    assert torch.equal(got[:3], torch.tensor([0.0, -1.0, -44.0]).exp())
    assert torch.equal(got[3:], torch.zeros(4))
