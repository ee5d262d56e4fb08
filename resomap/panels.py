"""PNG panels (image | heatmap | overlay) that people look at; enlarged so 32 px cells stay visible."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image

from resomap import io

PANEL_SIDE = 192


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """[0, 1] float map -> RGB uint8 with the perceptually uniform 'inferno' colormap."""
    return (matplotlib.colormaps["inferno"](np.clip(heatmap, 0, 1))[..., :3] * 255).astype(np.uint8)


def panel(image: np.ndarray, heatmap: np.ndarray) -> Image.Image:
    """Image (H, W, 3) uint8 and heatmap (H, W) side by side with their 50/50 overlay."""
    heat = colorize(heatmap)
    overlay = (0.5 * image.astype(np.float32) + 0.5 * heat.astype(np.float32)).astype(np.uint8)
    tiles = [Image.fromarray(a).resize((PANEL_SIDE, PANEL_SIDE), Image.Resampling.NEAREST) for a in (image, heat, overlay)]
    canvas = Image.new("RGB", (PANEL_SIDE * 3, PANEL_SIDE))
    for i, tile in enumerate(tiles):
        canvas.paste(tile, (i * PANEL_SIDE, 0))
    return canvas


def write_panel(path: Path, image: np.ndarray, heatmap: np.ndarray) -> None:
    with io.atomic_open(path, "wb") as f:
        panel(image, heatmap).save(f, format="PNG")
