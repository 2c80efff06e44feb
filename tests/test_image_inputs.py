"""Images are read as a viewer shows them (issue 18: EXIF orientation was ignored, so a portrait JPEG came
back landscape; an animated WebP/APNG or a multipage TIFF was read as its first frame; ICC profiles were
dropped, so a wide-gamut photo's colours were misread)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from faults.harness import media
from vqkit.data.files import BadFileError
from vqkit.modalities.image.io import check_image, load_image, read_image


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "JPEG", "WEBP"])
def test_the_exif_orientation_is_applied(tmp_path: Path, fmt: str, orientation: int) -> None:
    stored = media.pixels(12, 8)
    path = media.write(tmp_path / f"x.{fmt.lower()}", media.oriented_bytes(stored, fmt, orientation))
    expected = media.shown(stored, orientation)
    got = read_image(path)
    assert got.shape == expected.shape
    if fmt in ("PNG", "TIFF"):  # lossless: exactly the viewer's pixels
        assert np.array_equal(got, expected)
    assert load_image(path).size == (expected.shape[1], expected.shape[0])


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG", "TIFF"])
def test_a_file_of_several_frames_is_refused_naming_it_and_the_count(tmp_path: Path, fmt: str) -> None:
    path = media.write(tmp_path / f"anim.{fmt.lower()}", media.frames_bytes(fmt, 3))
    for read in (read_image, check_image, load_image):
        with pytest.raises(BadFileError, match=r"anim\.\w+: it holds 3 frames") as info:
            read(path)
        assert info.value.path == path


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG", "TIFF"])
def test_a_single_frame_file_of_an_animation_format_is_read(tmp_path: Path, fmt: str) -> None:
    path = media.write(tmp_path / f"one.{fmt.lower()}", media.frames_bytes(fmt, 1))
    check_image(path)
    assert read_image(path).shape == (12, 8, 3)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "JPEG", "WEBP"])
def test_a_wide_gamut_icc_profile_is_converted_to_srgb(tmp_path: Path, fmt: str) -> None:
    stored = media.pixels(16, 16)
    icc = media.icc_rgb_profile()
    options = {"quality": 100} if fmt in ("JPEG", "WEBP") else {}
    path = media.write(tmp_path / f"wide.{fmt.lower()}", media.image_bytes(stored, fmt, icc_profile=icc, **options))
    with Image.open(path) as raw:
        decoded = raw.convert("RGB")
    reference = ImageCms.profileToProfile(decoded, ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                                          ImageCms.createProfile("sRGB"), outputMode="RGB")
    got = read_image(path)
    assert reference is not None and np.array_equal(got, np.asarray(reference))
    assert np.abs(got.astype(int) - np.asarray(decoded).astype(int)).mean() > 2  # the colours did change (by ~5 levels)


def test_an_srgb_profile_or_none_leaves_the_pixels_alone(tmp_path: Path) -> None:
    stored = media.pixels()
    for name, options in (("srgb", {"icc_profile": media.srgb_profile()}), ("none", {})):
        path = media.write(tmp_path / f"{name}.png", media.image_bytes(stored, "PNG", **options))
        assert np.array_equal(read_image(path), stored)


def test_a_grey_image_keeps_its_grey_values_whatever_its_profile(tmp_path: Path) -> None:
    grey = media.pixels()[..., 0]
    path = media.write(tmp_path / "grey.png", media.image_bytes(grey, "PNG", icc_profile=media.icc_rgb_profile()))
    assert np.array_equal(read_image(path)[..., 0], grey)


@pytest.mark.parametrize("icc", [b"garbage" * 20, media.icc_rgb_profile()[:100]])
def test_an_unreadable_icc_profile_is_refused(tmp_path: Path, icc: bytes) -> None:
    path = media.write(tmp_path / "bad.png", media.image_bytes(media.pixels(), "PNG", icc_profile=icc))
    with pytest.raises(BadFileError, match=r"bad\.png: its ICC colour profile cannot be read"):
        read_image(path)


def test_a_cmyk_jpeg_with_an_rgb_profile_is_refused(tmp_path: Path) -> None:
    cmyk = Image.frombytes("CMYK", (4, 4), bytes(range(64)))
    buf = io.BytesIO()
    cmyk.save(buf, format="JPEG", icc_profile=media.icc_rgb_profile())
    path = media.write(tmp_path / "cmyk.jpg", buf.getvalue())
    with pytest.raises(BadFileError, match=r"cmyk\.jpg: .*ICC profile is for RGB colours, its pixels are CMYK"):
        read_image(path)
