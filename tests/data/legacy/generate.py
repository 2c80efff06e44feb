"""Write the legacy LFQ/BSQ fixtures: models and .vqt files written before ``bit_order`` existed.

Run once, at commit e139e2f (LFQ and BSQ indices LSB-first, no ``bit_order`` argument), with
``PYTHONPATH=src python tests/data/legacy/generate.py``. Never regenerate them with a later vqkit: they
are what tests/test_bit_order.py holds later versions to (the same model id, tokens and decoded pixels).
"""

import sys
from pathlib import Path

import numpy as np
import torch

from vqkit.codec.tiled import Codec
from vqkit.modalities.image.codec import ImageAdapter
from vqkit.models import Tokenizer, TokenizerConfig

here = Path(__file__).resolve().parent
MODELS = {"lfq": {"dim": 6}, "bsq": {"dim": 6, "group_size": 3}}


def photo(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 9 + y) % 256, (y * 7) % 256, (x + y * 5) % 256], axis=-1)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


for name, args in MODELS.items():
    torch.manual_seed(0)
    config = TokenizerConfig(arch="rfsq_conv", quantizer=name, quantizer_args=args, conv_channels=(4, 8))
    model = Tokenizer(config).eval()
    with torch.no_grad():  # untrained weights give one token everywhere: spread them so tokens vary
        for p in model.parameters():
            p.normal_(0, 0.5)
    model.save_pretrained(here / name)
    codec = Codec(model, ImageAdapter(), None, 64, 0)
    image = photo(16, 16)
    tokens, _, _ = codec.tokens(image)
    data = codec.encode(image, "uniform").data
    (here / f"{name}.vqt").write_bytes(data)
    np.savez(here / f"{name}-expected.npz", tokens=tokens, decoded=codec.decode(data),
             model_id=np.frombuffer(codec.model_id, np.uint8))
    print(name, codec.model_id.hex(), np.unique(tokens).size, tokens.reshape(-1)[:8], file=sys.stderr)
