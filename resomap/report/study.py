"""Read a finished study back from its cell files: the tidy table, test predictions, training
curves, explanation heatmaps and the train x test surface. Everything aggregate knows comes
through here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from resomap.core import io
from resomap.core.errors import ResoMapError
from resomap.core.grid import (
    Cell,
    FinetuneCell,
    evaluate_metrics_dir,
    evaluate_plots_dir,
    explain_metrics_dir,
    explanations_dir,
    finetune_metrics_dir,
    finetune_plots_dir,
    profile_metrics_dir,
    surface_metrics_dir,
    surface_plots_dir,
    train_metrics_dir,
)
from resomap.explain.gallery import read_gallery
from resomap.models.registry import model_spec

TRAIN_KEYS = ("best_epoch", "best_val_accuracy", "epochs_run", "train_seconds")
RECIPE_KEYS = ("lr_found", "pseudo_label")  # recorded by the recipes that make them (train.lr: auto, train.pseudo_label)
PER_CLASS = "per_class_accuracy."
PLAIN, RECALIBRATED, FINETUNED, TTA = "plain", "recalibrated", "finetuned", "tta"  # the surface's variants
# what the surface, fine-tune and TTA entries all score; not imported from resomap.evaluate.surface,
# which would load resomap/data into aggregate for three names
SCORES = ("accuracy", "macro_f1", "ece")
SURFACE_COLUMNS = ["model", "seed", "train_resolution", "test_resolution", "variant", *SCORES]
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


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise _missing(path)
    return pd.read_csv(path)


def predictions(cell: Cell) -> pd.DataFrame:
    """Test predictions (index, actual, predicted, correct, confidence), one row per test image."""
    return _read_csv(evaluate_plots_dir(cell) / "predictions.csv")


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


def gallery(cell: Cell) -> tuple[dict, dict[str, np.ndarray]]:
    """The explain stage's gallery of the cell: the picks per class (gallery.json) and the picked
    images with their Grad-CAM maps (gallery.npz), resomap/explain/gallery.py's format."""
    try:
        return read_gallery(explanations_dir(cell))
    except FileNotFoundError as missing:
        raise _missing(Path(missing.args[0])) from None


@dataclass(frozen=True)
class Surface:
    """Each trained cell tested at other resolutions: plainly, after BatchNorm recalibration, fine-tuned
    (FixRes) and, at its own resolution, with test-time augmentation. Predictions are by test image
    index, the same images at every resolution, so any two entries of a model and seed pair up."""

    table: pd.DataFrame  # SURFACE_COLUMNS: one row per (model, seed, train res, test res, variant)
    predictions: dict[tuple[str, int, int, str], dict[int, pd.DataFrame]]  # (model, train, test, variant) -> seed -> rows


def _surface_row(cell: Cell, test: int, variant: str, scores: dict) -> dict:
    return {"model": cell.model, "seed": cell.seed, "train_resolution": cell.resolution, "test_resolution": test,
            "variant": variant, **{key: scores[key] for key in SCORES}}


def _surface_entries(cell: Cell, evaluated: dict, evaluated_rows: pd.DataFrame):
    """(test res, variant, scores, prediction rows or None) of one cell: the surface stage's files, the
    evaluate stage's scores at the training resolution when the test resolutions leave it out (they
    are the surface's diagonal exactly), and its TTA scores (evaluate keeps no TTA rows)."""
    metrics = _read(surface_metrics_dir(cell) / "metrics.json")["test"]
    frame = _read_csv(surface_plots_dir(cell) / "predictions.csv")
    for (test, recalibrated), rows in frame.groupby(["test_resolution", "bn_recalibrated"]):
        entry = metrics[str(test)]
        yield int(test), RECALIBRATED if recalibrated else PLAIN, entry["recalibrated"] if recalibrated else entry, rows
    if str(cell.resolution) not in metrics:
        yield cell.resolution, PLAIN, evaluated, evaluated_rows
    if not pd.isna(evaluated.get("tta.accuracy")):
        yield cell.resolution, TTA, {key: evaluated[f"tta.{key}"] for key in SCORES}, None


def _finetuned(tuned: FinetuneCell) -> tuple[dict, pd.DataFrame]:
    return _read(finetune_metrics_dir(tuned) / "metrics.json"), _read_csv(finetune_plots_dir(tuned) / "predictions.csv")


def load_surface(cells: list[Cell], table: pd.DataFrame, evaluated: dict[Cell, pd.DataFrame],
                 finetune_cells: list[FinetuneCell]) -> Surface:
    entries = [(cell, *entry) for cell, record in zip(cells, table.to_dict("records"))
               for entry in _surface_entries(cell, record, evaluated[cell])]
    entries += [(tuned.origin, tuned.target, FINETUNED, *_finetuned(tuned)) for tuned in finetune_cells]
    rows, predictions = [], {}
    for cell, test, variant, scores, frame in entries:
        rows.append(_surface_row(cell, test, variant, scores))
        if frame is not None:
            by_image = frame.sort_values("index").reset_index(drop=True)
            predictions.setdefault((cell.model, cell.resolution, test, variant), {})[cell.seed] = by_image
    return Surface(pd.DataFrame(rows, columns=SURFACE_COLUMNS), predictions)


@dataclass(frozen=True)
class Study:
    cells: list[Cell]
    table: pd.DataFrame  # one row per cell, every metric
    predictions: dict[Cell, pd.DataFrame]
    heatmaps: dict[Cell, dict[str, np.ndarray]]
    surface: Surface
    galleries: dict[Cell, tuple[dict, dict[str, np.ndarray]]] = field(default_factory=dict)  # by cell: gallery()

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


def load_study(cells: list[Cell], finetune_cells: list[FinetuneCell] = ()) -> Study:
    """Every cell's files, and those of the fine-tune cells (Params.finetune_cells) when there are any."""
    if not cells:
        raise ResoMapError("the grid is empty: params.yaml needs at least one model, resolution and seed")
    table = cells_table(cells)
    evaluated = {cell: predictions(cell) for cell in cells}
    return Study(cells, table, evaluated, {cell: heatmaps(cell) for cell in cells}, load_surface(cells, table, evaluated, list(finetune_cells)),
                 {cell: gallery(cell) for cell in cells})
