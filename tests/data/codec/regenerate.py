"""Rewrite the golden token files (only when the format changes on purpose: bump VERSION then).

    .venv/bin/python tests/data/codec/regenerate.py
"""

import sys
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here.parents[1]))

from test_codec import PRIORS, golden_model_and_tokens  # noqa: E402
from vqkit.codec import TokenFile, encode  # noqa: E402

model, tokens = golden_model_and_tokens()
for prior in PRIORS:
    payload, _ = encode(model, prior, tokens)
    file = TokenFile("image", prior, bytes(range(16)), (3, 44, 36), tuple(tokens.shape),
                     tuple(s.size for s in model.specs), payload, b"", 0)
    (here / f"golden-{prior}.vqt").write_bytes(file.to_bytes())
    print(prior, len(file.to_bytes()), "bytes")

from test_learned_prior import write_golden  # noqa: E402

write_golden()
print("learned-layered", (here / "learned-layered.vqt").stat().st_size, "bytes")
