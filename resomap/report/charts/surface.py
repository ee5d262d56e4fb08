"""The train x test surface of one model: accuracy as a heatmap, training resolution down, test
resolution across, the diagonal (testing at the training resolution) outlined."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from resomap.report.study import PLAIN, RECALIBRATED

PANELS = {PLAIN: "as trained", RECALIBRATED: "BatchNorm recalibrated"}


def accuracy_matrix(grid: pd.DataFrame, model: str, variant: str) -> pd.DataFrame:
    """Mean accuracy over seeds, one row per training resolution and one column per test resolution."""
    rows = grid[(grid["model"] == model) & (grid["variant"] == variant)]
    return rows.pivot(index="train_resolution", columns="test_resolution", values="accuracy").sort_index().sort_index(axis=1)


def surface_chart(grid: pd.DataFrame, model: str) -> Figure:
    """One panel per variant present (as trained, and recalibrated when it ran); values annotated
    in %. Recalibration never runs at the training resolution, so its panel shows the plain
    diagonal; an entry that was not recalibrated stays blank."""
    plain = 100 * accuracy_matrix(grid, model, PLAIN)
    panels = {PLAIN: plain}
    recalibrated = 100 * accuracy_matrix(grid, model, RECALIBRATED)
    if not recalibrated.empty:
        recalibrated = recalibrated.reindex_like(plain)
        for resolution in set(plain.index) & set(plain.columns):
            recalibrated.loc[resolution, resolution] = plain.loc[resolution, resolution]
        panels[RECALIBRATED] = recalibrated
    fig = Figure(figsize=(1.4 + 1.1 * plain.shape[1] * len(panels), 1.2 + 0.9 * plain.shape[0]), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (variant, matrix) in zip(axes, panels.items()):
        image = ax.imshow(matrix.to_numpy(), cmap="viridis", vmin=0, vmax=100, aspect="auto")
        ax.set_xticks(range(matrix.shape[1]), [str(c) for c in matrix.columns])
        ax.set_yticks(range(matrix.shape[0]), [str(r) for r in matrix.index])
        ax.set_xlabel("test resolution (px)")
        ax.set_ylabel("training resolution (px)")
        ax.set_title(f"{model}: {PANELS[variant]}")
        for i, train in enumerate(matrix.index):
            for j, test in enumerate(matrix.columns):
                value = matrix.iloc[i, j]
                if pd.notna(value):
                    ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=9,
                            color="black" if value > 60 else "white")
                if train == test:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    fig.colorbar(image, ax=list(axes), label="test accuracy % (mean over seeds)")
    fig.suptitle("Accuracy (%) by training and test resolution; outlined: tested at the training resolution")
    return fig
