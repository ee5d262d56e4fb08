"""One small panel per cell: training curves and confusion matrices, laid out as the study grid."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from resomap.report.charts import figure_legend

CURVES = [  # column, which y axis, line style
    ("train_loss", "loss", "-"), ("val_loss", "loss", "--"),
    ("train_accuracy", "accuracy", "-"), ("val_accuracy", "accuracy", "--"),
]
AXIS_COLORS = {"loss": "black", "accuracy": "tab:blue"}
MAX_LABELLED_CLASSES = 20


def _grid_positions(keys: list[str]) -> tuple[dict[str, tuple[int, int]], int, int]:
    """(row, column) per cell name, rows and columns. Names "model-resolution-seed" get a column per
    resolution and a row per (model, seed), so a column reads as one resolution; other names fill a
    near-square grid in the given order."""
    try:
        cells = [(model, int(resolution), int(seed)) for model, resolution, seed in (k.rsplit("-", 2) for k in keys)]
    except ValueError:
        ncols = math.ceil(math.sqrt(len(keys)))
        return {key: divmod(i, ncols) for i, key in enumerate(keys)}, math.ceil(len(keys) / ncols), ncols
    resolutions = sorted({resolution for _, resolution, _ in cells})
    lines = list(dict.fromkeys((model, seed) for model, _, seed in cells))
    positions = {key: (lines.index((model, seed)), resolutions.index(resolution))
                 for key, (model, resolution, seed) in zip(keys, cells)}
    return positions, len(lines), len(resolutions)


def _cell_axes(keys: list[str], panel: tuple[float, float], layout: str) -> tuple[Figure, dict[str, Axes]]:
    """A figure sized by the grid, one axes per cell; grid slots without a cell are removed."""
    positions, nrows, ncols = _grid_positions(keys)
    fig = Figure(figsize=(panel[0] * ncols + 0.8, panel[1] * nrows + 0.8), layout=layout)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    used = set(positions.values())
    for slot, ax in np.ndenumerate(axes):
        if slot not in used:
            ax.remove()
    return fig, {key: axes[position] for key, position in positions.items()}


def training_curves_chart(curves: dict[str, pd.DataFrame]) -> Figure:
    """Loss on the left axis, accuracy on the right; train solid, validation dashed."""
    fig, axes = _cell_axes(list(curves), (3.4, 2.5), "constrained")
    for key, frame in curves.items():
        sides = {"loss": axes[key], "accuracy": axes[key].twinx()}
        for column, side, style in CURVES:
            if column in frame:
                sides[side].plot(frame["epoch"], frame[column], style, color=AXIS_COLORS[side],
                                 label=column.replace("_", " "))
        for side, ax in sides.items():
            ax.set_ylabel(side, color=AXIS_COLORS[side], fontsize=8)
            ax.tick_params(labelsize=7)
        sides["accuracy"].set_ylim(0, 1)
        axes[key].set_xlabel("epoch", fontsize=8)
        axes[key].set_title(key, fontsize=9)
    figure_legend(fig)
    return fig


def _class_ticks(ax: Axes, classes: list[str]) -> None:
    """Class names only on the outer panels (they are the same everywhere), and only while legible."""
    if len(classes) > MAX_LABELLED_CLASSES:
        ax.set_xticks([])
        ax.set_yticks([])
        return
    ticks, spec = range(len(classes)), ax.get_subplotspec()
    ax.set_xticks(ticks, classes if spec.is_last_row() else [""] * len(classes), rotation=90, fontsize=6)
    ax.set_yticks(ticks, classes if spec.is_first_col() else [""] * len(classes), fontsize=6)
    if spec.is_last_row():
        ax.set_xlabel("predicted", fontsize=8)
    if spec.is_first_col():
        ax.set_ylabel("actual", fontsize=8)


def confusion_chart(confusions: dict[str, np.ndarray], classes: list[str]) -> Figure:
    """Row-normalised, so each row shows where one actual class goes whatever its test count."""
    fig, axes = _cell_axes(list(confusions), (3.0, 3.0), "compressed")  # fixed-aspect images
    for key, counts in confusions.items():
        counts = np.asarray(counts, dtype=float)
        totals = counts.sum(axis=1, keepdims=True)
        rates = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        image = axes[key].imshow(rates, cmap="Blues", vmin=0, vmax=1)
        axes[key].set_title(f"{key} (acc {np.trace(counts) / counts.sum():.3f})", fontsize=9)
        _class_ticks(axes[key], classes)
    fig.colorbar(image, ax=list(axes.values()), shrink=0.8, label="fraction of the actual class")
    return fig
