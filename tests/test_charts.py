"""Study charts from small constructed tables: real PNGs on disk, and the figure content checked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from resomap.report.charts import model_colors, save_figure
from resomap.report.charts.cells import confusion_chart, training_curves_chart
from resomap.report.charts.explanations import attention_chart, consistency_chart, explanation_scores_chart
from resomap.report.charts.results import PARETO_LABEL, accuracy_chart, cost_chart, pareto_chart

MODELS, RESOLUTIONS = ["tiny_cnn", "simple_cnn"], [16, 32, 64]
COSTS = ["latency_ms", "throughput_img_s", "peak_memory_mb", "flops", "energy_j_per_img"]


@pytest.fixture
def stats() -> pd.DataFrame:
    rows = []
    for m, model in enumerate(MODELS):
        for r in RESOLUTIONS:
            row = {"model": model, "resolution": r, "seeds": 3, "latency_ms": 0.1 * (m + 1) * r / 16,
                   "throughput_img_s": 1e4 / r, "peak_memory_mb": r / 4, "flops": 1e3 * r**2, "energy_j_per_img": np.nan}
            accuracy = 0.3 + 0.1 * m + r / 200
            for name, value in (("accuracy", accuracy), ("macro_f1", accuracy - 0.05)):
                row |= {f"{name}_mean": value, f"{name}_std": 0.01, f"{name}_ci_low": value - 0.02,
                        f"{name}_ci_high": value + 0.02}
            rows.append(row)
    frame = pd.DataFrame(rows)
    frame["pareto"] = [True, False, True, False, True, False]
    return frame


def texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text)]


def check_png(fig: Figure, path) -> None:
    save_figure(fig, path)
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 200


def axes_titled(fig: Figure, title: str):
    (ax,) = [ax for ax in fig.axes if ax.get_title() == title]
    return ax


def test_model_colors_follow_the_given_order():
    colors = model_colors([f"m{i}" for i in range(11)])
    assert colors["m0"] == "#1f77b4" and colors["m1"] == "#ff7f0e"
    assert colors["m10"] == colors["m0"] and len(set(colors.values())) == 10


def test_saved_png_is_byte_identical_and_carries_no_version(stats, tmp_path):
    save_figure(accuracy_chart(stats), tmp_path / "a.png")
    save_figure(accuracy_chart(stats), tmp_path / "b.png")
    data = (tmp_path / "a.png").read_bytes()
    assert data == (tmp_path / "b.png").read_bytes()
    assert b"matplotlib" not in data.lower()


def test_failed_save_keeps_the_old_file_and_leaves_no_temp(stats, tmp_path):
    path = tmp_path / "chart.png"
    save_figure(accuracy_chart(stats), path)
    before = path.read_bytes()
    broken = Figure()
    broken.text(0.5, 0.5, r"$\frac{$")  # mathtext that cannot be parsed: savefig raises mid-write
    with pytest.raises(ValueError):
        save_figure(broken, path)
    with pytest.raises(ValueError):
        save_figure(broken, tmp_path / "new.png")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["chart.png"]


def test_accuracy_chart_lines_band_and_resolution_axis(stats, tmp_path):
    fig = accuracy_chart(stats)
    check_png(fig, tmp_path / "accuracy.png")
    simple = stats[stats.model == "simple_cnn"]
    for title, metric in (("Test accuracy", "accuracy"), ("Macro-F1", "macro_f1")):
        ax = axes_titled(fig, title)
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert list(lines) == MODELS
        assert list(lines["simple_cnn"].get_ydata()) == list(simple[f"{metric}_mean"])
        assert len(ax.collections) == len(MODELS)  # one CI band per model
        band = ax.collections[1].get_paths()[0].vertices[:, 1]
        assert np.isclose(band.min(), simple[f"{metric}_ci_low"].min())
        assert np.isclose(band.max(), simple[f"{metric}_ci_high"].max())
        assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["16", "32", "64"]
    assert any("95% bootstrap CI" in t.get_text() for t in fig.legends[0].get_texts())


def test_cost_chart_exponents_in_legend_and_unmeasured_panel(stats, tmp_path):
    scaling = pd.DataFrame([{"model": model, "metric": metric, "exponent": 2.0 if model == "simple_cnn" else np.nan,
                             "r2": 1.0} for model in MODELS for metric in COSTS])
    fig = cost_chart(stats, scaling)
    check_png(fig, tmp_path / "cost.png")
    flops = axes_titled(fig, "FLOPs per image")
    assert [t.get_text() for t in flops.get_legend().get_texts()] == ["tiny_cnn (k not fitted)", "simple_cnn (k = 2.00)"]
    assert flops.get_xscale() == flops.get_yscale() == "log"
    energy = axes_titled(fig, "Energy (J/img)")
    assert [t.get_text() for t in energy.texts] == ["not measured on this device"]
    assert not energy.get_lines() and not energy.get_xticks().size and not energy.get_yticks().size
    assert len(fig.axes) == len(COSTS) and "cost ∝ resolution^k" in fig.get_suptitle()


def test_pareto_chart_marks_exactly_the_front(stats, tmp_path):
    fig = pareto_chart(stats)
    check_png(fig, tmp_path / "pareto.png")
    ax = fig.axes[0]
    (front,) = [line for line in ax.get_lines() if line.get_label() == PARETO_LABEL]
    assert list(front.get_xdata()) == sorted(stats.loc[stats.pareto, "latency_ms"])
    assert front.get_markerfacecolor() == "none"
    assert sorted(t.get_text() for t in ax.texts) == sorted(f"{r} px" for r in stats.resolution)
    assert ax.get_xscale() == "log"


def test_consistency_chart_symmetric_matrices(tmp_path):
    rows = [{"model": model, "method": method, "resolution_a": a, "resolution_b": b,
             "spearman": rho, "top20_iou": 0.5}
            for model in MODELS for method in ("gradcam", "saliency")
            for (a, b), rho in zip(((16, 32), (16, 64), (32, 64)), (0.8, -0.3, 0.25))]
    fig = consistency_chart(pd.DataFrame(rows), [64, 16, 32])
    check_png(fig, tmp_path / "consistency.png")
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == [f"{m} · {k}" for m in MODELS for k in ("gradcam", "saliency")]
    matrix = np.ma.filled(panels[0].images[0].get_array(), np.nan)  # imshow masks NaN; allclose would skip it
    assert np.allclose(matrix, matrix.T) and np.allclose(np.diag(matrix), 1.0) and matrix[0, 2] == -0.3
    assert panels[0].images[0].get_clim() == (0, 1)
    assert {"0.80", "-0.30", "0.25", "1.00"} <= {t.get_text() for t in panels[0].texts}
    assert [t.get_text() for t in panels[0].get_xticklabels()] == ["16", "32", "64"]
    assert any("Spearman rank correlation" in text for text in texts(fig))


def test_consistency_chart_without_pairs(tmp_path):
    fig = consistency_chart(pd.DataFrame(columns=["model", "method", "resolution_a", "resolution_b", "spearman",
                                                  "top20_iou"]), [32])
    check_png(fig, tmp_path / "empty.png")
    assert "needs at least two resolutions" in texts(fig)


def test_attention_chart_grid_and_verdicts(tmp_path):
    methods, k = ["gradcam", "saliency"], 5
    rng = np.random.default_rng(0)
    labels = np.arange(k)
    views = {r: {"images": rng.integers(0, 256, (k, r, r, 3), dtype=np.uint8), "labels": labels,
                 "predicted": np.where(labels == 1, 0, labels), "classes": [f"class{i}" for i in range(k)],
                 **{m: rng.random((k, r, r)).astype(np.float16) for m in methods}}
             for r in (32, 8, 16)}
    fig = attention_chart("simple_cnn", views, methods, max_images=4)
    check_png(fig, tmp_path / "attention.png")
    tiles = [ax for ax in fig.axes if ax.images]
    assert len(tiles) == (1 + len(methods)) * 4 * 3
    assert [ax.get_title() for ax in tiles[:3]] == [f"{r} px\nclass0 ✓" for r in (8, 16, 32)]
    assert tiles[9].get_title() == "class0 ✗" and tiles[9].get_ylabel() == "image 1\ntrue: class1"
    assert tiles[3].get_ylabel() == "image 0 · gradcam" and tiles[5].images[0].get_array().shape == (32, 32, 3)
    assert not tiles[0].get_xticks().size and fig.get_suptitle() == "simple_cnn: the same test images at every resolution"


def test_explanation_scores_chart_means_and_missing_scores(tmp_path):
    rows = [{"model": model, "resolution": r, "seed": seed,
             "gradcam.deletion_auc": 0.1 * seed + r / 100, "gradcam.insertion_auc": 0.5,
             "gradcam.pointing_game": np.nan, "gradcam.energy_in_mask": np.nan,
             "saliency.deletion_auc": 0.2, "saliency.pointing_game": np.nan}
            for model in MODELS for r in RESOLUTIONS for seed in (0, 1)]
    fig = explanation_scores_chart(pd.DataFrame(rows), ["gradcam", "saliency"])
    check_png(fig, tmp_path / "scores.png")
    deletion = axes_titled(fig, "gradcam: Deletion AUC ↓ (faithfulness)")
    assert np.allclose(deletion.get_lines()[0].get_ydata(), [0.05 + r / 100 for r in RESOLUTIONS])
    assert [t.get_text() for t in axes_titled(fig, "gradcam: Pointing game ↑").texts] == ["not available (no object masks)"]
    assert [t.get_text() for t in axes_titled(fig, "saliency: Insertion AUC ↑ (faithfulness)").texts] == ["not available"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == MODELS


def grid_slot(ax) -> tuple[int, int]:
    spec = ax.get_subplotspec()
    return spec.rowspan.start, spec.colspan.start


def test_training_curves_chart_one_column_per_resolution(tmp_path):
    epochs = np.arange(4)
    frame = pd.DataFrame({"epoch": epochs, "train_loss": 2 - epochs / 4, "val_loss": 2.1 - epochs / 4,
                          "train_accuracy": epochs / 5, "val_accuracy": epochs / 6})
    keys = ["simple_cnn-64-0", "tiny_cnn-16-0", "tiny_cnn-32-0", "simple_cnn-16-0", "tiny_cnn-64-0"]
    curves = {key: frame for key in keys} | {"simple_cnn-64-0": frame.drop(columns="val_loss")}
    fig = training_curves_chart(curves)
    check_png(fig, tmp_path / "curves.png")
    assert grid_slot(axes_titled(fig, "simple_cnn-64-0")) == (0, 2)
    assert grid_slot(axes_titled(fig, "tiny_cnn-16-0")) == (1, 0)
    assert len(axes_titled(fig, "simple_cnn-64-0").get_lines()) == 1  # train loss; accuracy is on the twin
    lines = [line for ax in fig.axes for line in ax.get_lines()]
    assert len(lines) == 4 * len(keys) - 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["train loss", "val loss", "train accuracy",
                                                                  "val accuracy"]


def test_cell_grid_falls_back_to_near_square():
    frame = pd.DataFrame({"epoch": [0, 1], "train_loss": [2.0, 1.0]})
    fig = training_curves_chart({name: frame for name in "abcde"})
    assert grid_slot(axes_titled(fig, "d")) == (1, 0) and grid_slot(axes_titled(fig, "e")) == (1, 1)


def test_confusion_chart_row_normalised_with_outer_labels(tmp_path):
    classes = ["cat", "dog", "fox"]
    counts = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    keys = [f"{model}-{r}-0" for model in MODELS for r in RESOLUTIONS]
    fig = confusion_chart({key: counts for key in keys}, classes)
    check_png(fig, tmp_path / "confusion.png")
    corner = axes_titled(fig, "simple_cnn-16-0 (acc 0.786)")
    assert np.allclose(corner.images[0].get_array(), [[0.8, 0.2, 0], [0.25, 0.75, 0], [0, 0, 0]])
    assert [t.get_text() for t in corner.get_xticklabels()] == classes == [t.get_text() for t in corner.get_yticklabels()]
    inner = axes_titled(fig, "tiny_cnn-32-0 (acc 0.786)")
    assert not any(t.get_text() for t in inner.get_xticklabels() + inner.get_yticklabels())
    many = confusion_chart({keys[0]: np.eye(21, dtype=int)}, [f"c{i}" for i in range(21)])
    assert not many.axes[0].get_xticks().size and "(acc 1.000)" in many.axes[0].get_title()
