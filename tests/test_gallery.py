"""The gallery: per class, the most confident right and wrong test prediction of a cell with Grad-CAM
(resomap/explain/gallery.py, gallery_cell.py, the explain stage), and the report's section on which
of those errors the other resolutions get right (resomap/report/gallery.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from helpers.env import stage_env
from helpers.study_files import write_study
from helpers.study_repo import shipped_params
from resomap.core.config import ExplainParams
from resomap.core.grid import Cell
from resomap.core.io import save_state_dict
from resomap.data.prepared import load_prepared
from resomap.explain.explain_cell import explain_cell
from resomap.explain.gallery import gallery_record, pick_gallery, picked_indices, read_gallery
from resomap.explain.gallery_cell import explain_gallery
from resomap.models.inference import predict_logits
from resomap.models.registry import build_model
from resomap.report.charts import save_figure
from resomap.report.document import Paragraph, gallery_section
from resomap.report.gallery import confident_errors, fixed_table, verdict
from resomap.report.study import load_study

#               index: 0    1    2    3    4    5    6    7    8    9
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
PREDICTED = np.array([0, 0, 1, 2, 1, 1, 1, 2, 1, 0])
CONFIDENCE = np.array([0.7, 0.9, 0.8, 0.8, 0.6, 0.95, 0.95, 0.4, 0.3, 0.99])


def test_picks_the_most_confident_right_and_wrong_image_of_each_class():
    picks = pick_gallery(LABELS, PREDICTED, CONFIDENCE, 4)
    assert picks == [
        {"right": 1, "wrong": 2},  # 2 and 3 tie at 0.8 when wrong: the lower index
        {"right": 5, "wrong": None},  # 5 and 6 tie at 0.95; class 1 is never missed
        {"right": 7, "wrong": 9},  # wrong = true class 2 predicted otherwise: 9 (0.99) over 8 (0.3)
        {"right": None, "wrong": None},  # no test image of class 3
    ]
    assert picked_indices(picks).tolist() == [1, 2, 5, 7, 9]


def test_a_wrong_image_is_one_of_the_class_predicted_as_another_not_a_false_alarm():
    """Image 2 (class 0) predicted 1 with 0.99 is class 0's error, not class 1's."""
    labels, predicted, confidence = np.array([0, 1]), np.array([1, 1]), np.array([0.99, 0.5])
    assert pick_gallery(labels, predicted, confidence, 2) == [{"right": None, "wrong": 0}, {"right": 1, "wrong": None}]


def test_the_record_names_classes_and_keeps_confidence():
    picks = pick_gallery(LABELS, PREDICTED, CONFIDENCE, 4)
    record = gallery_record(picks, PREDICTED, CONFIDENCE, ["a", "b", "c", "d"], "features.0", 8)
    assert record["classes"]["c"]["wrong"] == {"index": 9, "predicted": "a", "confidence": 0.99}
    assert record["classes"]["b"]["wrong"] is None and list(record["classes"]) == ["a", "b", "c", "d"]


@pytest.mark.parametrize(("resolution", "right_at", "others", "expected"), [
    (16, [32, 64], [32, 64], "fixed at 32, 64 px"),
    (32, [16], [16, 64], "right at 16 px"),
    (32, [64, 16], [16, 64], "fixed at 64 px; right at 16 px"),
    (64, [], [16, 32], "wrong at every resolution"),
    (64, [], [], "no other resolution"),
])
def test_the_verdict_says_which_other_resolutions_get_the_image_right(resolution, right_at, others, expected):
    assert verdict(resolution, right_at, others) == expected


@pytest.fixture
def planted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return load_study(write_study())


def test_fixed_at_comes_from_the_other_resolutions_predictions_of_the_same_image(planted):
    """tiny_cnn gets the first 100 / 140 / 141 test images right at 16 / 32 / 64 px (seed 1 also
    misses image 0); every confidence is equal, so each class's error is its lowest wrong index."""
    errors = confident_errors(planted).set_index(["model", "seed", "class", "resolution"])
    row = errors.loc[("tiny_cnn", 0, "class_0", 16)]
    assert (row.image, row.predicted, row.right_at, row.verdict) == (100, "class_1", [32, 64], "fixed at 32, 64 px")
    assert errors.loc[("tiny_cnn", 0, "class_0", 32)].verdict == "fixed at 64 px"  # image 140
    assert errors.loc[("tiny_cnn", 0, "class_1", 32)].verdict == "wrong at every resolution"  # image 141
    assert errors.loc[("tiny_cnn", 1, "class_0", 16)].image == 0  # seed 1 misses image 0 everywhere
    assert errors.loc[("tiny_cnn", 1, "class_0", 16)].verdict == "wrong at every resolution"
    table = fixed_table(confident_errors(planted), planted.resolutions).set_index(["model", "px"])
    assert table.loc[("tiny_cnn", "16")].tolist() == ["20", "—", "19", "19"]
    assert table.loc[("tiny_cnn", "32")].tolist() == ["20", "0", "—", "1"]
    assert table.loc[("simple_cnn", "32")].tolist() == ["20", "0", "—", "19"]


def test_a_class_without_a_wrong_image_is_said_so(planted):
    record = planted.galleries[Cell("tiny_cnn", 64, 0)][0]
    record["classes"]["class_3"]["wrong"] = None
    errors = confident_errors(planted).set_index(["model", "seed", "class", "resolution"])
    row = errors.loc[("tiny_cnn", 0, "class_3", 64)]
    assert pd.isna(row.image) and row.verdict == "no wrong image"
    assert fixed_table(confident_errors(planted), planted.resolutions).set_index(["model", "px"]).loc[("tiny_cnn", "64"), "errors"] == "19"


def test_the_report_has_the_section(aggregated):
    folder, _ = aggregated
    markdown = (folder / "reports/report.md").read_text()
    assert "## Most confident right and wrong, per class" in markdown
    assert "| tiny_cnn | 16 | 20 | — | 19 | 19 |" in markdown
    for model in ("tiny_cnn", "simple_cnn"):
        assert (folder / f"reports/figures/errors_{model}.png").is_file()
        assert f"(figures/errors_{model}.png)" in markdown


def test_the_gallery_of_a_cell_uses_its_predictions_and_the_cam_layer_explain_records(tiny_synthetic):
    torch.manual_seed(0)
    data = load_prepared(tiny_synthetic, ("test",))
    test, model = data.splits["test"], build_model("simple_cnn", 10)
    params = ExplainParams(num_images=2, methods=["gradcam"], batch_size=8)
    metrics, _ = explain_cell(model, "simple_cnn", test, 10, params, torch.device("cpu"))
    record, arrays = explain_gallery(model, "simple_cnn", test, data.classes, params, torch.device("cpu"))
    logits = predict_logits(model, test.images, batch_size=4 * params.batch_size, device=torch.device("cpu"))
    picks = pick_gallery(test.labels.numpy(), logits.argmax(1).numpy(), logits.softmax(1).max(1).values.numpy(), 10)
    assert [{k: v and v["index"] for k, v in entry.items()} for entry in record["classes"].values()] == picks
    assert record["cam_layer"] == metrics["cam_layer"] and record["cam_size"] == metrics["gradcam"]["cam_size"]
    count = len(picked_indices(picks))
    assert arrays["indices"].tolist() == picked_indices(picks).tolist()
    assert arrays["images"].shape == (count, 32, 32, 3) and arrays["gradcam"].shape == (count, 32, 32)
    assert (arrays["images"] == test.images[arrays["indices"]].permute(0, 2, 3, 1).numpy()).all()
    assert np.isfinite(arrays["gradcam"]).all() and arrays["gradcam"].max() <= 1


def test_the_explain_stage_writes_the_gallery_beside_its_other_outputs(tmp_path, tiny_synthetic):
    changes = {"models": ["tiny_cnn"], "resolutions": [32], "seeds": [0], "explain.num_images": 2,
               "explain.methods": ["gradcam", "saliency"]}
    cwd = shipped_params(tmp_path / "study", changes)
    shutil.copytree(tiny_synthetic, cwd / "data/prepared/32")
    torch.manual_seed(0)
    save_state_dict(cwd / "models/tiny_cnn/32/0/model.pt", build_model("tiny_cnn", 10).state_dict())
    done = subprocess.run([sys.executable, "-m", "stages.explain", "tiny_cnn", "32", "0"], cwd=cwd, env=stage_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "gallery: " in done.stdout
    record, arrays = read_gallery(cwd / "explanations/tiny_cnn/32/0")
    assert list(record["classes"]) == json.loads((tiny_synthetic / "classes.json").read_text())
    assert record["cam_layer"] == json.loads((cwd / "metrics/explain/tiny_cnn/32/0/metrics.json").read_text())["cam_layer"]
    assert len(arrays["indices"]) == sum(v is not None for entry in record["classes"].values() for v in entry.values())
    panel = Image.open(cwd / "plots/gallery/tiny_cnn/32/0/gallery.png")
    assert panel.height > 10 * 112  # a row per class
    assert sorted(p.name for p in (cwd / "plots/explain/tiny_cnn/32/0").iterdir()) == ["image_00.png", "image_01.png"]
    with np.load(cwd / "explanations/tiny_cnn/32/0/heatmaps.npz") as heatmaps:
        assert set(heatmaps.files) == {"indices", "images", "labels", "predicted", "gradcam", "saliency"}


def test_a_palette_chart_has_at_most_that_many_colours_and_the_same_bytes_each_time(tmp_path):
    def chart() -> Figure:
        fig = Figure(figsize=(2, 2))
        fig.subplots().imshow(np.random.default_rng(0).random((32, 32, 3)))
        return fig

    save_figure(chart(), tmp_path / "a.png", palette=64)
    save_figure(chart(), tmp_path / "b.png", palette=64)
    save_figure(chart(), tmp_path / "full.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    image = Image.open(tmp_path / "a.png")
    assert image.mode == "P" and len(image.getcolors()) <= 64
    assert (tmp_path / "a.png").stat().st_size < (tmp_path / "full.png").stat().st_size


def test_a_study_without_errors_says_so_instead_of_an_empty_table(planted):
    for record, _ in planted.galleries.values():
        for picks in record["classes"].values():
            picks["wrong"] = None
    blocks = gallery_section(planted, {})
    assert blocks[-1] == Paragraph("No cell got any test image wrong.")
