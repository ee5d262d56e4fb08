"""What resolution buys and costs: accuracy with its uncertainty, cost scaling, and the trade-off."""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from resomap.report.charts import by_model, figure_legend, model_colors, model_lines, models_in, not_available, plain_log_ticks

ACCURACY = {"accuracy": "Test accuracy", "macro_f1": "Macro-F1"}
COSTS = {
    "latency_ms": "Latency, batch 1 (ms)",
    "throughput_img_s": "Throughput (img/s)",
    "peak_memory_mb": "Peak memory (MB)",
    "flops": "FLOPs per image",
    "energy_j_per_img": "Energy (J/img)",
}
PARETO_LABEL = "Pareto front (higher accuracy, lower latency)"


def accuracy_chart(stats: pd.DataFrame) -> Figure:
    """Mean over seeds per (model, resolution), shaded with its 95% bootstrap CI."""
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    for ax, (metric, title) in zip(fig.subplots(1, 2), ACCURACY.items()):
        model_lines(ax, stats, f"{metric}_mean", band=(f"{metric}_ci_low", f"{metric}_ci_high"))
        ax.set_title(title)
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    figure_legend(fig, extra=(Patch(color="0.5", alpha=0.3, label="shaded: 95% bootstrap CI (resampled test images)"),))
    return fig


def _with_exponent(model: str, exponent: float) -> str:
    return f"{model} (k not fitted)" if math.isnan(exponent) else f"{model} (k = {exponent:.2f})"


def cost_chart(stats: pd.DataFrame, scaling: pd.DataFrame) -> Figure:
    """Log-log, so a power law is a straight line whose slope is the fitted exponent k in the legend."""
    exponents = scaling.set_index(["model", "metric"])["exponent"]
    fig = Figure(figsize=(14, 8.5), layout="constrained")
    axes = fig.subplots(2, 3).flat
    for (metric, title), ax in zip(COSTS.items(), axes):
        ax.set_title(title)
        if stats[metric].isna().all():
            not_available(ax, "not measured on this device")
            continue
        labels = {model: _with_exponent(model, exponents.get((model, metric), math.nan)) for model in models_in(stats)}
        model_lines(ax, stats, metric, labels=labels)
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[len(COSTS)].remove()
    fig.suptitle("Cost vs resolution (log-log): cost ∝ resolution^k, k fitted per model")
    return fig


def pareto_chart(stats: pd.DataFrame) -> Figure:
    """Every (model, resolution) as a point; the front holds those no other point beats on both axes."""
    rows = stats.dropna(subset=["latency_ms", "accuracy_mean"])
    palette = model_colors(models_in(stats))
    fig = Figure(figsize=(8.5, 6), layout="constrained")
    ax = fig.subplots()
    for model, group in by_model(rows):
        ax.plot(group["latency_ms"], group["accuracy_mean"], "o", color=palette[model], label=model)
        for latency, accuracy, resolution in group[["latency_ms", "accuracy_mean", "resolution"]].itertuples(index=False):
            ax.annotate(f"{resolution} px", (latency, accuracy), xytext=(5, 4), textcoords="offset points", fontsize=8)
    front = rows[rows["pareto"]].sort_values("latency_ms")
    ax.step(front["latency_ms"], front["accuracy_mean"], where="post", color="black", marker="o", markersize=14,
            markerfacecolor="none", label=PARETO_LABEL)
    ax.set_xscale("log")
    plain_log_ticks(ax.xaxis)
    ax.set_xlabel("latency, batch 1 (ms, log scale)")
    ax.set_ylabel("test accuracy (mean over seeds)")
    ax.set_title("Accuracy vs latency")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig
