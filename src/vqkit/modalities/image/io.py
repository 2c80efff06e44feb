"""Image files to pixels and back: vqkit's one decoding path.

Why one path: every image file becomes pixels through :func:`image_to_array` (via :func:`read_image`),
so training (:func:`load_image`), evaluation and the codec cannot disagree on what a 16-bit PNG or a
CMYK JPEG looks like. A file that cannot be read raises a :class:`~vqkit.data.files.BadFileError`
naming it and the cause, so the datasets' ``bad_files`` policy can skip it or stop on it.

Pixels are read as a viewer shows them (:func:`read_image`): the EXIF orientation is applied (a
portrait photo stays portrait), colours in a non-sRGB ICC profile (Display P3, Adobe RGB, a CMYK
press profile) are converted to sRGB with LittleCMS (``PIL.ImageCms``), and a file of several
frames (an animated GIF/WebP/PNG, a multipage TIFF) is refused rather than read as its first frame.
"""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from ...data.files import BadFileError

SUPPORTED_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV",
                   "I;16", "I;16L", "I;16B", "I;16N", "I", "F")
"""PIL modes :func:`image_to_array` converts; a file of any other mode is a :class:`BadFileError`."""
_FLOAT_SCALES = (1.0, 255.0, 65535.0)


def _scaled(values: np.ndarray, top: float) -> np.ndarray:
    """Grey values on ``[0, top]`` → uint8 ``(H, W, 1)``, rounded; outside the range clipped."""
    return np.clip(np.round(values.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)[..., None]


def image_to_array(image: Image.Image) -> np.ndarray:
    """A decoded PIL image as uint8 ``(H, W, C)``: ``C = 1`` for grey modes, 3 for everything else.

    This is vqkit's one conversion from file pixels to uint8, used by training (:func:`load_image`),
    evaluation and the codec (:func:`read_image`), so they agree on every mode:

    - ``1``, ``L``: grey (``1`` is 0 or 255). ``LA``/``La``: grey, alpha dropped.
    - ``I;16`` (``I;16L``, ``I;16B``, ``I;16N``): 16-bit grey, scaled by 255/65535 and rounded, never
      clipped (a 16-bit PNG's 65,535 is white, 32,768 mid-grey).
    - ``I`` (signed 32-bit): PIL's mode for 16-bit grey from several formats, so values 0…65,535 are
      scaled by 255/65535 as 16-bit; an image with larger values is a true 32-bit one and is scaled
      by 255/(2³¹−1), mode I's largest value. Negative values, which have no brightness, become 0.
    - ``F`` (32-bit float): taken as [0, 1], unless its values say otherwise: a maximum above 1
      means PIL's own [0, 255] convention (``L`` converted to ``F``), above 255 a 16-bit range
      [0, 65535]; above 65535 there is no known scale and the image is refused, as is NaN or Inf.
      Values outside the chosen range (small negative undershoot, 1 + ε from float arithmetic)
      are clipped: they are rounding, not content.
    - ``P``/``PA`` (palette, with or without transparency), ``RGB``, ``RGBA``, ``RGBX``, ``RGBa``
      (un-premultiplied first), ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: RGB, through PIL's converters.

    **Alpha is dropped, not composited**: the colour channels are kept as stored, on no background
    (a transparent pixel keeps whatever colour it holds). 48-bit RGB PNGs reach here as 8-bit
    ``RGB`` (PIL keeps the high byte), so they are scaled, not clipped, too.

    Raises ``ValueError`` for any other mode and for float images without a known scale.
    """
    mode = image.mode
    if mode in ("1", "L"):
        return np.array(image.convert("L"), dtype=np.uint8)[..., None]
    if mode in ("LA", "La"):
        return np.array(image.convert("LA").getchannel("L"), dtype=np.uint8)[..., None]
    if mode.startswith("I;16") and mode in SUPPORTED_MODES:
        return _scaled(np.asarray(image), 65535.0)
    if mode == "I":
        values = np.asarray(image).astype(np.int64)
        return _scaled(values, 65535.0 if values.max(initial=0) <= 65535 else 2.0**31 - 1)
    if mode == "F":
        values = np.asarray(image).astype(np.float64)
        if not np.isfinite(values).all():
            raise ValueError("float (mode F) image holds NaN or infinite values")
        peak = float(values.max(initial=0.0))
        top = next((s for s in _FLOAT_SCALES if peak <= s * (1 + 1 / 512)), None)
        if top is None:
            raise ValueError(f"float (mode F) image with values up to {peak:g} has no known brightness scale "
                             "(expected [0, 1], [0, 255] or [0, 65535])")
        return _scaled(values, top)
    if mode in ("P", "PA", "RGBa"):  # palette with transparency must go through RGBA (PIL warns otherwise)
        return np.array(image.convert("RGBA"), dtype=np.uint8)[..., :3].copy()
    if mode == "RGB":
        return np.array(image, dtype=np.uint8)
    if mode in ("RGBA", "RGBX"):
        return np.array(image, dtype=np.uint8)[..., :3].copy()
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return np.array(image.convert("RGB"), dtype=np.uint8)
    raise ValueError(f"unsupported image mode {mode!r} (supported: {', '.join(SUPPORTED_MODES)})")


def _cause(err: BaseException, path: str | os.PathLike[str]) -> str:
    """Why a file could not be read, in words (PIL's own messages say "cannot identify" for an empty file)."""
    if isinstance(err, UnidentifiedImageError):
        try:
            empty = os.path.getsize(path) == 0
        except OSError:
            empty = False
        return "empty file (0 bytes)" if empty else "not an image (PIL cannot identify its format)"
    if isinstance(err, FileNotFoundError):
        return "no such file"
    text = str(err) or type(err).__name__
    if "truncated" in text.lower():
        return f"truncated file ({text})"
    return text if isinstance(err, ValueError | OSError) else f"{type(err).__name__}: {text}"


_ORIENTATION = 0x0112  # the EXIF tag; 1 is upright, 2..8 a flip and/or a rotation
_AUXILIARY_FRAMES = ("MPO",)  # a camera JPEG's later frames are previews or depth maps, not the picture
_ICC_MODES = {"RGB": "RGB", "RGBA": "RGBA", "RGBX": "RGB", "CMYK": "RGB", "P": "RGB", "PA": "RGBA"}
"""Modes whose ICC profile is applied (output mode); grey files keep their grey values."""


def frame_count(image: Image.Image) -> int:
    """How many pictures ``image``'s file holds (1 for a still image and for a camera MPO's previews)."""
    if image.format in _AUXILIARY_FRAMES:
        return 1
    return int(getattr(image, "n_frames", 1))


def _single_frame(image: Image.Image, path: str | os.PathLike[str]) -> None:
    frames = frame_count(image)
    if frames > 1:
        raise BadFileError(f"cannot read image {path}: it holds {frames} frames (an animation or a multipage "
                           f"{image.format} file); vqkit codes still images: save the frame you want as its own file",
                           path)


def oriented(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF orientation tag says, as every viewer shows it (unchanged when upright)."""
    if image.getexif().get(_ORIENTATION, 1) in (1, None):
        return image
    turned = ImageOps.exif_transpose(image)
    return image if turned is None else turned


@functools.lru_cache(maxsize=16)
def _to_srgb_transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """The LittleCMS transform from profile ``icc`` to sRGB for ``mode`` (None when the profile is sRGB
    already or describes grey); built once per profile, as a photo collection shares a few."""
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    space = profile.profile.xcolor_space.strip()
    if space == "GRAY" or "srgb" in (ImageCms.getProfileDescription(profile) or "").lower():
        return None
    expected = "CMYK" if mode == "CMYK" else "RGB"
    if space != expected:
        raise ValueError(f"its ICC profile is for {space} colours, its pixels are {mode}")
    return ImageCms.buildTransform(profile, ImageCms.createProfile("sRGB"), mode, _ICC_MODES[mode])


def in_srgb(image: Image.Image) -> Image.Image:
    """``image`` with the colours of its embedded ICC profile converted to sRGB (LittleCMS, perceptual
    intent); unchanged without a profile, with an sRGB or a grey one, or for a grey or 16-bit mode. A
    profile that cannot be read or does not fit the pixels raises ``ValueError``: the colours would be
    guessed otherwise."""
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in _ICC_MODES:
        return image
    try:
        if image.mode in ("P", "PA"):
            image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
        transform = _to_srgb_transform(bytes(icc), image.mode)
    except (OSError, ImageCms.PyCMSError, TypeError) as err:
        raise ValueError(f"its ICC colour profile cannot be read ({err})") from err
    return image if transform is None else transform.apply(image)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as uint8 ``(H, W, C)`` through :func:`image_to_array`: C = 1 for grey (1, L, LA,
    16-bit, 32-bit and float grey, scaled, not clipped), 3 for everything else (alpha dropped), as a
    viewer shows it: EXIF orientation applied (:func:`oriented`), colours of a non-sRGB ICC profile
    converted to sRGB (:func:`in_srgb`).

    Raises :class:`BadFileError` (a ``ValueError``) naming the file and the cause: missing, empty,
    not an image, truncated, several frames (animated or multipage), an unreadable ICC profile, an
    unsupported mode, or any other decoding error.
    """
    try:
        with Image.open(path) as image:
            _single_frame(image, path)
            image.load()
            return image_to_array(in_srgb(oriented(image)))
    except BadFileError:
        raise
    except MemoryError:  # the machine's state, not the file's fault
        raise
    except Exception as err:  # whatever a decoder raises on one file is that file's fault
        raise BadFileError(f"cannot read image {path}: {_cause(err, path)}", path) from err


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """An image file as an RGB PIL image: :func:`read_image`'s pixels (one conversion path for every
    mode, see :func:`image_to_array`), grey repeated to three channels. Raises
    :class:`BadFileError` (a ``ValueError``) naming the file if it cannot be read, so that a bad
    file in a dataset of thousands is found at once."""
    pixels = read_image(path)
    return Image.fromarray(np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels)


def check_image(path: str | os.PathLike[str]) -> None:
    """A cheap check of one image file, without decoding it: it exists, PIL identifies its format,
    its mode is supported, and ``verify()`` passes (for PNG that reads every chunk and checks its
    CRC, so a cut PNG is caught; a cut JPEG is only found when decoded), and it holds one frame.
    Raises :class:`BadFileError`. Measured 35–75 µs a file from the page cache (0.3–0.7 s for Imagenette's
    9,469 training images), so about a minute for ImageNet-1k's 1.28 M, more from a cold disk."""
    try:
        with Image.open(path) as image:
            if image.mode not in SUPPORTED_MODES:
                raise ValueError(f"unsupported image mode {image.mode!r}")
            _single_frame(image, path)  # counting returns to frame 0, where verify() must start
            image.verify()
    except (MemoryError, BadFileError):  # the machine's state; already a refusal naming the file
        raise
    except Exception as err:
        raise BadFileError(f"cannot read image {path}: {_cause(err, path)}", path) from err


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """uint8 (H, W, 1|3) -> PNG (greyscale or RGB), written atomically."""
    import io

    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(buf, format="PNG")
    from ...storage import atomic_write

    atomic_write(Path(path), buf.getvalue())
