"""The train x test surface: one cell scored at every test resolution on the same test images, its
diagonal exactly the evaluate stage's own scores, and bad test resolutions refused before any work."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers.env import shipped, stage_env
from helpers.study_repo import shipped_params
from resomap.core.config import DataParams, EvaluateParams, ImageCounts, ParamsError, check_test_resolutions_prepared, parse_params, validate
from resomap.core.errors import ResoMapError
from resomap.core.io import save_state_dict
from resomap.data.prepared import load_prepared
from resomap.evaluate.bn_recalibration import batchnorm_layers
from resomap.evaluate.evaluation import evaluate_model, prediction_rows
from resomap.evaluate.surface import SURFACE_COLUMNS, SurfaceData, evaluate_surface
from resomap.models.registry import build_model, check_model
from resomap.prepare.resolution import RESIZE_POLICY, prepare_resolution

CPU = torch.device("cpu")
RECALIBRATING = EvaluateParams(batch_size=16, bn_recalibration=True, bn_batches=2)


@pytest.fixture(scope="module")
def at_16(tiny_synthetic, tmp_path_factory):
    """The tiny_synthetic fixture's images prepared at 16 px: the same scenes, in the same order."""
    out = tmp_path_factory.mktemp("prepared") / "16"
    prepare_resolution(DataParams(images=ImageCounts(train=120, val=40, test=40)), 16, out)
    return out


def surface_inputs(*folders) -> list[SurfaceData]:
    return [SurfaceData(load_prepared(folder, ("train", "test")), RESIZE_POLICY) for folder in folders]


def trained_at_32(classes: int) -> nn.Module:
    """tiny_cnn with random weights and BatchNorm statistics that are not the defaults (a short pass in
    training mode), so a recalibration, or a missed reload of the weights, changes its predictions."""
    torch.manual_seed(0)
    model = build_model("tiny_cnn", classes)
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 3, 32, 32) * 3 + 1)
    return model.eval()


def test_the_diagonal_is_the_evaluate_stages_own_score_exactly(tiny_synthetic, at_16):
    data_32 = load_prepared(tiny_synthetic, ("test",))
    model = trained_at_32(data_32.num_classes)
    evaluated, logits = evaluate_model(model, data_32, RECALIBRATING, CPU)
    # 16 first: its recalibration must not leak into the diagonal, scored after it
    metrics, rows = evaluate_surface(model, 32, surface_inputs(at_16, tiny_synthetic), RECALIBRATING, CPU)
    diagonal = metrics["test"]["32"]
    assert {key: diagonal[key] for key in ("accuracy", "macro_f1", "ece")} == {key: evaluated[key] for key in ("accuracy", "macro_f1", "ece")}
    assert "recalibrated" not in diagonal and "recalibrated" in metrics["test"]["16"]
    expected = [[32, 0, *row] for row in prediction_rows(logits, data_32.splits["test"].labels, data_32.classes)]
    assert [row for row in rows if row[0] == 32] == expected


def test_every_test_resolution_scores_the_same_images_in_the_same_order(tiny_synthetic, at_16):
    data_32 = load_prepared(tiny_synthetic, ("test",))
    metrics, rows = evaluate_surface(trained_at_32(data_32.num_classes), 32, surface_inputs(at_16, tiny_synthetic), RECALIBRATING, CPU)
    index, actual = SURFACE_COLUMNS.index("index"), SURFACE_COLUMNS.index("actual")
    by_variant = {}
    for row in rows:
        by_variant.setdefault((row[0], row[1]), []).append((row[index], row[actual]))
    assert set(by_variant) == {(16, 0), (16, 1), (32, 0)}  # recalibrated away from the training resolution only
    assert len({tuple(images) for images in by_variant.values()}) == 1 and len(by_variant[(32, 0)]) == 40
    assert metrics["train_resolution"] == 32 and metrics["bn_batches"] == 2
    assert metrics["bn_layers"] == len(batchnorm_layers(build_model("tiny_cnn", 10))) > 0
    assert metrics["test"]["16"]["resize_policy"] == RESIZE_POLICY


def test_recalibration_is_undone_before_the_next_resolution(tiny_synthetic, at_16):
    data_32 = load_prepared(tiny_synthetic, ("test",))
    model = trained_at_32(data_32.num_classes)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    evaluate_surface(model, 32, surface_inputs(at_16), RECALIBRATING, CPU)
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


def test_without_batchnorm_recalibration_is_a_recorded_no_op(tiny_synthetic, at_16):
    classes = load_prepared(tiny_synthetic, ("test",)).num_classes
    torch.manual_seed(0)
    model = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, classes))
    metrics, _ = evaluate_surface(model, 32, surface_inputs(at_16), RECALIBRATING, CPU)
    entry = metrics["test"]["16"]
    assert metrics["bn_layers"] == 0
    assert entry["recalibrated"] == {key: entry[key] for key in ("accuracy", "macro_f1", "ece")}


def test_without_recalibration_only_plain_scores_are_written(tiny_synthetic, at_16):
    data_32 = load_prepared(tiny_synthetic, ("test",))
    plain = EvaluateParams(batch_size=16)
    metrics, rows = evaluate_surface(trained_at_32(data_32.num_classes), 32, surface_inputs(at_16), plain, CPU)
    assert metrics["bn_recalibration"] is False and "bn_layers" not in metrics
    assert "recalibrated" not in metrics["test"]["16"] and {row[1] for row in rows} == {0}


def params_with(**evaluate):
    raw = shipped()
    raw["evaluate"].update(evaluate)
    params = parse_params(raw)
    validate(params)
    return params


def test_grid_means_every_grid_resolution_and_a_list_is_taken_as_written():
    assert params_with().test_resolutions == params_with().grid_resolutions
    assert params_with(test_resolutions=[64, 16]).test_resolutions == [64, 16]


@pytest.mark.parametrize(
    "value, message",
    [
        ([], r"evaluate\.test_resolutions is empty"),
        ([16, 16], r"evaluate\.test_resolutions lists 16 more than once"),
        ([0], r"evaluate\.test_resolutions contains 0"),
        ("all", r"evaluate\.test_resolutions must be a list or grid"),
        (0, r"evaluate\.test_resolutions must be"),
    ],
)
def test_bad_test_resolutions_name_the_key(value, message):
    with pytest.raises(ParamsError, match=message):
        params_with(test_resolutions=value)


def test_a_test_resolution_no_prepare_stage_makes_is_refused_in_one_line():
    unprepared = r"^evaluate\.test_resolutions lists 48, which no prepare stage makes .*: list only grid resolutions"
    with pytest.raises(ParamsError, match=unprepared) as error:
        check_test_resolutions_prepared(params_with(test_resolutions=[16, 48]))
    assert "\n" not in str(error.value)
    check_test_resolutions_prepared(params_with(test_resolutions=[16, 64]))


def test_a_test_resolution_below_the_models_minimum_names_evaluate_test_resolutions():
    message = r"^resolution 2 is too small for tiny_cnn: it needs at least 4; remove 2 from evaluate\.test_resolutions or tiny_cnn from models$"
    with pytest.raises(ResoMapError, match=message):
        check_model("tiny_cnn", 2, "evaluate.test_resolutions")


def test_bn_batches_must_be_positive():
    with pytest.raises(ParamsError, match=r"evaluate\.bn_batches must be positive"):
        params_with(bn_batches=0)


# --- the stage, run as DVC runs it --------------------------------------------------------------


def surface_study(path: Path, tiny_synthetic: Path, at_16: Path, **evaluate) -> Path:
    """A study folder: tiny_cnn on a 16 and 32 px grid, both resolutions prepared, untrained weights at 32."""
    changes = {"models": ["tiny_cnn"], "resolutions": [16, 32], "seeds": [0], **{f"evaluate.{k}": v for k, v in evaluate.items()}}
    cwd = shipped_params(path, changes)
    shutil.copytree(tiny_synthetic, cwd / "data/prepared/32")
    shutil.copytree(at_16, cwd / "data/prepared/16")
    save_state_dict(cwd / "models/tiny_cnn/32/0/model.pt", trained_at_32(10).state_dict())
    return cwd


def run_stage(cwd: Path, name: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"stages.{name}", "tiny_cnn", "32", "0"], cwd=cwd, env=stage_env(),
                          capture_output=True, text=True, timeout=300)


def test_the_stages_diagonal_is_the_evaluate_stages_metrics_and_predictions(tmp_path, tiny_synthetic, at_16):
    cwd = surface_study(tmp_path / "study", tiny_synthetic, at_16)
    for name in ("evaluate", "surface"):
        done = run_stage(cwd, name)
        assert done.returncode == 0, done.stderr
    evaluated = json.loads((cwd / "metrics/evaluate/tiny_cnn/32/0/metrics.json").read_text())
    surface = json.loads((cwd / "metrics/surface/tiny_cnn/32/0/metrics.json").read_text())
    assert set(surface["test"]) == {"16", "32"}
    assert all(surface["test"]["32"][key] == evaluated[key] for key in ("accuracy", "macro_f1", "ece"))
    with (cwd / "plots/surface/tiny_cnn/32/0/predictions.csv").open() as f:
        diagonal = [row[2:] for row in csv.reader(f) if row[0] == "32"]
    with (cwd / "plots/evaluate/tiny_cnn/32/0/predictions.csv").open() as f:
        assert diagonal == list(csv.reader(f))[1:]


def test_the_stage_refuses_a_test_resolution_below_the_models_minimum_before_any_work(tmp_path, tiny_synthetic, at_16):
    cwd = surface_study(tmp_path / "study", tiny_synthetic, at_16, test_resolutions=[2, 32])
    done = run_stage(cwd, "surface")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error: resolution 2 is too small for tiny_cnn: it needs at least 4; remove 2 from evaluate.test_resolutions or tiny_cnn from models")
    assert not (cwd / "metrics").exists() and not (cwd / "plots").exists()
