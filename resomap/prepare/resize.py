"""The one resize policy: shorter side to R with antialiasing, then a centre crop to R x R."""

from __future__ import annotations

import numpy as np
from PIL import Image


def _fit_shorter_side(image: Image.Image, resolution: int, resample: Image.Resampling) -> Image.Image:
    """The centre square of the source (its side the shorter side), resized to R x R. The crop box
    goes to PIL's resize, so nothing larger than R x R is ever built: resizing first and cropping
    after would turn a 3 KB PNG of 1 x 1,000,000 px into R x 10^6 R pixels."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    # PIL filters over the whole footprint, so downsampling antialiases
    return image.resize((resolution, resolution), resample, box=(left, top, left + side, top + side))


def resize_image(rgb: np.ndarray, resolution: int) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> (R, R, 3), bicubic."""
    return np.asarray(_fit_shorter_side(Image.fromarray(rgb), resolution, Image.Resampling.BICUBIC))


def resize_mask(mask: np.ndarray, resolution: int) -> np.ndarray:
    """bool (H, W) -> (R, R): a pixel is inside when at least half of its footprint was."""
    coverage = Image.fromarray(mask.astype(np.float32), mode="F")
    return np.asarray(_fit_shorter_side(coverage, resolution, Image.Resampling.BOX)) >= 0.5
