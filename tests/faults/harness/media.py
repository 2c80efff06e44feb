"""Input files that lie or that a careless reader misreads, built byte by byte or with Pillow: WAVs whose
header disagrees with the file, images with an EXIF orientation, an ICC profile or several frames.
Shared by the unit tests (``tests/test_image_inputs.py``, ``tests/test_audio_headers.py``) and the
fault campaign's ``inputs`` part (:mod:`.inputs`)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np

D50 = (0.9642, 1.0, 0.8249)
WIDE_GAMUT = ((0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609), (0.1492, 0.0632, 0.7446))
"""Adobe RGB (1998)'s primaries adapted to D50, as an ICC profile stores them: a gamut wider than sRGB's."""


def wav_bytes(*, rate: int = 16000, channels: int = 1, bits: int = 16, frames: int = 32000,
              declared: int | None = None, align: int | None = None, data: bytes | None = None,
              after: bytes = b"", fmt: bool = True, fmt_size: int = 16) -> bytes:
    """A RIFF/WAVE file (PCM) whose header fields can each be set to lie about the data."""
    block = channels * ((bits + 7) // 8) if align is None else align
    samples = (np.arange(frames * channels) % 200 - 100).astype("<i2").tobytes() if data is None else data
    body = b"WAVE"
    if fmt:
        fields = struct.pack("<HHIIHH", 1, channels, rate, rate * block & 0xFFFFFFFF, block, bits)
        body += b"fmt " + struct.pack("<I", fmt_size) + fields[:fmt_size] + bytes(max(0, fmt_size - 16))
    body += b"data" + struct.pack("<I", len(samples) if declared is None else declared) + samples + after
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def icc_rgb_profile(description: str = "vqkit test wide-gamut RGB", primaries: tuple[tuple[float, float, float], ...]
                    = WIDE_GAMUT, gamma: float = 2.2) -> bytes:
    """A minimal ICC v2 matrix/TRC display profile (desc, wtpt, r/g/bXYZ, r/g/bTRC): what a camera or
    an editor embeds for Adobe RGB or Display P3. Pillow can only create sRGB/LAB/XYZ profiles."""
    ascii_desc = description.encode("ascii") + b"\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(ascii_desc)) + ascii_desc + bytes(4 + 4 + 2 + 1 + 67)
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)
    tags = [(b"desc", desc), (b"wtpt", b"XYZ " + bytes(4) + b"".join(_s15(v) for v in D50))]
    tags += [(name, b"XYZ " + bytes(4) + b"".join(_s15(v) for v in xyz))
             for name, xyz in zip((b"rXYZ", b"gXYZ", b"bXYZ"), primaries, strict=True)]
    tags += [(name, curve) for name in (b"rTRC", b"gTRC", b"bTRC")]
    tags.append((b"cprt", b"text" + bytes(4) + b"none\0"))
    offset = 128 + 4 + 12 * len(tags)
    table, blobs = b"", b""
    for name, blob in tags:
        blob += bytes(-len(blob) % 4)
        table += name + struct.pack(">II", offset + len(blobs), len(blob))
        blobs += blob
    size = offset + len(blobs)
    header = (struct.pack(">I", size) + bytes(4) + bytes([2, 0x10, 0, 0]) + b"mntr" + b"RGB " + b"XYZ " + bytes(12)
              + b"acsp" + bytes(4 + 4 + 4 + 4 + 8 + 4) + b"".join(_s15(v) for v in D50) + bytes(4 + 16 + 28))
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + blobs


def srgb_profile() -> bytes:
    from PIL import ImageCms

    return bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())


def pixels(h: int = 12, w: int = 8, seed: int = 0) -> np.ndarray:
    """uint8 (h, w, 3) noise: every orientation and colour conversion shows in it."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def image_bytes(array: np.ndarray, fmt: str, **options: object) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **options)
    return buf.getvalue()


def oriented_bytes(array: np.ndarray, fmt: str, orientation: int) -> bytes:
    """``array`` stored upright with an EXIF orientation tag (1..8) that a viewer applies."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    return image_bytes(array, fmt, exif=exif, **({"quality": 100} if fmt == "JPEG" else {}))


def shown(array: np.ndarray, orientation: int) -> np.ndarray:
    """What a viewer shows for pixels stored with EXIF ``orientation`` (the TIFF/EXIF definition)."""
    turns = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
             5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
             7: lambda a: a[::-1, ::-1].transpose(1, 0, 2), 8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(turns[orientation](array))


def frames_bytes(fmt: str, frames: int = 3) -> bytes:
    """An animation (GIF, WEBP, PNG) or a multipage file (TIFF) of ``frames`` different pictures."""
    from PIL import Image

    pictures = [Image.fromarray(pixels(seed=i)) for i in range(frames)]
    buf = io.BytesIO()
    pictures[0].save(buf, format=fmt, save_all=True, append_images=pictures[1:])
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
