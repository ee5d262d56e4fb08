"""The one resize policy: shorter side to R with antialiasing, then a centre crop to R x R."""

from __future__ import annotations

import numpy as np
from PIL import Image


def _fit_shorter_side(image: Image.Image, resolution: int, resample: Image.Resampling) -> Image.Image:
    width, height = image.size
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    resized = image.resize(size, resample)  # PIL filters over the whole footprint, so downsampling antialiases
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    return resized.crop((left, top, left + resolution, top + resolution))


def resize_image(rgb: np.ndarray, resolution: int) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> (R, R, 3), bicubic."""
    return np.asarray(_fit_shorter_side(Image.fromarray(rgb), resolution, Image.Resampling.BICUBIC))


def resize_mask(mask: np.ndarray, resolution: int) -> np.ndarray:
    """bool (H, W) -> (R, R): a pixel is inside when at least half of its footprint was."""
    coverage = Image.fromarray(mask.astype(np.float32), mode="F")
    return np.asarray(_fit_shorter_side(coverage, resolution, Image.Resampling.BOX)) >= 0.5
