"""The gallery: per class, the most confident right and the most confident wrong test prediction of
a cell, with Grad-CAM overlays. The picks are pure (`pick_gallery`); the files are written here and
read back by the report, so both sides share one format:

- `explanations/…/gallery.json`: `cam_layer`, `cam_size` and, per class name in label order, `right`
  and `wrong`, each `{"index", "predicted", "confidence"}` (test index, predicted class name,
  softmax probability of it) or `null` when the class has no such image;
- `explanations/…/gallery.npz`: `indices` (the picked test indices, class by class, right before
  wrong), `images` (K, R, R, 3) uint8 and `gradcam` (K, R, R) float16, the map of each image's
  predicted class;
- `plots/gallery/…/gallery.png`: one panel per cell (a DVC image plot), a row per class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from resomap.core import io
from resomap.explain.panels import overlay

RIGHT, WRONG = "right", "wrong"
KINDS = (RIGHT, WRONG)
PICKS_FILE, ARRAYS_FILE, PANEL_FILE = "gallery.json", "gallery.npz", "gallery.png"


def pick_gallery(labels: np.ndarray, predicted: np.ndarray, confidence: np.ndarray, num_classes: int) -> list[dict[str, int | None]]:
    """Per class c (the list's index), the test index of the most confident right prediction (true
    class c, predicted c) and of the most confident wrong one; None when the class has none.

    Wrong means *true class c, predicted another class* (a miss of c), not *predicted c, true class
    another* (a false alarm): each row of the gallery then shows scenes of one class, the question
    per image is evaluate's per-class accuracy (recall), and whether another resolution gets the
    same scene right is a question about that image alone. A tie in confidence goes to the lowest
    test index, so the picks depend on the predictions only."""
    labels, predicted, confidence = np.asarray(labels), np.asarray(predicted), np.asarray(confidence)
    picks = []
    for c in range(num_classes):
        of_class = labels == c
        row: dict[str, int | None] = {}
        for kind, chosen in ((RIGHT, of_class & (predicted == c)), (WRONG, of_class & (predicted != c))):
            candidates = np.flatnonzero(chosen)  # ascending: argmax takes the first of equal maxima
            row[kind] = int(candidates[np.argmax(confidence[candidates])]) if len(candidates) else None
        picks.append(row)
    return picks


def picked_indices(picks: list[dict[str, int | None]]) -> np.ndarray:
    """The picked test indices, class by class, right before wrong: the rows of gallery.npz."""
    return np.array([row[kind] for row in picks for kind in KINDS if row[kind] is not None], dtype=np.int64)


def gallery_record(picks: list[dict[str, int | None]], predicted: np.ndarray, confidence: np.ndarray,
                   classes: list[str], cam_layer: str, cam_size: int) -> dict:
    """gallery.json's content: the picks by class name, with what was predicted and how confidently."""
    def entry(index: int | None) -> dict | None:
        if index is None:
            return None
        return {"index": index, "predicted": classes[int(predicted[index])], "confidence": round(float(confidence[index]), 6)}

    return {"cam_layer": cam_layer, "cam_size": cam_size,
            "classes": {name: {kind: entry(row[kind]) for kind in KINDS} for name, row in zip(classes, picks)}}


def write_gallery(directory: Path, record: dict, arrays: dict[str, np.ndarray]) -> None:
    io.write_json(directory / PICKS_FILE, record)
    io.write_npz(directory / ARRAYS_FILE, **arrays)


def read_gallery(directory: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """gallery.json and gallery.npz of one cell (`explanations_dir(cell)`): FileNotFoundError names a missing one."""
    for name in (PICKS_FILE, ARRAYS_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(directory / name)
    with np.load(directory / ARRAYS_FILE) as arrays:
        return io.read_json(directory / PICKS_FILE), {key: arrays[key] for key in arrays.files}


def tile_of(arrays: dict[str, np.ndarray], index: int) -> tuple[np.ndarray, np.ndarray]:
    """The image (R, R, 3) uint8 and its Grad-CAM overlay of test image `index`."""
    row = int(np.flatnonzero(arrays["indices"] == index)[0])
    image = arrays["images"][row]
    return image, overlay(image, arrays["gradcam"][row].astype(np.float32))


TILE = 112  # px per image in the panel, enlarged nearest-neighbour (a 16 px image stays readable)
GAP, LINE = 8, 12


def gallery_panel(record: dict, arrays: dict[str, np.ndarray], caption: str) -> Image.Image:
    """A row per class: right (image | overlay), then wrong (image | overlay), each captioned with
    the test index, the predicted class and its confidence; the row's heading is the true class."""
    pair = 2 * TILE
    row_height = LINE + TILE + 2 * LINE + GAP
    classes = record["classes"]
    canvas = Image.new("RGB", (2 * pair + GAP, 2 * LINE + len(classes) * row_height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 1), caption, fill="black")
    draw.text((2, 1 + LINE), "each class: most confident right | most confident wrong (image, Grad-CAM of the predicted class)",
              fill="dimgray")
    for r, (name, picks) in enumerate(classes.items()):
        top = 2 * LINE + r * row_height
        draw.text((2, top), f"true class: {name}", fill="black")
        for k, kind in enumerate(KINDS):
            left, pick = k * (pair + GAP), picks[kind]
            if pick is None:
                draw.rectangle((left, top + LINE, left + pair - 1, top + LINE + TILE - 1), fill="gainsboro")
                draw.text((left + 4, top + LINE + TILE // 2 - 6), f"no {kind} prediction", fill="black")
                continue
            for c, tile in enumerate(tile_of(arrays, pick["index"])):
                canvas.paste(Image.fromarray(tile).resize((TILE, TILE), Image.Resampling.NEAREST), (left + c * TILE, top + LINE))
            below = top + LINE + TILE
            draw.text((left + 2, below), f"{kind}, test image {pick['index']}", fill="darkgreen" if kind == RIGHT else "firebrick")
            draw.text((left + 2, below + LINE), f"predicted {pick['predicted']} ({pick['confidence']:.2f})", fill="black")
    return canvas


def write_gallery_panel(path: Path, record: dict, arrays: dict[str, np.ndarray], caption: str) -> None:
    with io.atomic_open(path, "wb") as f:
        gallery_panel(record, arrays, caption).save(f, format="PNG")
