"""PNG panels people look at: per image, one row per method of image | heatmap | overlay.
Enlarged with nearest-neighbour so a 16 px cell stays readable and pixels stay honest."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw

from resomap.core import io

TILE = 160
LABEL_HEIGHT = 16


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """[0, 1] float map -> RGB uint8 with the perceptually uniform 'inferno' colormap."""
    return (matplotlib.colormaps["inferno"](np.clip(heatmap, 0, 1))[..., :3] * 255).astype(np.uint8)


def overlay(image: np.ndarray, heatmap: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """The colourised heatmap over the image at `opacity` (half and half by default): where the map
    is hot, on the picture."""
    heat = colorize(heatmap.astype(np.float32)).astype(np.float32)
    return ((1 - opacity) * image.astype(np.float32) + opacity * heat).astype(np.uint8)


def _row(image: np.ndarray, heatmap: np.ndarray) -> list[Image.Image]:
    heat = colorize(heatmap.astype(np.float32))
    return [Image.fromarray(a).resize((TILE, TILE), Image.Resampling.NEAREST) for a in (image, heat, overlay(image, heatmap))]


def panel(image: np.ndarray, maps: dict[str, np.ndarray], caption: str) -> Image.Image:
    """Image (H, W, 3) uint8 and {method: (H, W) map}: a labelled row per method."""
    row_height = TILE + LABEL_HEIGHT
    canvas = Image.new("RGB", (3 * TILE, LABEL_HEIGHT + len(maps) * row_height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), caption, fill="black")
    for r, (method, heatmap) in enumerate(maps.items()):
        top = LABEL_HEIGHT + r * row_height
        draw.text((4, top + 2), f"{method}: image | heatmap | overlay", fill="black")
        for c, tile in enumerate(_row(image, heatmap)):
            canvas.paste(tile, (c * TILE, top + LABEL_HEIGHT))
    return canvas


def write_panel(path: Path, image: np.ndarray, maps: dict[str, np.ndarray], caption: str) -> None:
    with io.atomic_open(path, "wb") as f:
        panel(image, maps, caption).save(f, format="PNG")
