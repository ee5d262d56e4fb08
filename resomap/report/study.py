"""Read a finished study back from its cell files: the tidy table, test predictions, training
curves and explanation heatmaps. Everything aggregate knows comes through here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from resomap.core import io
from resomap.core.errors import ResoMapError
from resomap.core.grid import (
    Cell,
    evaluate_metrics_dir,
    evaluate_plots_dir,
    explain_metrics_dir,
    explanations_dir,
    profile_metrics_dir,
    train_metrics_dir,
)
from resomap.models.registry import model_spec

TRAIN_KEYS = ("best_epoch", "best_val_accuracy", "epochs_run", "train_seconds")
RECIPE_KEYS = ("lr_found", "pseudo_label")  # recorded by the recipes that make them (train.lr: auto, train.pseudo_label)
PER_CLASS = "per_class_accuracy."
CURVES = {f"{split}_{name}": f"{split}/{name}.tsv" for split in ("train", "val") for name in ("loss", "accuracy")}


def _missing(path: Path) -> ResoMapError:
    return ResoMapError(f"{path} is missing: run `dvc repro` so every cell finishes before aggregate")


def _read(path: Path) -> dict:
    if not path.is_file():
        raise _missing(path)
    return io.read_json(path)


def flatten(metrics: dict, prefix: str = "") -> dict:
    """Nested metric dicts as dotted keys, the way `dvc metrics show` prints them."""
    flat = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def cell_row(cell: Cell) -> dict:
    """One flat row: the cell's coordinates, then its evaluate, profile, explain and train metrics."""
    row = {"model": cell.model, "family": model_spec(cell.model).family, "resolution": cell.resolution, "seed": cell.seed}
    row.update(flatten(_read(evaluate_metrics_dir(cell) / "metrics.json")))
    row.update(flatten(_read(profile_metrics_dir(cell.model, cell.resolution) / "metrics.json")))
    row.update(flatten(_read(explain_metrics_dir(cell) / "metrics.json")))
    train = _read(train_metrics_dir(cell) / "metrics.json")
    row.update({f"train.{k}": train[k] for k in TRAIN_KEYS})
    row.update(flatten({k: train[k] for k in RECIPE_KEYS if train.get(k) is not None}, "train."))
    return row


def cells_table(cells: list[Cell]) -> pd.DataFrame:
    return pd.DataFrame([cell_row(cell) for cell in cells])


def predictions(cell: Cell) -> pd.DataFrame:
    """Test predictions (index, actual, predicted, correct, confidence), one row per test image."""
    path = evaluate_plots_dir(cell) / "predictions.csv"
    if not path.is_file():
        raise _missing(path)
    return pd.read_csv(path)


def training_curves(cell: Cell) -> pd.DataFrame:
    """Per-epoch train/val loss and accuracy from the cell's DVCLive plots, one row per epoch."""
    directory = train_metrics_dir(cell) / "plots" / "metrics"
    curves = pd.DataFrame()
    for column, name in CURVES.items():
        if (directory / name).is_file():
            series = pd.read_csv(directory / name, sep="\t").set_index("step").iloc[:, 0]
            curves[column] = series
    return curves.rename_axis("epoch").reset_index()


def heatmaps(cell: Cell) -> dict[str, np.ndarray]:
    """The explained images, their labels and predictions, and one (K, R, R) map per method."""
    path = explanations_dir(cell) / "heatmaps.npz"
    if not path.is_file():
        raise _missing(path)
    with np.load(path) as arrays:
        return {key: arrays[key] for key in arrays.files}


@dataclass(frozen=True)
class Study:
    cells: list[Cell]
    table: pd.DataFrame  # one row per cell, every metric
    predictions: dict[Cell, pd.DataFrame]
    heatmaps: dict[Cell, dict[str, np.ndarray]]

    @property
    def classes(self) -> list[str]:
        """The dataset's classes in label order: evaluate's per-class accuracy keys, as flattened."""
        return [c.removeprefix(PER_CLASS) for c in self.table.columns if c.startswith(PER_CLASS)]

    def class_codes(self, names: pd.Series) -> np.ndarray:
        """Class names (as predictions.csv writes them) -> label codes."""
        return names.map({name: code for code, name in enumerate(self.classes)}).to_numpy()

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(cell.model for cell in self.cells))

    @property
    def resolutions(self) -> list[int]:
        return sorted({cell.resolution for cell in self.cells})

    @property
    def seeds(self) -> list[int]:
        return sorted({cell.seed for cell in self.cells})


def load_study(cells: list[Cell]) -> Study:
    if not cells:
        raise ResoMapError("the grid is empty: params.yaml needs at least one model, resolution and seed")
    return Study(
        cells,
        cells_table(cells),
        {cell: predictions(cell) for cell in cells},
        {cell: heatmaps(cell) for cell in cells},
    )
