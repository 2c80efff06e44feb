"""The real photographs bundled inside scikit-image's wheel, for demos that need no data.

Pixels are float32 in [0, 1], RGB, (H, W, 3); grayscale photos are repeated to RGB. Only
photos shipped in the wheel are used: the others are downloaded at run time and would fail
offline.
"""

from __future__ import annotations

import numpy as np

TRAIN_PHOTOS = ("astronaut", "coffee", "rocket", "camera", "hubble_deep_field", "immunohistochemistry",
                "grass", "brick", "clock", "retina")
TEST_PHOTOS = ("chelsea", "coins", "gravel")


def load_photo(name: str) -> np.ndarray:
    """One bundled photo as float32 RGB in [0, 1]."""
    try:
        from skimage import data
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise RuntimeError("the demo photos need scikit-image: pip install 'vqkit[demo]'") from err
    image = np.asarray(getattr(data, name)())
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return (image[:, :, :3].astype(np.float32) / 255.0).copy()


def photo_patches(names: tuple[str, ...], patch: int) -> np.ndarray:
    """Non-overlapping ``patch``×``patch`` RGB patches of the photos, flattened: (N, patch²·3)."""
    out = []
    for name in names:
        image = load_photo(name)
        h, w = (image.shape[0] // patch) * patch, (image.shape[1] // patch) * patch
        tiles = image[:h, :w].reshape(h // patch, patch, w // patch, patch, 3).transpose(0, 2, 1, 3, 4)
        out.append(tiles.reshape(-1, patch * patch * 3))
    return np.concatenate(out, axis=0)
