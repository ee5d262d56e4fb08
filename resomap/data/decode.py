"""Decode image files of any mode into upright RGB uint8 arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Modes whose pixels run past 255: PIL's own convert("RGB") would clip them, not scale them.
_WIDE_GRAY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


def load_rgb(path: Path) -> np.ndarray:
    """Decode an image file upright (EXIF orientation applied) as RGB uint8 (H, W, 3)."""
    with Image.open(path) as image:
        return pil_to_rgb(ImageOps.exif_transpose(image))


def pil_to_rgb(image: Image.Image) -> np.ndarray:
    """Any PIL mode as a writable RGB uint8 array; 16-bit gray is scaled down, alpha dropped."""
    if image.mode in _WIDE_GRAY_MODES:
        gray = np.clip(np.round(np.asarray(image, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "P":
        image = image.convert("RGBA")  # palette transparency straight to RGB makes PIL warn
    return np.array(image.convert("RGB"), dtype=np.uint8)
