"""Strong training recipes through the real pipeline: `dvc exp run -S …` on the tiny study, as
README's recipe lines are typed, trains every cell with them, and evaluate, profile and explain load
and build the same model (the MLP head); the recipe's cells differ from the plain ones.  The second
recipe is the ImageNet plan's schedule: progressive resizing, an LR range test with OneCycle,
top-k checkpoints and a pseudo-labelling phase on the built-in data's unlabeled pool."""

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
PLAN = [
    "train.epochs=3", "train.scheduler=onecycle", "train.lr=auto", "train.lr_range.steps=20",
    "train.progressive={start_resolution:8,end_epoch:2}", "train.save_top_k=2",
    "train.augment.policy=trivialaugment", "train.mixup_alpha=0.2", "train.ema_decay=0.9",
    "data.images.unlabeled=30", "train.pseudo_label={threshold:0.1,epochs:2,lr_factor:0.1}",
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


@pytest.fixture(scope="module")
def plan_run(recipe_run) -> tuple[Path, str]:
    repo, _, _ = recipe_run
    args = [part for override in PLAN for part in ("-S", override)]
    return repo, dvc(repo, "exp", "run", "-n", "plan", *args)


def test_the_plan_ramps_the_resolution_finds_an_lr_and_pseudo_labels(plan_run):
    repo, output = plan_run
    manifest = json.loads((repo / "data/prepared/24/manifest.json").read_text())
    assert manifest["counts"]["unlabeled"] == 30 and manifest["unlabeled_labels_known"] is True
    train = json.loads((repo / "metrics/train/tiny_cnn/24/0/metrics.json").read_text())
    assert train["lr_found"] > 0
    assert train["epochs_run"] == 3 + 2, "the pseudo-labelling phase's epochs follow the main fit's"
    pseudo = train["pseudo_label"]
    assert pseudo["pool"] == 30 and 0 <= pseudo["kept"] <= 30 and pseudo["threshold"] == 0.1
    assert pseudo["kept"] == 0 or 0.0 <= pseudo["kept_label_accuracy"] <= 1.0
    assert "pseudo-labels: kept" in output
    sizes = (repo / "metrics/train/tiny_cnn/24/0/plots/metrics/resolution.tsv").read_text().split()[3::2]
    assert [float(size) for size in sizes] == [8, 24, 24, 24, 24], "ramped to 24 px by epoch 2; the phase runs at 24"
    kept = sorted(path.name for path in (repo / "models/tiny_cnn/24/0").iterdir())
    assert len(kept) == 3 and "model.pt" in kept and all(name.startswith("epoch=") for name in kept if name != "model.pt")
    assert "What the recipe found per cell" in (repo / "reports/report.md").read_text()
