"""Speed and memory of ``vqkit encode`` / ``decode``: images per second, the share of the time spent in
entropy coding (against the tokenizer's own encode/decode), and peak memory on a large photo.

    .venv/bin/python benchmarks/codec.py --model default --data ../shared/data/images/kodak24
    .venv/bin/python benchmarks/codec.py --model runs/rfsq-cpu --large 4000x3000

Each phase is timed separately in the same run: tokens (tokenizer encoder + quantizer, tiled),
entropy coding (prior + range coder + container), entropy decoding, rendering (tokenizer decoder).
Peak memory is the process's resident high-water mark (``ru_maxrss``) measured in a fresh child
process for the large image, so earlier work does not hide it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vqkit.codec import TokenFile, coders
from vqkit.codec.tiled import Codec
from vqkit.data.files import find_images
from vqkit.modalities import open_codec
from vqkit.modalities.image.io import read_image


def phases(codec: Codec[np.ndarray], image: np.ndarray, prior: str) -> dict[str, float]:
    t0 = time.perf_counter()
    grid, side, shape = codec.tokens(image)
    t1 = time.perf_counter()
    encoded = codec.pack(grid, b"" if side is None else side.tobytes(), shape, prior)
    t2 = time.perf_counter()
    file = TokenFile.from_bytes(encoded.data)
    expected, side_info = codec.check(file)
    tokens = coders.decode(codec.prior(prior), file.payload, expected)
    t3 = time.perf_counter()
    codec.render(tokens, side_info, shape)
    t4 = time.perf_counter()
    assert np.array_equal(tokens, grid)
    return {"tokens": t1 - t0, "entropy_encode": t2 - t1, "entropy_decode": t3 - t2, "render": t4 - t3,
            "bpp": encoded.bits_per_sample()["file"]}


def large(model: str, size: str, prior: str) -> dict[str, float]:
    """Encode and decode one synthetic photo-like image of ``size`` (WxH); report time and peak RSS."""
    w, h = (int(v) for v in size.split("x"))
    codec, _ = open_codec(model)
    image = np.empty((h, w, 3), np.uint8)
    rng, x = np.random.default_rng(0), np.arange(w, dtype=np.float32)
    for y0 in range(0, h, 256):  # in row blocks: the generator's temporaries must not set the peak
        y = np.arange(y0, min(h, y0 + 256), dtype=np.float32)[:, None]
        base = np.stack([np.sin(x / 97) * 80 + 0 * y, np.cos(y / 53) * 70 + 0 * x, np.sin((x + y) / 151) * 90], -1)
        image[y0 : y0 + 256] = np.clip(base + 128 + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = phases(codec, image, prior)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {**times, "peak_rss_mb": peak, "rss_before_mb": before, "megapixels": w * h / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", default="../shared/data/images/kodak24", help="folder of images to time")
    parser.add_argument("--max-images", type=int, default=8)
    parser.add_argument("--prior", default="context")
    parser.add_argument("--large", default="4000x3000", help="WxH of the large image ('' to skip)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(large(args.model, args.large, args.prior)))
        return
    codec, _ = open_codec(args.model)
    files = find_images(args.data)[: args.max_images]
    rows = [phases(codec, read_image(f), args.prior) for f in files]
    total = {k: float(np.sum([r[k] for r in rows])) for k in rows[0] if k != "bpp"}
    enc, dec = total["tokens"] + total["entropy_encode"], total["entropy_decode"] + total["render"]
    print(f"model {args.model}, prior {args.prior}, {len(files)} images of {Path(args.data).name}, "
          f"torch threads {torch.get_num_threads()}")
    print("| phase | seconds per image | share of its side |")
    print("|---|---:|---:|")
    for key, side in (("tokens", enc), ("entropy_encode", enc), ("entropy_decode", dec), ("render", dec)):
        print(f"| {key} | {total[key] / len(files):.3f} | {total[key] / side:.0%} |")
    print(f"encode: {len(files) / enc:.2f} images/s; decode: {len(files) / dec:.2f} images/s; "
          f"mean file rate {np.mean([r['bpp'] for r in rows]):.3f} bpp")
    if args.large:
        cmd = [sys.executable, __file__, "--child", "--model", args.model, "--large", args.large,
               "--prior", args.prior, "--threads", str(args.threads)]
        result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        print(f"large image {args.large} ({result['megapixels']:.0f} MP): encode "
              f"{result['tokens'] + result['entropy_encode']:.1f} s (entropy coding {result['entropy_encode']:.1f} s), "
              f"decode {result['entropy_decode'] + result['render']:.1f} s (entropy decoding "
              f"{result['entropy_decode']:.1f} s), peak RSS {result['peak_rss_mb']:.0f} MB "
              f"(process before the image: {result['rss_before_mb']:.0f} MB), {result['bpp']:.3f} bpp")


if __name__ == "__main__":
    main()
