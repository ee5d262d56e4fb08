"""Usage: python -m stages.aggregate

Read every cell of the grid in params.yaml, with its surface and fine-tune cells, and write the
study's answer to reports/: the tidy tables (cells.csv; surface.csv, one row per model, seed,
training and test resolution and variant), study-level metrics (summary.json), the data of
dvc.yaml's top-level plots (plots/), PNG charts (figures/) and the report (report.html,
self-contained, and report.md).
"""

import itertools

from resomap.core import io
from resomap.core.config import load_params
from resomap.core.grid import REPORTS_DIR, Cell
from resomap.core.stage import run_stage, usage_error
from resomap.report.analysis import analyse, summary_metrics
from resomap.report.document import build_report, to_html, to_markdown
from resomap.report.figures import write_figures
from resomap.report.plot_data import plot_tables
from resomap.report.study import load_study


def write_csv(path, frame) -> None:
    with io.atomic_open(path) as f:
        frame.to_csv(f, index=False, lineterminator="\n")


def main(argv: list[str]) -> None:
    if argv:
        raise usage_error(__doc__)
    params = load_params()
    io.check_writable(REPORTS_DIR)
    cells = [Cell(*c) for c in itertools.product(params.models, sorted(params.grid_resolutions), params.seeds)]
    study = load_study(cells, params.finetune_cells)
    analysis = analyse(study, params.aggregate)
    write_csv(REPORTS_DIR / "cells.csv", study.table)
    write_csv(REPORTS_DIR / "surface.csv", study.surface.table)
    for name, frame in plot_tables(analysis).items():
        write_csv(REPORTS_DIR / "plots" / name, frame)
    figures = write_figures(study, analysis, REPORTS_DIR / "figures")
    blocks = build_report(study, analysis, figures)
    with io.atomic_open(REPORTS_DIR / "report.md", "wb") as f:
        f.write(to_markdown(blocks, REPORTS_DIR).encode())
    with io.atomic_open(REPORTS_DIR / "report.html", "wb") as f:
        f.write(to_html(blocks).encode())
    io.write_json(REPORTS_DIR / "summary.json", summary_metrics(analysis))
    recommended = ", ".join(f"{r.model} {r.recommended_resolution} px" for r in analysis.recommendations.itertuples())
    print(f"aggregate: {len(cells)} cells -> {REPORTS_DIR / 'report.html'}; recommended: {recommended}")


if __name__ == "__main__":
    run_stage(main)
