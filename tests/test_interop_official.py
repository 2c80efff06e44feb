"""State dicts of the papers' official quantizers: SimVQ (youngsheen/SimVQ) and taming's VectorQuantizer2."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from vqkit.interop import ConversionError, simvq_from_official, vq_from_taming


def official_simvq(k: int = 64, d: int = 8, seed: int = 0) -> dict[str, Tensor]:
    """What the official ``SimVQ(n_e=k, e_dim=d)`` holds: a frozen N(0, d^-1/2) embedding and a Linear with bias."""
    g = torch.Generator().manual_seed(seed)
    return {"embedding.weight": torch.randn(k, d, generator=g) * d**-0.5,
            "embedding_proj.weight": torch.randn(d, d, generator=g) / d**0.5,
            "embedding_proj.bias": torch.randn(d, generator=g) * 0.1}


def official_forward(sd: dict[str, Tensor], z: Tensor) -> tuple[Tensor, Tensor]:
    """The official forward: codes = proj(embedding.weight), squared-L2 argmin, z_q = codes[i]."""
    codes = F.linear(sd["embedding.weight"], sd["embedding_proj.weight"], sd["embedding_proj.bias"])
    d = z.pow(2).sum(-1, keepdim=True) + codes.pow(2).sum(-1) - 2 * z @ codes.t()
    i = d.argmin(-1)
    return codes[i], i


def test_simvq_codes_are_the_official_projection_of_the_frozen_embedding() -> None:
    sd = official_simvq()
    q = simvq_from_official(sd).eval()
    expected = sd["embedding.weight"] @ sd["embedding_proj.weight"].T + sd["embedding_proj.bias"]
    torch.testing.assert_close(q.codes(), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(q.decode(torch.arange(64)), expected, rtol=0, atol=1e-6)  # decode applies W and b
    z = torch.randn(500, 8) * 0.5
    ref_q, ref_i = official_forward(sd, z)
    out = q(z)
    assert torch.equal(out.indices, ref_i)
    torch.testing.assert_close(out.quantized, ref_q, rtol=0, atol=1e-6)
    assert q.beta == 0.25 and not q.codebook.requires_grad  # the frozen codebook stays a buffer


def test_a_whole_models_state_dict_is_read_under_its_prefix() -> None:
    sd = {f"quantize.{k}": v for k, v in official_simvq().items()}
    sd["encoder.conv_in.weight"] = torch.zeros(3)  # outside the prefix: ignored
    q = simvq_from_official(sd, prefix="quantize.", beta=0.5)
    assert q.codebook_size == 64 and q.dim == 8 and q.beta == 0.5
    taming = vq_from_taming({"quantize.embedding.weight": torch.randn(16, 4), "decoder.w": torch.zeros(1)},
                            prefix="quantize.")
    assert taming.codebook_size == 16 and taming.dim == 4


def test_taming_codebook_and_nearest_codes() -> None:
    g = torch.Generator().manual_seed(0)
    weight = torch.empty(128, 6).uniform_(-1 / 128, 1 / 128, generator=g)
    q = vq_from_taming({"embedding.weight": weight}, beta=0.25).eval()
    assert torch.equal(q.codebook.detach(), weight) and q.beta == 0.25
    z = torch.randn(300, 6, generator=g) * 0.01
    d = z.pow(2).sum(-1, keepdim=True) + weight.pow(2).sum(-1) - 2 * z @ weight.t()  # taming's distance
    assert torch.equal(q.encode(z), d.argmin(-1))
    assert torch.equal(q(z).quantized, weight[d.argmin(-1)])


def test_missing_unexpected_and_misshapen_keys_are_named() -> None:
    sd = official_simvq()
    missing = {k: v for k, v in sd.items() if k != "embedding_proj.bias"}
    with pytest.raises(ConversionError, match=r"missing keys \['embedding_proj.bias'\]"):
        simvq_from_official(missing)
    with pytest.raises(ConversionError, match=r"unexpected keys \['used'\].*remap"):
        simvq_from_official({**sd, "used": torch.arange(10)})
    with pytest.raises(ConversionError, match=r"missing keys \['quantize.embedding.weight'"):
        simvq_from_official(sd, prefix="quantize.")
    with pytest.raises(ConversionError, match=r"embedding_proj.weight has shape \(8, 4\), expected \(8, 8\)"):
        simvq_from_official({**sd, "embedding_proj.weight": torch.zeros(8, 4)})
    with pytest.raises(ConversionError, match=r"embedding_proj.bias has shape \(4,\), expected \(8,\)"):
        simvq_from_official({**sd, "embedding_proj.bias": torch.zeros(4)})
    with pytest.raises(ConversionError, match=r"embedding.weight has shape \(64,\)"):
        simvq_from_official({**sd, "embedding.weight": torch.zeros(64)})
    with pytest.raises(ConversionError, match="finite floating-point"):
        simvq_from_official({**sd, "embedding.weight": torch.full((64, 8), float("nan"))})
    with pytest.raises(ConversionError, match="not tensors"):
        vq_from_taming({"embedding.weight": [[0.0, 1.0]]})
    with pytest.raises(ConversionError, match=r"unexpected keys \['embedding.bias'\]"):
        vq_from_taming({"embedding.weight": torch.zeros(4, 2), "embedding.bias": torch.zeros(2)})
    with pytest.raises(ConversionError, match="expected a state dict"):
        vq_from_taming([("embedding.weight", torch.zeros(4, 2))])  # type: ignore[arg-type]
    with pytest.raises(ConversionError, match=r"K >= 2"):
        vq_from_taming({"embedding.weight": torch.zeros(1, 2)})
