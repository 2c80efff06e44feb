"""Fuzzed image files through ``read_image`` + ``ImageCodec.encode`` and ``vqkit encode``: every format and
mode Pillow writes, degenerate sizes, and junk behind real headers (including PNGs that claim to be huge).
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .checks import where
from .corpus import default_codec
from .fuzz import FuzzResult, cli_fuzz_result, draw_cases, folder, given, signature
from .process import Runner

FORMAT_MODES = {"PNG": ("RGB", "L", "LA", "RGBA", "P", "P+transparency", "1", "I;16"),
                "JPEG": ("RGB", "L", "CMYK"), "BMP": ("RGB", "L", "P", "1"),
                "TIFF": ("RGB", "L", "LA", "RGBA", "P", "1", "I;16", "I", "F", "CMYK"), "WEBP": ("RGB", "RGBA")}
SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}
SIZES = [(1, 1), (1, 5000), (5000, 1), (2, 3), (3, 2), (17, 9), (64, 48), (4, 4)]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _make_image(fmt: str, mode: str, size: tuple[int, int], seed: int) -> bytes:
    from PIL import Image

    w, h = size
    rng = np.random.default_rng(seed)
    if mode in ("P", "P+transparency"):
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert("P")
        if mode == "P+transparency":
            im.info["transparency"] = 0
    elif mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    elif mode == "I":
        im = Image.fromarray(rng.integers(0, 70000, (h, w)).astype(np.int32))
    elif mode == "F":
        im = Image.fromarray(rng.uniform(0, 255, (h, w)).astype(np.float32))
    elif mode == "1":
        im = Image.fromarray(rng.integers(0, 2, (h, w)).astype(bool))
    else:
        channels = {"RGB": 3, "L": 1, "LA": 2, "RGBA": 4, "CMYK": 4}[mode]
        arr = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
        im = Image.frombytes(mode, (w, h), arr.tobytes())
    buf = io.BytesIO()
    options = {"transparency": 0} if mode == "P+transparency" and fmt == "PNG" else {}
    im.save(buf, format=fmt, **options)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _ihdr(w: int, h: int, depth: int, color: int) -> bytes:
    return _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0))


def _image_strategy() -> Any:
    from hypothesis import strategies as st

    @st.composite
    def build(draw: Any) -> tuple[str, str, bytes, bool]:
        what = draw(st.sampled_from(["valid"] * 4 + ["random", "png+junk", "png-header+junk", "jpeg+junk",
                                                      "huge-claim", "empty"]))
        if what == "valid":
            fmt = draw(st.sampled_from(sorted(FORMAT_MODES)))
            mode = draw(st.sampled_from(FORMAT_MODES[fmt]))
            size = draw(st.sampled_from(SIZES))
            if fmt == "WEBP" and max(size) > 4000:
                size = (size[0] // 2 or 1, size[1] // 2 or 1)
            data = _make_image(fmt, mode, size, draw(st.integers(0, 999)))
            return f"{fmt} {mode} {size[0]}x{size[1]}", SUFFIX[fmt], data, True
        suffix = draw(st.sampled_from([".png", ".jpg", ".jpeg", ".bmp", ".tif", ".webp", ".PNG"]))
        junk = draw(st.binary(min_size=0, max_size=600))
        if what == "random":
            return f"random {len(junk)} bytes", suffix, junk, False
        if what == "png+junk":
            return f"PNG signature + {len(junk)} junk bytes", ".png", PNG_SIGNATURE + junk, False
        if what == "png-header+junk":
            w, h = draw(st.integers(1, 70000)), draw(st.integers(1, 70000))
            depth, color = draw(st.sampled_from([(8, 2), (8, 0), (16, 2), (1, 0), (8, 3), (8, 6), (7, 2)]))
            body = _png_chunk(b"IDAT", junk) if draw(st.booleans()) else junk
            return (f"PNG header {w}x{h} depth {depth} colour {color} + junk IDAT", ".png",
                    PNG_SIGNATURE + _ihdr(w, h, depth, color) + body, False)
        if what == "jpeg+junk":
            return f"JPEG SOI + {len(junk)} junk bytes", ".jpg", b"\xff\xd8\xff\xe0" + junk, False
        if what == "huge-claim":
            w, h = draw(st.sampled_from([(100000, 100000), (2**31 - 1, 1), (1, 2**31 - 1), (65535, 65535),
                                         (12000, 12000)]))
            data = PNG_SIGNATURE + _ihdr(w, h, 8, 2) + _png_chunk(b"IDAT", junk) + _png_chunk(b"IEND", b"")
            return f"PNG claiming {w}x{h}", ".png", data, False
        return "empty file", suffix, b"", False

    return build()


def fuzz_images_api(n: int, workdir: Path, seed: int = 0) -> list[FuzzResult]:
    """``read_image`` + the default model's ``ImageCodec.encode`` on ``n`` fuzzed image files."""
    from PIL import Image

    from vqkit.modalities.image.io import read_image

    workdir = folder(workdir)
    codec = default_codec()
    results: list[FuzzResult] = []

    def body(case: tuple[str, str, bytes, bool]) -> None:
        label, suffix, data, valid = case
        path = workdir / f"img{len(results):05d}{suffix}"
        path.write_bytes(data)
        expected = "either" if valid else "refuse"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                codec.encode(read_image(path), "context")
        except ValueError:
            results.append(FuzzResult("image (API)", label, True, "refused", expected=expected))
        except Exception as err:
            results.append(FuzzResult("image (API)", label, False, f"{type(err).__name__}: {str(err)[:160]}",
                                      f"at {where(err)}", "either", f"image API: {signature(err)}"))
        else:
            results.append(FuzzResult("image (API)", label, True, "accepted", expected=expected))

    given(_image_strategy(), n, seed, body)
    return results


def fuzz_images_cli(runner: Runner, n: int, workdir: Path, seed: int = 0) -> list[FuzzResult]:
    """``vqkit encode FILE -o DIR`` (default model) on ``n`` fuzzed image files."""
    workdir = folder(workdir)
    results = []
    for i, (label, suffix, data, _valid) in enumerate(draw_cases(_image_strategy(), n, seed + 1)):
        path = workdir / f"cli{i:04d}{suffix}"
        path.write_bytes(data)
        out = runner.run(["encode", str(path), "-o", str(workdir / "out"), "--model", "default"], timeout=120,
                         cwd=workdir)
        results.append(cli_fuzz_result("image (CLI)", label, out, None, path, codes=(1,), usage=False))
    return results
