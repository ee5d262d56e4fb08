"""The study's answer in sentences, written from the numbers: what each step up in resolution
gains and costs and whether the gain is real, which resolution to use, how cost scales, and
whether the explanations move with resolution."""

from __future__ import annotations

import pandas as pd

from resomap.report.analysis import Analysis
from resomap.report.study import Study
from resomap.report.surface import SurfaceAnalysis

RANDOMISATION_WARNING = 0.5  # Spearman with a randomly re-initialised twin above this: the map ignores the weights
MIN_TEST_IMAGES = 100  # below this a 95% interval on accuracy is wider than about +-10 points
SUPPORT = "per_class_support."


def _pts(gain: float) -> str:
    return f"{100 * gain:+.1f} points"


def _p(p_value: float) -> str:
    return f"p = {p_value:.2g}" if p_value >= 1e-4 else "p < 0.0001"


def step_findings(steps: pd.DataFrame) -> list[str]:
    """One sentence per step between neighbouring resolutions."""
    sentences = []
    for s in steps.itertuples():
        change = f"{s.model} {'gains' if s.gain >= 0 else 'loses'} {_pts(s.gain)} from {s.resolution_low} to {s.resolution_high} px"
        costs = f"{s.latency_ratio:.2f}× the latency and {s.flops_ratio:.2f}× the FLOPs"
        paired = f"McNemar {_p(s.p_value)}; {s.gained} test images fixed, {s.lost} broken"
        if s.significant:
            sentences.append(f"{change} for {costs} ({paired}).")
        else:
            sentences.append(f"{change}, which is not significant ({paired}); it costs {costs}.")
    return sentences


def recommendation_findings(analysis: Analysis) -> list[str]:
    tolerance = 100 * analysis.params.tolerance
    stats = analysis.stats.set_index(["model", "resolution"])
    sentences = []
    for r in analysis.recommendations.itertuples():
        best = stats.loc[(r.model, r.best_resolution)]
        ci = f"95% CI {100 * best.accuracy_ci_low:.1f}–{100 * best.accuracy_ci_high:.1f}%"
        if r.recommended_resolution == r.best_resolution:
            sentences.append(f"{r.model}: use {r.best_resolution} px, its best ({100 * r.best_accuracy:.1f}%, {ci}); "
                             f"no smaller resolution comes within {tolerance:.1f} points.")
        else:
            sentences.append(f"{r.model}: use {r.recommended_resolution} px ({100 * r.recommended_accuracy:.1f}%), within "
                             f"{tolerance:.1f} points of its best at {r.best_resolution} px ({100 * r.best_accuracy:.1f}%, {ci}) "
                             f"and {r.latency_saving:.2f}× faster.")
    return sentences


def budget_finding(analysis: Analysis) -> str:
    p = analysis.params
    budgets = [f"latency ≤ {p.latency_budget_ms:g} ms"] if p.latency_budget_ms is not None else []
    budgets += [f"peak memory ≤ {p.memory_budget_mb:g} MB"] if p.memory_budget_mb is not None else []
    within = f"within {' and '.join(budgets)}" if budgets else "with no latency or memory budget set (aggregate.*_budget_*)"
    pick = analysis.budget_pick
    if pick is None:
        return f"No cell fits {' and '.join(budgets)}: relax aggregate.latency_budget_ms / memory_budget_mb or add smaller resolutions."
    return (f"Best cell {within}: {pick['model']} at {pick['resolution']} px, {100 * pick['accuracy']:.1f}% accuracy, "
            f"{pick['latency_ms']:.2f} ms, {pick['peak_memory_mb']:.1f} MB.")


def scaling_findings(scaling: pd.DataFrame) -> list[str]:
    labels = {"flops": "FLOPs", "latency_ms": "Batch-1 latency", "peak_memory_mb": "Peak memory", "energy_j_per_img": "Energy per image"}
    sentences = []
    for metric, label in labels.items():
        fits = scaling[(scaling["metric"] == metric)].dropna(subset=["exponent"])
        if fits.empty:
            sentences.append(f"{label} was not measured on this device.")
            continue
        ks = ", ".join(f"{f.model} {f.exponent:.2f}" for f in fits.itertuples())
        sentences.append(f"{label} scales as resolution^k with k = {ks}.")
    return sentences


def pareto_finding(stats: pd.DataFrame) -> str:
    front = stats[stats["pareto"]].sort_values("latency_ms")
    cells = ", ".join(f"{r.model} @ {r.resolution} px" for r in front.itertuples())
    return f"Pareto front of accuracy against latency (no other cell is both more accurate and faster): {cells}."


def explanation_findings(analysis: Analysis, study: Study) -> list[str]:
    """Where attention moves most between resolutions, the most stable method, and maps that
    fail the randomisation sanity check."""
    consistency = analysis.consistency
    if consistency.empty:
        return ["Explanation consistency needs at least two resolutions."]
    sentences = []
    for model, rows in consistency.groupby("model", sort=False):
        by_method = rows.groupby("method", sort=False)["spearman"].mean()
        worst = rows.loc[rows["spearman"].idxmin()]
        sentences.append(
            f"{model}: {worst.method} maps of the same images at {worst.resolution_a} and {worst.resolution_b} px agree "
            f"least (Spearman {worst.spearman:.2f}, top-20% IoU {worst.top20_iou:.2f}); the most stable method is "
            f"{by_method.idxmax()} (mean Spearman {by_method.max():.2f} over resolution pairs).")
    table = study.table
    for column in [c for c in table.columns if c.endswith(".randomization_similarity")]:
        high = table[table[column] > RANDOMISATION_WARNING]
        if not high.empty:
            method = column.split(".")[0]
            sentences.append(
                f"Sanity check: {method} maps stay similar (Spearman > {RANDOMISATION_WARNING}) after the weights are "
                f"re-randomised in {len(high)} of {len(table)} cells, so they partly show the input, not the model (Adebayo et al. 2018).")
    return sentences


def _moved(rows: pd.DataFrame, column: str = "test_resolution") -> str:
    """Each row's model tested at `column` instead of its training resolution: the change and its p."""
    return "; ".join(f"{r.model} trained at {r.train_resolution} px {'gains' if r.gain >= 0 else 'loses'} "
                     f"{100 * abs(r.gain):.1f} points at {getattr(r, column)} px (McNemar {_p(r.p_value)})"
                     for r in rows.itertuples())


def _spread(gains: pd.Series) -> str:
    low, high = 100 * gains.min(), 100 * gains.max()
    return f"{low:+.1f} points" if low == high else f"{low:+.1f} to {high:+.1f} points"


def surface_finding(surface: SurfaceAnalysis) -> str:
    """One paragraph: does testing one step above the training resolution help, where the best test
    resolution is not the training one, and what recalibration, fine-tuning and TTA add."""
    one_up, best = surface.one_up, surface.best
    helps = one_up[one_up["significant"] & (one_up["gain"] > 0)]
    if one_up.empty:
        sentences = ["No test resolution above a training resolution was scored (evaluate.test_resolutions), so "
                     "whether testing higher helps is not measured."]
    elif helps.empty:
        sentences = [f"Testing one step above the training resolution helps no model significantly: {_moved(one_up)}."]
    else:
        rest = one_up.drop(helps.index)
        sentences = [f"Testing one step above the training resolution helps: {_moved(helps)}"
                     + (f"; not elsewhere: {_moved(rest)}." if not rest.empty else ".")]
    moved = best[best["best_test_resolution"] != best["train_resolution"]]
    sentences.append(
        f"The best test resolution is the training resolution itself for {len(best) - len(moved)} of {len(best)} "
        "trained resolutions" + (f"; elsewhere: {_moved(moved, 'best_test_resolution')}." if not moved.empty else "."))
    recalibration = surface.recalibration
    if not recalibration.empty:
        sentences.append(f"BatchNorm recalibration moves off-diagonal accuracy by {_spread(recalibration['gain'])} "
                         f"({int(recalibration['significant'].sum())} of {len(recalibration)} significant).")
    for r in surface.finetune.itertuples():
        at_to = (f"{_pts(r.vs_plain_gain)} over the source tested at {r.to_resolution} px (McNemar {_p(r.vs_plain_p_value)})"
                 if pd.notna(r.vs_plain_gain) else f"the source was not tested at {r.to_resolution} px")
        sentences.append(f"Fine-tuning {r.model} from {r.from_resolution} to {r.to_resolution} px reaches "
                         f"{100 * r.accuracy:.1f}%: {at_to}, and {_pts(r.vs_source_gain)} over the source at "
                         f"{r.from_resolution} px (McNemar {_p(r.vs_source_p_value)}).")
    tta = surface.tta
    if not tta.empty:
        sentences.append(f"Test-time augmentation ({tta['views'].iloc[0]}) moves accuracy by {_spread(tta['gain'])} "
                         f"for {tta['latency_multiplier'].max():g}× the forward passes.")
    return " ".join(sentences)


def data_caveats(study: Study) -> list[str]:
    """What the test split cannot support: too few images for the intervals to mean much, or
    classes it has no image of (prepared with data.on_missing_class: warn)."""
    caveats = []
    count = int(study.table["num_samples"].iloc[0])
    if count < MIN_TEST_IMAGES:
        half_width = 100 * min(1.0, 1.96 * (0.25 / count) ** 0.5)
        caveats.append(
            f"The test split has only {count} image{'s' if count != 1 else ''}: a 95% interval on an accuracy near 50% "
            f"spans about ±{half_width:.0f} points, so differences between cells smaller than that mean little, and the "
            f"intervals below understate it; use a few hundred test images or more (data.images.test, data.test_fraction)."
        )
    support = study.table[[c for c in study.table.columns if c.startswith(SUPPORT)]].iloc[0]
    absent = [name.removeprefix(SUPPORT) for name, n in support.items() if n == 0]
    if absent:
        caveats.append(
            f"The test split has no image of {', '.join(absent)}: their per-class accuracy is undefined (empty in "
            "cells.csv) and macro-F1 counts them as 0; add test images of them (data.on_missing_class: warn let this through)."
        )
    return caveats


def all_findings(analysis: Analysis, study: Study) -> dict[str, list[str]]:
    caveats = data_caveats(study)
    return {
        **({"Caveats": caveats} if caveats else {}),
        "Which resolution to use": recommendation_findings(analysis) + [budget_finding(analysis)],
        "What each step up in resolution buys": step_findings(analysis.steps),
        "What it costs": scaling_findings(analysis.scaling) + [pareto_finding(analysis.stats)],
        "Where the model looks": explanation_findings(analysis, study),
    }
