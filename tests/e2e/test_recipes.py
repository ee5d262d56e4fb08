"""A strong training recipe through the real pipeline: `dvc exp run -S …` on the tiny study, as
README's recipe lines are typed, trains every cell with it, and evaluate, profile and explain load
and build the same model (the MLP head); the recipe's cells differ from the plain ones."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from helpers.study_repo import dvc, make_study_repo, ran

# each as a user types it after `dvc exp run`
RECIPE = [
    "train.epochs=3", "train.head=mlp", "train.head_hidden=32", "train.freeze_epochs=1",
    "train.loss=focal", "train.class_weights=balanced", "train.mixup_alpha=0.2", "train.cutmix_alpha=1.0",
    "train.ema_decay=0.9",
    "train.augment.policy=randaugment", "train.augment.color_jitter=0.3", "train.augment.random_erasing=0.25",
    "train.augment.random_resized_crop={scale:[0.35,1.0],ratio:[0.75,1.333]}",
    "data.subset_fraction=0.5",
]
CELLS = ("tiny_cnn/16/0", "tiny_cnn/24/0")


def model_digests(repo: Path) -> dict[str, str]:
    return {cell: hashlib.md5((repo / "models" / cell / "model.pt").read_bytes()).hexdigest() for cell in CELLS}


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory) -> tuple[Path, str, dict[str, str]]:
    repo = make_study_repo(tmp_path_factory.mktemp("recipe") / "study")
    dvc(repo, "repro")
    plain = model_digests(repo)
    args = [part for override in RECIPE for part in ("-S", override)]
    output = dvc(repo, "exp", "run", "-n", "strong", *args)
    return repo, output, plain


def test_the_recipe_reruns_every_cell_and_every_stage_loads_its_model(recipe_run):
    repo, output, _ = recipe_run
    stages = ran(output)
    for cell in ("16-0", "24-0"):
        assert {f"train@tiny_cnn-{cell}", f"evaluate@tiny_cnn-{cell}", f"explain@tiny_cnn-{cell}"} <= stages
    assert {"prepare@16", "prepare@24", "profile@tiny_cnn-16", "profile@tiny_cnn-24", "aggregate"} <= stages
    assert json.loads((repo / "metrics/evaluate/tiny_cnn/24/0/metrics.json").read_text())["accuracy"] >= 0


def test_the_recipe_is_what_the_cells_trained_with(recipe_run):
    repo, _, plain = recipe_run
    manifest = json.loads((repo / "data/prepared/16/manifest.json").read_text())
    assert manifest["subset_fraction"] == 0.5 and manifest["counts"]["train"] == 20  # 40 images, 10 classes
    train = json.loads((repo / "metrics/train/tiny_cnn/16/0/metrics.json").read_text())
    assert train["epochs_run"] == 3 and train["ema"] is True and train["ema_decay"] == 0.9
    assert set(train["class_weights"]) == set(json.loads((repo / "data/prepared/16/classes.json").read_text()))
    assert all(digest != plain[cell] for cell, digest in model_digests(repo).items())
    params = (repo / "params.yaml").read_text()
    assert "policy: randaugment" in params and "scale:\n      - 0.35" in params


def test_the_experiment_is_listed_with_its_recipe(recipe_run):
    repo, _, _ = recipe_run
    shown = dvc(repo, "exp", "show", "--md", "--keep", "Experiment|train.head$|train.augment.policy", "--drop", ".*")
    assert "strong" in shown and "randaugment" in shown and "mlp" in shown
