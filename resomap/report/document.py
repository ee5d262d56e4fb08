"""The study report: one document built once as blocks (headings, findings, tables, figures) and
rendered twice — self-contained HTML with the figures embedded, and Markdown beside the PNGs."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from resomap.report.analysis import COSTS, Analysis
from resomap.report.findings import all_findings, surface_finding
from resomap.report.gallery import MAX_CLASSES, confident_errors, fixed_table
from resomap.report.study import PLAIN, Study
from resomap.report.surface import SurfaceAnalysis

CELL_COLUMNS = ["model", "resolution", "seed", "accuracy", "macro_f1", "latency_ms", "throughput_img_s",
                "peak_memory_mb", "flops", "params"]


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame  # already formatted as strings


@dataclass(frozen=True)
class Figure:
    path: Path  # a PNG
    caption: str


Block = Heading | Paragraph | Bullets | Table | Figure


def _pct(value: float) -> str:
    return "—" if pd.isna(value) else f"{100 * value:.1f}"


def _num(value: float, digits: int = 2) -> str:
    return "—" if pd.isna(value) else f"{value:.{digits}f}"


def accuracy_table(stats: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "model": stats["model"],
        "px": stats["resolution"].astype(str),
        "seeds": stats["seeds"].astype(str),
        "accuracy % (± std)": [f"{_pct(m)} ± {_pct(s)}" if not pd.isna(s) else _pct(m)
                               for m, s in zip(stats["accuracy_mean"], stats["accuracy_std"])],
        "95% CI": [f"{_pct(lo)}–{_pct(hi)}" for lo, hi in zip(stats["accuracy_ci_low"], stats["accuracy_ci_high"])],
        "macro-F1 %": stats["macro_f1_mean"].map(_pct),
        "latency ms": stats["latency_ms"].map(_num),
        "peak MB": stats["peak_memory_mb"].map(lambda v: _num(v, 1)),
        "MFLOPs": (stats["flops"] / 1e6).map(lambda v: _num(v, 1)),
        "Pareto": stats["pareto"].map({True: "yes", False: ""}),
    })


def steps_table(steps: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "model": steps["model"],
        "step": [f"{lo} → {hi} px" for lo, hi in zip(steps["resolution_low"], steps["resolution_high"])],
        "gain (points)": (100 * steps["gain"]).map(lambda v: f"{v:+.1f}"),
        "fixed / broken": [f"{g} / {lo}" for g, lo in zip(steps["gained"], steps["lost"])],
        "McNemar p": steps["p_value"].map(lambda p: f"{p:.2g}"),
        "significant": steps["significant"].map({True: "yes", False: "no"}),
        "latency ×": steps["latency_ratio"].map(_num),
        "FLOPs ×": steps["flops_ratio"].map(_num),
    })


def _paired_columns(frame: pd.DataFrame, prefix: str = "") -> dict[str, pd.Series]:
    return {
        "gain (points)": (100 * frame[f"{prefix}gain"]).map(lambda v: "—" if pd.isna(v) else f"{v:+.1f}"),
        "fixed / broken": [f"{g:.0f} / {lo:.0f}" if pd.notna(g) else "—" for g, lo in zip(frame[f"{prefix}gained"], frame[f"{prefix}lost"])],
        "McNemar p": frame[f"{prefix}p_value"].map(lambda p: "—" if pd.isna(p) else f"{p:.2g}"),
    }


def surface_table(grid: pd.DataFrame) -> pd.DataFrame:
    """Plain accuracy % (mean over seeds), one row per model and training resolution, one column per
    test resolution; [brackets] mark testing at the training resolution."""
    plain = grid[grid["variant"] == PLAIN]
    wide = plain.pivot_table(index=["model", "train_resolution"], columns="test_resolution", values="accuracy", sort=False)
    wide = wide.reindex(columns=sorted(wide.columns))
    frame = pd.DataFrame({"model": wide.index.get_level_values(0), "trained px": wide.index.get_level_values(1).astype(str)})
    for test in wide.columns:
        frame[f"tested {test} px"] = [f"[{_pct(v)}]" if train == test else _pct(v)
                                      for train, v in zip(wide.index.get_level_values(1), wide[test])]
    return frame


def best_test_table(best: pd.DataFrame) -> pd.DataFrame:
    paired = _paired_columns(best)
    return pd.DataFrame({
        "model": best["model"],
        "trained px": best["train_resolution"].astype(str),
        "best test px": best["best_test_resolution"].astype(str),
        "accuracy %": best["accuracy"].map(_pct),
        "95% CI": [f"{_pct(lo)}–{_pct(hi)}" for lo, hi in zip(best["ci_low"], best["ci_high"])],
        "vs trained px (points)": paired["gain (points)"],
        "fixed / broken": paired["fixed / broken"],
        "McNemar p": [p if moved else "none: it is the training resolution"
                      for p, moved in zip(paired["McNemar p"], best["best_test_resolution"] != best["train_resolution"])],
        "latency ms": best["latency_ms"].map(_num),
        "MFLOPs": (best["flops"] / 1e6).map(lambda v: _num(v, 1)),
        "latency ×": best["latency_ratio"].map(_num),
    })


def recalibration_table(recalibration: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "model": recalibration["model"],
        "trained → tested px": [f"{a} → {b}" for a, b in zip(recalibration["train_resolution"], recalibration["test_resolution"])],
        "plain %": recalibration["reference_accuracy"].map(_pct),
        "recalibrated %": recalibration["accuracy"].map(_pct),
        **_paired_columns(recalibration),
    })


def finetune_table(finetune: pd.DataFrame) -> pd.DataFrame:
    at_to, whole = _paired_columns(finetune, "vs_plain_"), _paired_columns(finetune, "vs_source_")
    return pd.DataFrame({
        "model": finetune["model"],
        "from → to px": [f"{a} → {b}" for a, b in zip(finetune["from_resolution"], finetune["to_resolution"])],
        "fine-tuned %": finetune["accuracy"].map(_pct),
        "source at to %": finetune["vs_plain_reference_accuracy"].map(_pct),
        "gain vs source at to": at_to["gain (points)"], "McNemar p (at to)": at_to["McNemar p"],
        "source at from %": finetune["vs_source_reference_accuracy"].map(_pct),
        "gain vs source at from": whole["gain (points)"], "McNemar p (at from)": whole["McNemar p"],
    })


def tta_table(tta: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "model": tta["model"], "px": tta["resolution"].astype(str), "views": tta["views"],
        "plain %": tta["accuracy"].map(_pct), "TTA %": tta["tta_accuracy"].map(_pct),
        "gain (points)": (100 * tta["gain"]).map(lambda v: f"{v:+.1f}"),
        "forward passes ×": tta["latency_multiplier"].map(lambda v: f"{v:g}"),
    })


def surface_section(surface: SurfaceAnalysis, figures: dict[str, Path]) -> list[Block]:
    """The train × test surface: the finding, the accuracy table and heatmaps, the best test
    resolutions, then each gain table the study has data for."""
    blocks: list[Block] = [
        Heading("Testing at other resolutions than the training one"),
        Paragraph(surface_finding(surface)),
        Paragraph("Accuracy % (mean over seeds) of each model's weights trained at one resolution and tested at "
                  "another, on the same test images; [brackets]: tested at the training resolution."),
        Table(surface_table(surface.grid)),
    ]
    blocks += [Figure(path, f"{name.removeprefix('surface_')}: accuracy by training and test resolution, the diagonal outlined.")
               for name, path in figures.items() if name.startswith("surface_")]
    blocks += [Heading("Best test resolution per training resolution", 3),
               Paragraph("Highest mean accuracy over the test resolutions, its 95% bootstrap interval over test images, "
                         "McNemar's paired test against testing at the training resolution (fixed: images wrong there "
                         "and right here), and what testing at that resolution costs (profile, batch 1)."),
               Table(best_test_table(surface.best))]
    gains = (("BatchNorm recalibration", surface.recalibration, recalibration_table),
             ("Fine-tuning at the test resolution", surface.finetune, finetune_table),
             ("Test-time augmentation", surface.tta, tta_table))
    for title, frame, table in gains:
        if not frame.empty:
            blocks += [Heading(title, 3), Table(table(frame))]
    return blocks


def gallery_section(study: Study, figures: dict[str, Path]) -> list[Block]:
    """Most confident right and wrong, per class: how many of each resolution's most confident errors
    the other resolutions get right, then per model the errors themselves with their overlays."""
    blocks: list[Block] = [
        Heading("Most confident right and wrong, per class"),
        Paragraph("For each cell and class, the explain stage picks the most confident right and the most confident "
                  "wrong test image (true class this one, predicted another; ties to the lowest index) and draws its "
                  "Grad-CAM for the predicted class: plots/gallery/ holds both per cell. Below, each resolution's most "
                  "confident errors, and how many of those same test images each other resolution gets right "
                  "(same model and seed; image i is the same scene at every resolution). "
                  "Counts are over classes and seeds."),
    ]
    table = fixed_table(confident_errors(study), study.resolutions)
    blocks.append(Table(table) if not table.empty else Paragraph("No cell got any test image wrong."))
    shown = f"the first {MAX_CLASSES} classes, " if len(study.classes) > MAX_CLASSES else ""
    blocks += [Figure(path, f"{name.removeprefix('errors_')}: {shown}each class's most confident wrong test image at each "
                            f"resolution (seed {study.seeds[0]}), with the Grad-CAM of the predicted class: test index, "
                            "predicted class, confidence, and whether the other resolutions get the same image right.")
               for name, path in figures.items() if name.startswith("errors_")]
    return blocks


def scaling_table(scaling: pd.DataFrame) -> pd.DataFrame:
    wide = scaling.pivot(index="model", columns="metric", values="exponent")
    wide = wide.reindex(index=scaling["model"].unique(), columns=COSTS).map(_num)
    return wide.rename(columns=lambda cost: f"k {cost}").reset_index().rename_axis(columns=None)


def consistency_table(consistency: pd.DataFrame) -> pd.DataFrame:
    summary = consistency.groupby(["model", "method"], sort=False).agg(
        mean_spearman=("spearman", "mean"), min_spearman=("spearman", "min"), mean_top20_iou=("top20_iou", "mean"))
    return summary.map(_num).reset_index()


def cell_metrics_table(table: pd.DataFrame) -> pd.DataFrame:
    frame = table[CELL_COLUMNS].copy()
    for column in ("accuracy", "macro_f1"):
        frame[column] = frame[column].map(lambda v: f"{v:.3f}")
    frame["flops"] = (frame["flops"] / 1e6).map(lambda v: f"{v:.1f} M")
    return frame.astype(str)


RECIPE_COLUMNS = {  # cells.csv column -> report heading, for the recipes that record something per cell
    "train.lr_found": "lr found",
    "train.pseudo_label.pool": "pool",
    "train.pseudo_label.kept": "pseudo-labels kept",
    "train.pseudo_label.kept_label_accuracy": "kept labels right %",
}


def recipe_table(table: pd.DataFrame) -> pd.DataFrame | None:
    """What the LR range test and pseudo-labelling found in each cell; None when neither ran."""
    columns = [column for column in RECIPE_COLUMNS if column in table]
    if not columns:
        return None
    frame = table[["model", "resolution", "seed", *columns]].copy()
    formats = {"train.lr_found": lambda v: _num(v, 4), "train.pseudo_label.kept_label_accuracy": _pct}
    for column in columns:
        frame[column] = frame[column].map(formats.get(column, lambda v: "—" if pd.isna(v) else str(int(v))))
    return frame.rename(columns=RECIPE_COLUMNS).astype(str)


def build_report(study: Study, analysis: Analysis, figures: dict[str, Path]) -> list[Block]:
    """The whole report, top to bottom. `figures` maps chart names to PNG paths."""
    models, resolutions = ", ".join(study.models), ", ".join(f"{r}" for r in study.resolutions)
    device = study.table["device_name"].iloc[0] if "device_name" in study.table else "unknown"
    blocks: list[Block] = [
        Heading("ResoMap study report", 1),
        Paragraph(f"{len(study.cells)} cells: models {models} × resolutions {resolutions} px × seeds "
                  f"{', '.join(map(str, study.seeds))}; {int(study.table['num_samples'].iloc[0])} test images, "
                  f"{len(study.classes)} classes; costs measured on {device} ({study.table['device'].iloc[0]})."),
    ]
    for title, sentences in all_findings(analysis, study).items():
        blocks += [Heading(title), Bullets(sentences)]
    captions = {
        "accuracy": "Accuracy and macro-F1 against resolution, with 95% bootstrap intervals over test images.",
        "costs": "Costs against resolution (log–log) with the fitted exponent k of cost ∝ resolution^k.",
        "pareto": "Accuracy against batch-1 latency for every model and resolution; the Pareto front is marked.",
        "consistency": "How alike the heatmaps of the same test images are between resolutions (Spearman).",
        "explanation_scores": "Localisation and faithfulness of each explanation method against resolution.",
        "training_curves": "Training curves of every cell.",
        "confusion": "Confusion matrices of every cell (row-normalised).",
    }
    blocks += [Heading("Accuracy"), Table(accuracy_table(analysis.stats)), Figure(figures["accuracy"], captions["accuracy"]),
               Heading("Steps between neighbouring resolutions"), Table(steps_table(analysis.steps)),
               Heading("Cost"), Table(scaling_table(analysis.scaling)), Figure(figures["costs"], captions["costs"]),
               Figure(figures["pareto"], captions["pareto"]),
               *surface_section(analysis.surface, figures),
               Heading("Explanations across resolutions"), Table(consistency_table(analysis.consistency)),
               Figure(figures["consistency"], captions["consistency"])]
    blocks += [Figure(path, f"{name.removeprefix('attention_')}: the same test images at every resolution, with each method's overlay.")
               for name, path in figures.items() if name.startswith("attention_")]
    blocks.append(Figure(figures["explanation_scores"], captions["explanation_scores"]))
    blocks += gallery_section(study, figures)
    recipe = recipe_table(study.table)
    if recipe is not None:
        blocks += [Heading("What the recipe found per cell"),
                   Paragraph("The learning rate the LR range test chose (train.lr: auto) and the pseudo-labelling phase's "
                             "pool: how many images it kept and, where the pool's labels are known, how many of their "
                             "pseudo-labels were right."),
                   Table(recipe)]
    blocks += [Heading("Every cell"), Paragraph("All metrics of every cell are in cells.csv (one row per cell)."),
               Table(cell_metrics_table(study.table)),
               Figure(figures["training_curves"], captions["training_curves"]),
               Figure(figures["confusion"], captions["confusion"])]
    return blocks


def to_markdown(blocks: list[Block], relative_to: Path) -> str:
    """Markdown with figures linked relative to the report's folder."""
    out = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            out.append(block.text)
        elif isinstance(block, Bullets):
            out.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            header = "| " + " | ".join(block.frame.columns) + " |"
            rule = "|" + "---|" * len(block.frame.columns)
            rows = ["| " + " | ".join(row) + " |" for row in block.frame.itertuples(index=False)]
            out.append("\n".join([header, rule, *rows]))
        else:
            out.append(f"![{block.caption}]({block.path.relative_to(relative_to).as_posix()})\n\n*{block.caption}*")
    return "\n\n".join(out) + "\n"


STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
figure { margin: 1.5em 0; }
img { max-width: 100%; }
figcaption { color: #555; font-size: 13px; }
"""


def to_html(blocks: list[Block]) -> str:
    """One file that opens offline: figures inlined as data: URIs, no scripts, no links out."""
    out = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            out.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Bullets):
            out.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(c)}</th>" for c in block.frame.columns)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
                           for row in block.frame.itertuples(index=False))
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        else:
            data = base64.b64encode(block.path.read_bytes()).decode("ascii")
            caption = html.escape(block.caption)
            out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
                       f"<figcaption>{caption}</figcaption></figure>")
    body = "\n".join(out)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>ResoMap study report</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
