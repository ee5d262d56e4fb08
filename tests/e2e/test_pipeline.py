"""Real `dvc repro` on a tiny grid in a temp git repo: only the cells whose inputs changed rerun."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from helpers.study_repo import dvc, make_study_repo, repro, set_params, stale


def cells(stage: str, resolutions=(16, 24)) -> set[str]:
    if stage == "prepare":
        return {f"prepare@{r}" for r in resolutions}
    if stage == "profile":
        return {f"profile@tiny_cnn-{r}" for r in resolutions}
    return {f"{stage}@tiny_cnn-{r}-0" for r in resolutions}


FINETUNE = {"finetune@tiny_cnn-16to24-0"}  # finetune.pairs: next


@pytest.fixture(scope="module")
def built_study(tmp_path_factory) -> tuple[Path, set[str]]:
    repo = make_study_repo(tmp_path_factory.mktemp("e2e") / "study")
    ran = repro(repo)
    return repo, ran


@pytest.fixture
def study(built_study, tmp_path) -> Path:
    """A private copy of the reproduced study, so each test changes its own."""
    copy = tmp_path / "study"
    shutil.copytree(built_study[0], copy, symlinks=True)
    return copy


def test_first_repro_runs_every_stage_and_writes_every_output(built_study):
    repo, ran = built_study
    everything = set().union(*(cells(s) for s in ("prepare", "train", "evaluate", "surface", "profile", "explain")))
    assert ran == everything | FINETUNE | {"aggregate"}
    table = (repo / "reports/cells.csv").read_text().splitlines()
    assert len(table) == 3 and table[0].startswith("model,family,resolution,seed,")
    assert (repo / "models/tiny_cnn/24/0/model.pt").is_file()
    assert len(list((repo / "plots/explain/tiny_cnn/16/0").glob("image_*.png"))) == 2
    assert (repo / "reports/report.html").is_file() and (repo / "reports/figures/attention_tiny_cnn.png").is_file()
    metrics = dvc(repo, "metrics", "show")
    assert "metrics/evaluate/tiny_cnn/16/0/metrics.json" in metrics and "top5_accuracy" in metrics


def test_second_repro_runs_nothing(study):
    assert repro(study) == set()
    assert stale(study) == set()


def test_appending_a_resolution_runs_only_the_new_cells_and_retrains_nothing(study):
    """Every surface cell reruns too (each now also tests at 32 px): inference only. The new pair
    24 -> 32 is fine-tuned; 16 -> 24 is not redone."""
    set_params(study, {"resolutions": [16, 24, 32]})
    new = {"prepare@32", "train@tiny_cnn-32-0", "evaluate@tiny_cnn-32-0", "profile@tiny_cnn-32", "explain@tiny_cnn-32-0",
           "finetune@tiny_cnn-24to32-0"}
    assert repro(study) == new | cells("surface", (16, 24, 32)) | {"aggregate"}
    surface = json.loads((study / "metrics/surface/tiny_cnn/16/0/metrics.json").read_text())
    assert sorted(surface["test"], key=int) == ["16", "24", "32"]


def test_an_evaluate_tta_change_reruns_only_evaluate_and_aggregate(study):
    set_params(study, {"evaluate.tta": "flip"})
    assert repro(study) == cells("evaluate") | {"aggregate"}


def test_bn_recalibration_reruns_only_the_surface_and_aggregate(study):
    set_params(study, {"evaluate.bn_recalibration": True})
    assert repro(study) == cells("surface") | {"aggregate"}


def test_a_finetune_param_reruns_only_the_fine_tunes_and_aggregate(study):
    set_params(study, {"finetune.epochs": 3})
    assert repro(study) == FINETUNE | {"aggregate"}
    metrics = json.loads((study / "metrics/finetune/tiny_cnn/16to24/0/metrics.json").read_text())
    assert (metrics["from_resolution"], metrics["to_resolution"], metrics["epochs"]) == (16, 24, 3)


def test_an_explain_param_reruns_only_explain_and_aggregate(study):
    set_params(study, {"explain.num_images": 3})
    assert repro(study) == cells("explain") | {"aggregate"}


def test_a_train_param_leaves_prepare_and_profile_alone(study):
    set_params(study, {"train.lr": 0.01, "train.label_smoothing": 0.2})
    assert stale(study) == cells("train") | FINETUNE
    assert repro(study) == cells("train") | cells("evaluate") | cells("surface") | cells("explain") | FINETUNE | {"aggregate"}


def test_the_train_batch_size_reprofiles_training_cost(study):
    """profile reads the train keys that set a training step's cost (train_throughput_img_s is
    measured at train.batch_size), not the ones that only change the weights."""
    set_params(study, {"train.batch_size": 8})
    assert stale(study) == cells("train") | cells("profile") | FINETUNE  # the fine-tune keeps the cell's recipe


def edit(repo: Path, module: str, line: str = "# edited") -> None:
    path = repo / module
    path.write_text(path.read_text() + f"\n{line}\n")


ALL_BUT_PREPARE = {*cells("train"), *cells("evaluate"), *cells("surface"), *cells("profile"), *cells("explain"), *FINETUNE, "aggregate"}


@pytest.mark.parametrize(
    "module, rerun",
    [
        ("resomap/explain/scores.py", cells("explain") | {"aggregate"}),
        ("resomap/report/findings.py", {"aggregate"}),
        ("resomap/evaluate/metrics.py", cells("evaluate") | cells("surface") | FINETUNE | {"aggregate"}),
        ("resomap/profile/timing.py", cells("profile")),
        ("resomap/train/fit.py", cells("train") | FINETUNE),
        ("resomap/finetune/layers.py", FINETUNE),
        ("resomap/optim/schedules.py", cells("train") | cells("profile") | FINETUNE),
        ("resomap/prepare/resize.py", cells("prepare")),
        ("resomap/core/io.py", ALL_BUT_PREPARE | cells("prepare")),
    ],
)
def test_a_code_edit_makes_only_the_stages_that_import_it_stale(study, module, rerun):
    edit(study, module)
    assert stale(study) == rerun


def test_a_new_module_in_a_sub_package_needs_no_dvc_yaml_edit(study):
    (study / "resomap/explain/new_method.py").write_text('"""A method not yet wired in."""\n')
    assert stale(study) == cells("explain") | {"aggregate"}


def test_bytecode_does_not_change_the_code_hashes(study):
    cache = study / "resomap/train/__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "fit.cpython-311.pyc").write_bytes(b"not code")
    assert stale(study) == set()


def test_registering_a_model_leaves_prepare_alone(study):
    edit(study, "resomap/models/registry.py", 'register(ModelSpec("tiny_cnn_2", "custom", lambda n: SmallCNN((8, 16), n), 4, "features.1"))')
    assert stale(study) == ALL_BUT_PREPARE


def test_a_fit_loop_edit_retrains_and_identical_weights_rerun_nothing_downstream(study):
    """A comment in the fit loop retrains every cell (DVC cannot know it is a comment); the CPU
    weights come out bit-identical, so evaluate and explain are skipped and profile never runs; the
    fine-tune reruns (its loop is the fit loop) and aggregate follows, for the new timings."""
    edit(study, "resomap/train/fit.py")
    assert repro(study) == cells("train") | FINETUNE | {"aggregate"}


def weights_hash(repo: Path) -> str:
    outs = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["train@tiny_cnn-16-0"]["outs"]
    (weights,) = [o for o in outs if o["path"].startswith("models/")]
    return weights["md5"]


def test_forced_retraining_on_cpu_is_bit_identical(study):
    """Weights hash the same after a forced rerun (the metrics file differs: it holds wall-clock times)."""
    before = weights_hash(study)
    dvc(study, "repro", "-f", "-s", "train@tiny_cnn-16-0")
    assert weights_hash(study) == before


def test_the_table_matches_the_cell_files(built_study):
    import json

    import pandas as pd

    repo, _ = built_study
    table = pd.read_csv(repo / "reports/cells.csv").set_index("resolution")
    for resolution in (16, 24):
        evaluate = json.loads((repo / f"metrics/evaluate/tiny_cnn/{resolution}/0/metrics.json").read_text())
        profile = json.loads((repo / f"metrics/profile/tiny_cnn/{resolution}/metrics.json").read_text())
        row = table.loc[resolution]
        assert row["accuracy"] == evaluate["accuracy"] and row["macro_f1"] == evaluate["macro_f1"]
        assert row["flops"] == profile["flops"] and row["latency_ms"] == profile["latency_ms"]
        for name, value in evaluate["per_class_accuracy"].items():
            assert row[f"per_class_accuracy.{name}"] == value
