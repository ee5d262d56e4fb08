"""What the study says: accuracy with uncertainty per model and resolution, whether each step up
in resolution is a real gain, how cost scales, which resolution to use, and whether the
explanations move. Pure functions of a loaded Study; the report and the charts read the result."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from resomap.core.config import AggregateParams
from resomap.core.errors import ResoMapError
from resomap.core.grid import Cell
from resomap.explain.scores import consistency_matrix
from resomap.report.stats import bootstrap_intervals, fit_power_law, mcnemar, pareto_front
from resomap.report.study import Study
from resomap.report.surface import SurfaceAnalysis, analyse_surface

COSTS = ("latency_ms", "throughput_img_s", "peak_memory_mb", "flops", "energy_j_per_img")
HEATMAP_META = ("indices", "images", "labels", "predicted")


@dataclass(frozen=True)
class Analysis:
    stats: pd.DataFrame  # one row per (model, resolution): accuracy/F1 mean, std, CI; costs; pareto
    steps: pd.DataFrame  # one row per pair of neighbouring resolutions of a model: gain and McNemar
    scaling: pd.DataFrame  # one row per (model, cost): exponent k of cost ∝ resolution^k
    consistency: pd.DataFrame  # one row per (model, method, resolution pair): heatmap agreement
    recommendations: pd.DataFrame  # one row per model: best and recommended resolution
    budget_pick: dict | None  # the most accurate cell within the latency and memory budgets
    surface: SurfaceAnalysis  # testing at other resolutions than the training one
    params: AggregateParams


def analyse(study: Study, params: AggregateParams) -> Analysis:
    stats = resolution_stats(study, params)
    return Analysis(
        stats=stats,
        steps=resolution_steps(study, stats, params.alpha),
        scaling=scaling_fits(stats),
        consistency=explanation_consistency(study),
        recommendations=recommend(stats, params.tolerance),
        budget_pick=best_under_budget(stats, params.latency_budget_ms, params.memory_budget_mb),
        surface=analyse_surface(study, stats, params),
        params=params,
    )


def _cells_at(study: Study, model: str, resolution: int) -> list[Cell]:
    return [c for c in study.cells if c.model == model and c.resolution == resolution]


def resolution_stats(study: Study, params: AggregateParams) -> pd.DataFrame:
    """Mean and std over seeds, bootstrap CI over test images, mean costs, Pareto membership."""
    rows = []
    for (model, resolution), group in study.table.groupby(["model", "resolution"], sort=False):
        cells = _cells_at(study, model, resolution)
        frames = [study.predictions[c] for c in cells]
        ci = bootstrap_intervals(
            np.stack([study.class_codes(f["actual"]) for f in frames]),
            np.stack([study.class_codes(f["predicted"]) for f in frames]),
            len(study.classes), params.bootstrap_samples, params.confidence, params.seed,
        )
        row = {"model": model, "resolution": int(resolution), "seeds": len(group)}
        for metric in ("accuracy", "macro_f1"):
            row |= {
                f"{metric}_mean": group[metric].mean(),
                f"{metric}_std": group[metric].std(ddof=1) if len(group) > 1 else np.nan,
                f"{metric}_ci_low": ci[metric].low,
                f"{metric}_ci_high": ci[metric].high,
            }
        row |= {cost: pd.to_numeric(group[cost], errors="coerce").mean() for cost in COSTS}
        row["params"] = group["params"].iloc[0]
        rows.append(row)
    stats = pd.DataFrame(rows)
    stats["pareto"] = pareto_front(stats["accuracy_mean"], stats["latency_ms"])
    return stats


def _correct(study: Study, cells: list[Cell]) -> tuple[np.ndarray, np.ndarray]:
    frames = [study.predictions[c] for c in sorted(cells, key=lambda c: c.seed)]
    return np.stack([f["actual"].to_numpy() for f in frames]), np.stack([f["correct"].to_numpy() for f in frames])


def resolution_steps(study: Study, stats: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Each model's step from one resolution to the next: accuracy gain, McNemar's paired test on
    the same test images (per seed, pooled), and what the step costs in latency and FLOPs."""
    rows = []
    for model, group in stats.groupby("model", sort=False):
        group = group.sort_values("resolution")
        for (_, low), (_, high) in zip(group.iterrows(), group.iloc[1:].iterrows()):
            labels_low, correct_low = _correct(study, _cells_at(study, model, low.resolution))
            labels_high, correct_high = _correct(study, _cells_at(study, model, high.resolution))
            if labels_low.shape != labels_high.shape or (labels_low != labels_high).any():
                raise ResoMapError(
                    f"{model}: the test sets at {low.resolution} and {high.resolution} px differ, so they cannot be "
                    "paired: rerun prepare for both resolutions from the same data and seeds"
                )
            test = mcnemar(correct_low, correct_high)
            rows.append({
                "model": model, "resolution_low": low.resolution, "resolution_high": high.resolution,
                "accuracy_low": low.accuracy_mean, "accuracy_high": high.accuracy_mean,
                "gain": high.accuracy_mean - low.accuracy_mean,
                "gained": test.gained, "lost": test.lost, "p_value": test.p_value,
                "significant": test.p_value < alpha,
                "latency_ratio": high.latency_ms / low.latency_ms,
                "flops_ratio": high.flops / low.flops,
            })
    return pd.DataFrame(rows, columns=[
        "model", "resolution_low", "resolution_high", "accuracy_low", "accuracy_high", "gain",
        "gained", "lost", "p_value", "significant", "latency_ratio", "flops_ratio",
    ])


def scaling_fits(stats: pd.DataFrame) -> pd.DataFrame:
    """cost ∝ resolution^k per model and cost; k is NaN where a cost was not measured."""
    rows = []
    for model, group in stats.groupby("model", sort=False):
        for cost in COSTS:
            fit = fit_power_law(group["resolution"], group[cost])
            rows.append({"model": model, "metric": cost, "exponent": fit.exponent, "r2": fit.r2})
    return pd.DataFrame(rows)


def methods(study: Study) -> list[str]:
    return [key for key in study.heatmaps[study.cells[0]] if key not in HEATMAP_META]


def explanation_consistency(study: Study) -> pd.DataFrame:
    """For every model and method, how alike the heatmaps of the same test images are between
    each pair of resolutions (on the coarsest grid), averaged over seeds."""
    rows = []
    for model in study.models:
        for seed in study.seeds:
            cells = {c.resolution: c for c in study.cells if c.model == model and c.seed == seed}
            indices = {r: tuple(study.heatmaps[c]["indices"]) for r, c in cells.items()}
            if len(set(indices.values())) > 1:
                raise ResoMapError(f"{model} seed {seed}: explain picked different test images at different "
                                   "resolutions: rerun explain for every resolution with the same explain.seed")
            for method in methods(study):
                maps = {r: study.heatmaps[c][method] for r, c in cells.items()}
                rows += [{"model": model, "method": method, "seed": seed, **pair} for pair in consistency_matrix(maps)]
    columns = ["model", "method", "resolution_a", "resolution_b", "spearman", "top20_iou"]
    if not rows:
        return pd.DataFrame(columns=columns)
    return pd.DataFrame(rows).groupby(columns[:4], sort=False)[columns[4:]].mean().reset_index()


def recommend(stats: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """Per model: the resolution with the best mean accuracy, and the smallest one whose accuracy
    is within `tolerance` of it, with what the smaller choice saves in latency."""
    rows = []
    for model, group in stats.groupby("model", sort=False):
        best = group.loc[group["accuracy_mean"].idxmax()]
        enough = group[group["accuracy_mean"] >= best.accuracy_mean - tolerance].sort_values("resolution").iloc[0]
        rows.append({
            "model": model,
            "best_resolution": int(best.resolution), "best_accuracy": best.accuracy_mean,
            "recommended_resolution": int(enough.resolution), "recommended_accuracy": enough.accuracy_mean,
            "latency_saving": best.latency_ms / enough.latency_ms,
        })
    return pd.DataFrame(rows)


def best_under_budget(stats: pd.DataFrame, latency_ms: float | None, memory_mb: float | None) -> dict | None:
    """The most accurate (model, resolution) whose latency and peak memory fit the budgets;
    None when no cell fits. Ties go to the faster cell."""
    fits = stats
    if latency_ms is not None:
        fits = fits[fits["latency_ms"] <= latency_ms]
    if memory_mb is not None:
        fits = fits[fits["peak_memory_mb"] <= memory_mb]
    if fits.empty:
        return None
    best = fits.sort_values(["accuracy_mean", "latency_ms"], ascending=[False, True]).iloc[0]
    return {
        "model": best.model, "resolution": int(best.resolution), "accuracy": float(best.accuracy_mean),
        "latency_ms": float(best.latency_ms), "peak_memory_mb": float(best.peak_memory_mb),
    }


def _number(value) -> float | None:
    """JSON-safe: NaN (not measured) becomes null; floats keep 6 decimals."""
    return None if pd.isna(value) else round(float(value), 6)


def _by_training(frame: pd.DataFrame, column: str, value=_number) -> dict:
    return {str(row["train_resolution"]): value(row[column]) for _, row in frame.iterrows()}


def surface_summary(surface: SurfaceAnalysis, model: str) -> dict:
    """Per training resolution the best test resolution and its gain over testing at the training
    resolution (0 when that is the best); per fine-tuned pair its gain over the source at `from`."""
    best = surface.best[surface.best["model"] == model]
    tuned = surface.finetune[surface.finetune["model"] == model]
    return {
        "best_test_resolution": _by_training(best, "best_test_resolution", int),
        "fixres_gain": _by_training(best, "gain"),
        **({"finetune_gain": {f"{r.from_resolution}to{r.to_resolution}": _number(r.vs_source_gain)
                              for r in tuned.itertuples()}} if not tuned.empty else {}),
    }


def summary_metrics(analysis: Analysis) -> dict:
    """Study-level numbers for `dvc metrics diff` and `dvc exp show`: per model its best and
    recommended resolution, the cost exponents, how many resolution steps were significant, and
    the best test resolution per training resolution with its gain."""
    summary = {}
    for rec in analysis.recommendations.itertuples():
        fits = analysis.scaling[analysis.scaling["model"] == rec.model].set_index("metric")["exponent"]
        steps = analysis.steps[analysis.steps["model"] == rec.model]
        summary[rec.model] = {
            "best_accuracy": _number(rec.best_accuracy),
            "best_resolution": rec.best_resolution,
            "recommended_resolution": rec.recommended_resolution,
            "recommended_accuracy": _number(rec.recommended_accuracy),
            "significant_steps": int(steps["significant"].sum()),
            "exponent": {cost: _number(fits[cost]) for cost in COSTS},
            **surface_summary(analysis.surface, rec.model),
        }
    pick = analysis.budget_pick
    summary["under_budget"] = {"found": pick is not None} | ({k: (_number(v) if isinstance(v, float) else v)
                                                             for k, v in pick.items()} if pick else {})
    return summary
