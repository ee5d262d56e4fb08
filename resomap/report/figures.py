"""Every chart of the report, drawn from a loaded study and its analysis and saved as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from resomap.evaluate.metrics import confusion_matrix
from resomap.report.analysis import Analysis, methods
from resomap.report.charts import save_figure
from resomap.report.charts.cells import confusion_chart, training_curves_chart
from resomap.report.charts.explanations import attention_chart, consistency_chart, explanation_scores_chart
from resomap.report.charts.gallery import confident_errors_chart
from resomap.report.charts.results import accuracy_chart, cost_chart, pareto_chart
from resomap.report.charts.surface import surface_chart
from resomap.report.gallery import confident_errors, error_views
from resomap.report.study import Study, training_curves

PALETTE = 256  # colours of the per-class error charts: 30 photos a chart, a quarter of the bytes of full colour


def attention_views(study: Study, model: str) -> dict[int, dict]:
    """The first seed's explained images and maps of `model`, per resolution."""
    seed = study.seeds[0]
    return {c.resolution: {**study.heatmaps[c], "classes": study.classes}
            for c in study.cells if c.model == model and c.seed == seed}


def confusions(study: Study) -> dict[str, np.ndarray]:
    return {
        str(cell): confusion_matrix(study.class_codes(frame["actual"]), study.class_codes(frame["predicted"]),
                                    len(study.classes))
        for cell, frame in study.predictions.items()
    }


def write_figures(study: Study, analysis: Analysis, directory: Path) -> dict[str, Path]:
    """Chart name -> PNG path, in the order the report shows them."""
    explained = methods(study)
    errors = confident_errors(study)
    figures = {
        "accuracy": accuracy_chart(analysis.stats),
        "costs": cost_chart(analysis.stats, analysis.scaling),
        "pareto": pareto_chart(analysis.stats),
        **{f"surface_{m}": surface_chart(analysis.surface.grid, m) for m in study.models},
        "consistency": consistency_chart(analysis.consistency, study.resolutions),
        **{f"attention_{m}": attention_chart(m, attention_views(study, m), explained) for m in study.models},
        "explanation_scores": explanation_scores_chart(study.table, explained),
        **{f"errors_{m}": confident_errors_chart(m, error_views(study, errors, m), study.resolutions) for m in study.models},
        "training_curves": training_curves_chart({str(c): training_curves(c) for c in study.cells}),
        "confusion": confusion_chart(confusions(study), study.classes),
    }
    paths = {}
    for name, figure in figures.items():
        paths[name] = directory / f"{name}.png"
        save_figure(figure, paths[name], PALETTE if name.startswith("errors_") else None)
    return paths
