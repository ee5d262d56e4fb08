"""The data files behind dvc.yaml's top-level plots, shaped for the templates in .dvc/plots/:
one row per model and resolution, with `model` as the field the templates colour by."""

from __future__ import annotations

import pandas as pd

from resomap.report.analysis import COSTS, Analysis


def accuracy_long(stats: pd.DataFrame) -> pd.DataFrame:
    """Accuracy and macro-F1 stacked, so one plot draws both with their CI bands (metric = dash)."""
    parts = [
        stats[["model", "resolution", f"{m}_mean", f"{m}_ci_low", f"{m}_ci_high"]]
        .set_axis(["model", "resolution", "value", "ci_low", "ci_high"], axis=1)
        .assign(metric=m)
        for m in ("accuracy", "macro_f1")
    ]
    return pd.concat(parts, ignore_index=True)


def plot_tables(analysis: Analysis) -> dict[str, pd.DataFrame]:
    stats = analysis.stats
    return {
        "accuracy.csv": accuracy_long(stats).round(6),
        "costs.csv": stats[["model", "resolution", "accuracy_mean", *COSTS]].round(6),
    }
