"""Where the models look, across resolutions: heatmap agreement, the heatmaps themselves, their scores."""

from __future__ import annotations

from itertools import product

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from resomap.explain.panels import overlay
from resomap.report.charts import figure_legend, message_figure, model_lines, models_in, not_available

SCORES = {
    "pointing_game": "Pointing game ↑",
    "energy_in_mask": "Energy in object mask ↑",
    "deletion_auc": "Deletion AUC ↓ (faithfulness)",
    "insertion_auc": "Insertion AUC ↑ (faithfulness)",
}
LOCALISATION = {"pointing_game", "energy_in_mask"}
TILE = 1.5  # inches per image tile
# Image grids use the "compressed" layout: "constrained" misplaces fixed-aspect axes and can clip titles.


def _agreement(pairs: pd.DataFrame, resolutions: list[int]) -> np.ndarray:
    """Symmetric resolution x resolution matrix of Spearman rho; a heatmap agrees with itself."""
    index = {r: i for i, r in enumerate(resolutions)}
    matrix = np.full((len(resolutions), len(resolutions)), np.nan)
    np.fill_diagonal(matrix, 1.0)
    for a, b, rho in pairs[["resolution_a", "resolution_b", "spearman"]].itertuples(index=False):
        matrix[index[a], index[b]] = matrix[index[b], index[a]] = rho
    return matrix


def consistency_chart(consistency: pd.DataFrame, resolutions: list[int]) -> Figure:
    """One matrix per (model, method). Colours clip at 0: a negative rho is as bad as none; the number shows it."""
    if consistency.empty:
        return message_figure("needs at least two resolutions")
    resolutions = sorted(resolutions)
    models, methods = models_in(consistency), list(dict.fromkeys(consistency["method"]))
    side = 1.4 + 0.45 * len(resolutions)
    fig = Figure(figsize=(max(6.5, side * len(methods)), side * len(models) + 1.2), layout="compressed")
    axes = fig.subplots(len(models), len(methods), squeeze=False)
    for (model, method), ax in zip(product(models, methods), axes.flat):
        pairs = consistency[(consistency["model"] == model) & (consistency["method"] == method)]
        matrix = _agreement(pairs, resolutions)
        image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=1)
        for (i, j), rho in np.ndenumerate(matrix):
            if not np.isnan(rho):
                ax.text(j, i, f"{rho:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if rho > 0.6 else "white")
        ticks = range(len(resolutions))
        ax.set_xticks(ticks, resolutions)
        ax.set_yticks(ticks, resolutions)
        ax.set_title(f"{model} · {method}", fontsize=9)
    fig.colorbar(image, ax=axes, location="bottom", shrink=0.8,
                 label="Spearman rank correlation of heatmaps (on the coarsest grid)")
    return fig


def _class_name(view: dict, label: int) -> str:
    return view["classes"][label] if "classes" in view else str(label)


def _verdict(view: dict, i: int) -> str:
    """Predicted class with a tick or a cross against the true label."""
    predicted = int(view["predicted"][i])
    return f"{_class_name(view, predicted)} {'✓' if predicted == int(view['labels'][i]) else '✗'}"


def attention_chart(model: str, views: dict[int, dict], methods: list[str], max_images: int = 4) -> Figure:
    """Columns are resolutions, so one image's heatmaps read left to right as the resolution grows."""
    resolutions = sorted(views)
    first = views[resolutions[0]]
    rows = [(i, method) for i in range(min(len(first["labels"]), max_images)) for method in (None, *methods)]
    fig = Figure(figsize=(TILE * len(resolutions) + 1.2, TILE * len(rows) + 0.6), layout="compressed")
    axes = fig.subplots(len(rows), len(resolutions), squeeze=False)
    for c, resolution in enumerate(resolutions):
        view = views[resolution]
        for r, (i, method) in enumerate(rows):
            ax, image = axes[r, c], view["images"][i]
            ax.imshow(image if method is None else overlay(image, view[method][i]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if method is None:
                ax.set_title((f"{resolution} px\n" if r == 0 else "") + _verdict(view, i), fontsize=8)
    for r, (i, method) in enumerate(rows):
        label = f"image {i} · {method}" if method else f"image {i}\ntrue: {_class_name(first, int(first['labels'][i]))}"
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.suptitle(f"{model}: the same test images at every resolution")
    return fig


def explanation_scores_chart(table: pd.DataFrame, methods: list[str]) -> Figure:
    """Mean over seeds per (model, resolution); rows are scores, columns are attribution methods."""
    columns = [f"{method}.{score}" for score in SCORES for method in methods if f"{method}.{score}" in table]
    means = table.groupby(["model", "resolution"], sort=False)[columns].mean().reset_index()
    fig = Figure(figsize=(3.6 * len(methods), 2.7 * len(SCORES) + 0.6), layout="constrained")
    axes = fig.subplots(len(SCORES), len(methods), squeeze=False)
    for (score, title), row in zip(SCORES.items(), axes):
        for method, ax in zip(methods, row):
            column = f"{method}.{score}"
            ax.set_title(f"{method}: {title}", fontsize=9)
            if column not in means or means[column].isna().all():
                not_available(ax, "not available (no object masks)" if score in LOCALISATION else "not available")
            else:
                model_lines(ax, means, column)
                ax.grid(alpha=0.3)
    figure_legend(fig)
    return fig
