"""train.lr: auto through the real pipeline: `dvc repro` on the tiny study runs the range test in
every train stage, trains with the lr found, records it in the train metrics and declares the curve
as a plot of the stage; back on a number, the curve file is its header alone and nothing is stale."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from helpers.study_repo import dvc, git_commit, make_study_repo, set_params, stale

CELLS = ("tiny_cnn/16/0", "tiny_cnn/24/0")


def curve(repo: Path, cell: str) -> list[dict]:
    with open(repo / "metrics/train" / cell / "lr_range_test.csv") as f:
        return list(csv.DictReader(f))


def train_metrics(repo: Path, cell: str) -> dict:
    return json.loads((repo / "metrics/train" / cell / "metrics.json").read_text())


def plots_shown(repo: Path) -> dict:
    return json.loads(dvc(repo, "plots", "show", "--json"))


@pytest.fixture(scope="module")
def auto_study(tmp_path_factory) -> tuple[Path, str]:
    repo = make_study_repo(tmp_path_factory.mktemp("lr_auto") / "study")
    set_params(repo, {"train.lr": "auto"})
    output = dvc(repo, "repro")
    git_commit(repo, "lr: auto")
    return repo, output


@pytest.fixture(scope="module")
def numeric_study(auto_study) -> Path:
    repo, _ = auto_study
    set_params(repo, {"train.lr": 0.05})
    dvc(repo, "repro")
    git_commit(repo, "lr: 0.05")
    return repo


def test_every_cell_trains_with_the_lr_its_range_test_found(auto_study):
    repo, output = auto_study
    assert output.count("lr range test: train.lr ") == len(CELLS)
    for cell in CELLS:
        metrics = train_metrics(repo, cell)
        assert metrics["lr_rule"] == "lr_min" and 0 < metrics["lr_found"] < 10
        rows = curve(repo, cell)
        assert len(rows) >= 10 and list(rows[0]) == ["step", "lr", "loss", "smoothed_loss"]
        lowest = min(rows, key=lambda row: float(row["smoothed_loss"]))
        assert metrics["lr_found"] == pytest.approx(float(lowest["lr"]) / 10)
        epoch_lr = (repo / "metrics/train" / cell / "plots/metrics/lr.tsv").read_text().splitlines()[1].split("\t")[1]
        assert float(epoch_lr) == pytest.approx(metrics["lr_found"])  # epoch 1 trained at it
    assert stale(repo) == set()


def test_dvc_plots_show_draws_each_cell_curve_on_a_log_lr_axis(auto_study):
    repo, _ = auto_study
    shown = plots_shown(repo)
    assert "errors" not in shown
    for cell in CELLS:
        (plot,) = shown["data"][f"metrics/train/{cell}/lr_range_test.csv"]
        encoding = plot["content"]["encoding"]
        assert encoding["x"]["field"] == "lr" and encoding["x"]["scale"]["type"] == "log"
        assert encoding["y"]["field"] == "smoothed_loss"
        assert len(plot["content"]["data"]["values"]) == len(curve(repo, cell))


def test_a_numeric_lr_runs_no_test_and_leaves_the_curve_header_alone(numeric_study):
    repo = numeric_study
    shown = plots_shown(repo)
    assert "errors" not in shown
    for cell in CELLS:
        metrics = train_metrics(repo, cell)
        assert metrics["lr_found"] is None and metrics["lr_rule"] is None
        assert (repo / "metrics/train" / cell / "lr_range_test.csv").read_text() == "step,lr,loss,smoothed_loss\n"
        assert shown["data"][f"metrics/train/{cell}/lr_range_test.csv"] == []
    assert stale(repo) == set()
