"""Testing at another resolution than the training one (the train-test resolution discrepancy of
FixRes, Touvron et al. 2019): per model and training resolution, the best test resolution with its
interval and a paired test against testing at the training resolution, and what BatchNorm
recalibration, fine-tuning at the test resolution and test-time augmentation add. Pure functions
of a loaded Study."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from resomap.core.config import AggregateParams
from resomap.core.errors import ResoMapError
from resomap.report.stats import bootstrap_intervals, mcnemar
from resomap.report.study import FINETUNED, PLAIN, RECALIBRATED, SCORES, Study, Surface

PAIRED = ("reference_accuracy", "accuracy", "gain", "gained", "lost", "p_value", "significant")
TTA_COLUMNS = ["model", "resolution", "views", "accuracy", "tta_accuracy", "gain", "latency_multiplier"]


@dataclass(frozen=True)
class SurfaceAnalysis:
    grid: pd.DataFrame  # mean over seeds per (model, train_resolution, test_resolution, variant): SCORES
    best: pd.DataFrame  # per (model, train res): best plain test res, its CI, McNemar against the diagonal, its cost
    one_up: pd.DataFrame  # per (model, train res): testing at the next test resolution above the training one
    recalibration: pd.DataFrame  # per recalibrated entry: against the plain score at the same test resolution
    finetune: pd.DataFrame  # per (model, from, to): fine-tuned, against the source tested at `to` (plain_*) and at `from` (source_*)
    tta: pd.DataFrame  # per (model, resolution) with evaluate.tta: its gain and the forward passes it costs


def analyse_surface(study: Study, stats: pd.DataFrame, params: AggregateParams) -> SurfaceAnalysis:
    grid = surface_grid(study.surface)
    return SurfaceAnalysis(
        grid=grid,
        best=best_test_resolutions(study, grid, stats, params),
        one_up=one_step_up(study.surface, grid, params.alpha),
        recalibration=recalibration_gains(study.surface, grid, params.alpha),
        finetune=finetune_gains(study.surface, grid, params.alpha),
        tta=tta_gains(study.table),
    )


def surface_grid(surface: Surface) -> pd.DataFrame:
    keys = ["model", "train_resolution", "test_resolution", "variant"]
    grouped = surface.table.groupby(keys, sort=False)
    return grouped[list(SCORES)].mean().join(grouped.size().rename("seeds")).reset_index()


def paired(surface: Surface, model: str, train: int, reference: tuple[int, str], other: tuple[int, str],
           alpha: float) -> dict:
    """`other` against `reference` (each a test resolution and variant of the cell trained at `train`)
    on the same test images of every seed that has both: accuracies, gain and McNemar (gained: images
    the reference gets wrong and the other right). NaN when no seed has both."""
    frames_ref, frames_other = (surface.predictions.get((model, train, *key), {}) for key in (reference, other))
    seeds = sorted(frames_ref.keys() & frames_other.keys())
    if not seeds:
        return dict.fromkeys(PAIRED, np.nan) | {"significant": False}
    actual_ref, actual_other = (np.stack([frames[s]["actual"].to_numpy() for s in seeds]) for frames in (frames_ref, frames_other))
    if actual_ref.shape != actual_other.shape or (actual_ref != actual_other).any():
        raise ResoMapError(
            f"{model} trained at {train} px: the test images at {reference[0]} and {other[0]} px differ, so they cannot "
            "be paired: rerun prepare for both resolutions from the same data and seeds"
        )
    correct_ref, correct_other = (np.stack([frames[s]["correct"].to_numpy() for s in seeds]) for frames in (frames_ref, frames_other))
    test = mcnemar(correct_ref, correct_other)
    return {
        "reference_accuracy": correct_ref.mean(), "accuracy": correct_other.mean(),
        "gain": correct_other.mean() - correct_ref.mean(),
        "gained": test.gained, "lost": test.lost, "p_value": test.p_value, "significant": test.p_value < alpha,
    }


def _plain_by_training(grid: pd.DataFrame):
    yield from grid[grid["variant"] == PLAIN].groupby(["model", "train_resolution"], sort=False)


def best_test_resolutions(study: Study, grid: pd.DataFrame, stats: pd.DataFrame, params: AggregateParams) -> pd.DataFrame:
    """Per model and training resolution, the test resolution with the best plain accuracy (mean over
    seeds; a tie goes to the training resolution, then to the smaller), its bootstrap CI over test
    images, McNemar against testing at the training resolution (none when that is the best: p = 1),
    and profile's latency and FLOPs at the test resolution."""
    costs = stats.set_index(["model", "resolution"])
    rows = []
    for (model, train), group in _plain_by_training(grid):
        ranked = group.assign(moved=group["test_resolution"] != train)
        best = int(ranked.sort_values(["accuracy", "moved", "test_resolution"], ascending=[False, True, True])
                   ["test_resolution"].iloc[0])
        frames = list(study.surface.predictions[(model, train, best, PLAIN)].values())
        ci = bootstrap_intervals(
            np.stack([study.class_codes(f["actual"]) for f in frames]),
            np.stack([study.class_codes(f["predicted"]) for f in frames]),
            len(study.classes), params.bootstrap_samples, params.confidence, params.seed,
        )["accuracy"]
        rows.append({
            "model": model, "train_resolution": int(train), "best_test_resolution": best,
            **paired(study.surface, model, train, (train, PLAIN), (best, PLAIN), params.alpha),
            "ci_low": ci.low, "ci_high": ci.high,
            "latency_ms": costs.loc[(model, best), "latency_ms"], "flops": costs.loc[(model, best), "flops"],
            "latency_ratio": costs.loc[(model, best), "latency_ms"] / costs.loc[(model, train), "latency_ms"],
        })
    return pd.DataFrame(rows, columns=["model", "train_resolution", "best_test_resolution", *PAIRED, "ci_low", "ci_high",
                                       "latency_ms", "flops", "latency_ratio"])


def one_step_up(surface: Surface, grid: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Testing at the next test resolution above the training one (FixRes's cheapest move) against
    testing at the training resolution."""
    rows = []
    for (model, train), group in _plain_by_training(grid):
        above = sorted(t for t in group["test_resolution"] if t > train)
        if above:
            rows.append({"model": model, "train_resolution": int(train), "test_resolution": int(above[0]),
                         **paired(surface, model, train, (train, PLAIN), (above[0], PLAIN), alpha)})
    return pd.DataFrame(rows, columns=["model", "train_resolution", "test_resolution", *PAIRED])


def recalibration_gains(surface: Surface, grid: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Every recalibrated entry against the plain score of the same weights at the same test resolution."""
    rows = [{"model": e.model, "train_resolution": int(e.train_resolution), "test_resolution": int(e.test_resolution),
             **paired(surface, e.model, e.train_resolution, (e.test_resolution, PLAIN), (e.test_resolution, RECALIBRATED), alpha)}
            for e in grid[grid["variant"] == RECALIBRATED].itertuples()]
    return pd.DataFrame(rows, columns=["model", "train_resolution", "test_resolution", *PAIRED])


def _prefixed(prefix: str, values: dict) -> dict:
    return {f"{prefix}{key}": value for key, value in values.items()}


def finetune_gains(surface: Surface, grid: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Each fine-tuned cell (trained at `from`, fine-tuned and tested at `to`) against its source
    tested at `to` (what fine-tuning adds to the resolution change: vs_plain_*) and at `from` (the
    whole move: vs_source_*). vs_plain_* is NaN when the test resolutions leave `to` out."""
    rows = []
    for e in grid[grid["variant"] == FINETUNED].itertuples():
        at_to = paired(surface, e.model, e.train_resolution, (e.test_resolution, PLAIN), (e.test_resolution, FINETUNED), alpha)
        whole = paired(surface, e.model, e.train_resolution, (e.train_resolution, PLAIN), (e.test_resolution, FINETUNED), alpha)
        rows.append({"model": e.model, "from_resolution": int(e.train_resolution), "to_resolution": int(e.test_resolution),
                     "accuracy": e.accuracy, **_prefixed("vs_plain_", at_to), **_prefixed("vs_source_", whole)})
    return pd.DataFrame(rows, columns=["model", "from_resolution", "to_resolution", "accuracy",
                                       *(f"{side}{c}" for side in ("vs_plain_", "vs_source_") for c in PAIRED)])


def tta_gains(table: pd.DataFrame) -> pd.DataFrame:
    """evaluate.tta's accuracy against the plain accuracy of the same cells (mean over seeds); no
    paired test, since evaluate keeps no per-image TTA predictions."""
    if "tta.accuracy" not in table:
        return pd.DataFrame(columns=TTA_COLUMNS)
    rows = []
    for (model, resolution), group in table.dropna(subset=["tta.accuracy"]).groupby(["model", "resolution"], sort=False):
        rows.append({
            "model": model, "resolution": int(resolution), "views": "+".join(group["tta.views"].iloc[0]),
            "accuracy": group["accuracy"].mean(), "tta_accuracy": group["tta.accuracy"].mean(),
            "gain": group["tta.accuracy"].mean() - group["accuracy"].mean(),
            "latency_multiplier": group["tta.latency_multiplier"].iloc[0],
        })
    return pd.DataFrame(rows, columns=TTA_COLUMNS)
