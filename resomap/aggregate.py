"""aggregate: every cell's metrics in one tidy table, and study-level summary metrics."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from resomap import io
from resomap.errors import ResoMapError
from resomap.models import model_spec
from resomap.paths import Cell, evaluate_metrics_dir, explain_metrics_dir, profile_metrics_dir, train_metrics_dir

TRAIN_KEYS = ("best_epoch", "best_val_accuracy", "epochs_run", "train_seconds")


def _read(path: Path) -> dict:
    if not path.is_file():
        raise ResoMapError(f"{path} is missing: run `dvc repro` so every cell finishes before aggregate")
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
    return row


def cells_table(cells: list[Cell]) -> pd.DataFrame:
    return pd.DataFrame([cell_row(cell) for cell in cells])


def study_summary(table: pd.DataFrame) -> dict:
    """Per model: best mean accuracy and where, and the accuracy gain from lowest to highest resolution."""
    summary = {}
    for model, rows in table.groupby("model", sort=False):
        by_resolution = rows.groupby("resolution")["accuracy"].mean().sort_index()
        summary[model] = {
            "best_accuracy": round(float(by_resolution.max()), 6),
            "best_resolution": int(by_resolution.idxmax()),
            "accuracy_gain_low_to_high": round(float(by_resolution.iloc[-1] - by_resolution.iloc[0]), 6),
        }
    return summary
