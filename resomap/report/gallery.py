"""Most confident right and wrong, per class: each cell's most confident error of each class (the explain
stage's gallery), and whether the other resolutions of the same model and seed get that same test
image right (image i is the same scene at every resolution), from evaluate's predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from resomap.core.grid import Cell
from resomap.explain.gallery import WRONG, tile_of
from resomap.report.study import Study

ERROR_COLUMNS = ["model", "seed", "class", "resolution", "image", "predicted", "confidence", "right_at", "verdict"]


def verdict(resolution: int, right_at: list[int], others: list[int]) -> str:
    """How the other resolutions (`others`) do on an image wrong at `resolution`: 'fixed at 32, 64 px'
    (right at higher ones), 'right at 16 px' (right at lower ones: the higher resolution broke it),
    both, or 'wrong at every resolution'."""
    if not others:
        return "no other resolution"
    higher = [r for r in sorted(right_at) if r > resolution]
    lower = [r for r in sorted(right_at) if r < resolution]
    parts = [f"{word} at {', '.join(map(str, found))} px" for word, found in (("fixed", higher), ("right", lower)) if found]
    return "; ".join(parts) or "wrong at every resolution"


def correct_by_image(study: Study) -> dict[Cell, np.ndarray]:
    """Each cell's test predictions as right (True) or wrong, by test index."""
    return {cell: frame.sort_values("index")["correct"].to_numpy().astype(bool) for cell, frame in study.predictions.items()}


def confident_errors(study: Study) -> pd.DataFrame:
    """One row per cell and class (ERROR_COLUMNS): the class's most confident wrong test image (`image`,
    its test index; None when the cell got every image of the class right), the other resolutions of
    the same model and seed that get that image right (`right_at`), and the verdict in words."""
    correct = correct_by_image(study)
    rows = []
    for cell in study.cells:
        others = [c for c in study.cells if (c.model, c.seed) == (cell.model, cell.seed) and c.resolution != cell.resolution]
        for name, picks in study.galleries[cell][0]["classes"].items():
            wrong = picks[WRONG]
            if wrong is None:
                rows.append([cell.model, cell.seed, name, cell.resolution, None, None, None, [], "no wrong image"])
                continue
            right_at = [c.resolution for c in others if correct[c][wrong["index"]]]
            rows.append([cell.model, cell.seed, name, cell.resolution, wrong["index"], wrong["predicted"], wrong["confidence"],
                         right_at, verdict(cell.resolution, right_at, [c.resolution for c in others])])
    return pd.DataFrame(rows, columns=ERROR_COLUMNS)


def fixed_table(errors: pd.DataFrame, resolutions: list[int]) -> pd.DataFrame:
    """Per model and resolution: how many most-confident errors there are (classes x seeds) and how
    many of those same images each other resolution gets right."""
    shown = errors[errors["image"].notna()]
    rows = []
    for (model, resolution), group in shown.groupby(["model", "resolution"], sort=False):
        row = {"model": model, "px": str(resolution), "errors": str(len(group))}
        for other in resolutions:
            row[f"right at {other} px"] = "—" if other == resolution else str(sum(other in r for r in group["right_at"]))
        rows.append(row)
    return pd.DataFrame(rows)


MAX_CLASSES = 20  # rows of one model's chart: beyond this, the chart would outgrow the page


def error_views(study: Study, errors: pd.DataFrame, model: str) -> dict[str, dict[int, dict | None]]:
    """The first seed's errors of `model`, class -> resolution -> overlay and caption (None: no wrong
    image), for the first MAX_CLASSES classes."""
    seed = study.seeds[0]
    rows = errors[(errors["model"] == model) & (errors["seed"] == seed)]
    views: dict[str, dict[int, dict | None]] = {}
    for name in list(dict.fromkeys(rows["class"]))[:MAX_CLASSES]:
        views[name] = {}
        for row in rows[rows["class"] == name].itertuples(index=False):
            if pd.isna(row.image):
                views[name][row.resolution] = None
                continue
            arrays = study.galleries[Cell(model, row.resolution, seed)][1]
            views[name][row.resolution] = {
                "overlay": tile_of(arrays, int(row.image))[1],
                "caption": f"#{int(row.image)}: {row.predicted}\n{row.confidence:.2f} · {row.verdict}",
            }
    return views
