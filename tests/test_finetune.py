"""FixRes fine-tuning: which layers learn, the recipe it runs, the cells composition lists, and the
stage run as DVC runs it (bad pairs and missing weights refused before any work)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.env import REPO, shipped, stage_env
from helpers.study_repo import proc, shipped_params, tool_env
from resomap.core.composition import finetune_pairs
from resomap.core.config import FinetuneParams, ParamsError, TrainParams, load_params, parse_params, validate
from resomap.core.grid import FinetuneCell
from resomap.core.io import save_state_dict
from resomap.data.prepared import load_prepared
from resomap.finetune.layers import BATCH_NORMS, limit_trainable
from resomap.finetune.recipe import finetune_train_params
from resomap.models.heads import Head, classifier_module
from resomap.models.registry import build_model
from resomap.train.fit import fit

CPU = torch.device("cpu")


def tuned(tiny_synthetic: Path, layers: str, head: Head = Head()) -> tuple[dict, torch.nn.Module]:
    """tiny_cnn's state before, and the model after, one fine-tune epoch with `layers` learning."""
    data = load_prepared(tiny_synthetic, ("train", "val"))
    torch.manual_seed(0)
    model = build_model("tiny_cnn", data.num_classes, head)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    limit_trainable(model, layers)
    train = finetune_train_params(TrainParams(batch_size=16, amp="off"), FinetuneParams(epochs=1, lr=0.1))
    result = fit(model, data, train, seed=0, device=CPU)
    model.load_state_dict(result.best_state)
    return before, model


def changed(before: dict, model: torch.nn.Module) -> set[str]:
    return {name for name, value in model.state_dict().items() if not torch.equal(value, before[name])}


def head_names(model: torch.nn.Module) -> set[str]:
    head = classifier_module(model)
    prefix = next(name for name, module in model.named_modules() if module is head)
    return {name for name in model.state_dict() if name.startswith(prefix + ".")}


def batchnorm_names(model: torch.nn.Module) -> set[str]:
    return {f"{name}.{key}" for name, module in model.named_modules() if isinstance(module, BATCH_NORMS)
            for key in module.state_dict()}


def test_with_only_the_classifier_learning_the_backbone_stays_bit_identical(tiny_synthetic):
    before, model = tuned(tiny_synthetic, "classifier")
    assert changed(before, model) == head_names(model)  # BatchNorm statistics and scales included


def test_fixres_rule_tunes_the_classifier_and_batchnorm_and_nothing_else(tiny_synthetic):
    before, model = tuned(tiny_synthetic, "classifier_bn")
    moved = changed(before, model)
    assert moved <= head_names(model) | batchnorm_names(model)
    assert head_names(model) <= moved and any(name.endswith("running_mean") for name in moved)
    convolutions = {name for name in before if name not in head_names(model) | batchnorm_names(model)}
    assert convolutions and not moved & convolutions


def test_an_mlp_heads_own_batchnorm_learns_with_the_classifier(tiny_synthetic):
    before, model = tuned(tiny_synthetic, "classifier", Head(kind="mlp", hidden=16, dropout=0.0))
    moved = changed(before, model)
    assert moved == head_names(model) and any("running_mean" in name for name in moved)


def test_all_layers_train_every_parameter():
    model = build_model("tiny_cnn", 10)
    assert limit_trainable(model, "all") == sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for p in classifier_module(model).parameters())
    assert limit_trainable(build_model("tiny_cnn", 10), "classifier") == head
    assert head < limit_trainable(build_model("tiny_cnn", 10), "classifier_bn") < sum(p.numel() for p in model.parameters())


def test_the_recipe_keeps_the_cells_optimizer_and_turns_the_extras_off():
    train = parse_params({**shipped(), "train": {**shipped()["train"], "mixup_alpha": 0.2, "ema_decay": 0.999,
                                                 "optimizer": "adamw"}}).train
    tuned_params = finetune_train_params(train, FinetuneParams(epochs=3, lr=0.002))
    assert (tuned_params.epochs, tuned_params.lr, tuned_params.optimizer, tuned_params.batch_size) == (3, 0.002, "adamw", train.batch_size)
    assert tuned_params.scheduler == "none" and tuned_params.warmup_epochs == 0
    assert tuned_params.mixup_alpha == 0 and tuned_params.ema_decay is None and tuned_params.pseudo_label is None
    assert tuned_params.augment.crop_padding == 0 and tuned_params.augment.policy == "none"


# --- which pairs, which cells ---------------------------------------------------------------------


def test_next_pairs_each_grid_resolution_with_the_next_one_up():
    assert finetune_pairs([64, 16, 32], "next") == [(16, 32), (32, 64)]
    assert finetune_pairs([512], "next") == []  # dvc exp run -S resolution=512: nothing to fine-tune
    assert finetune_pairs([16, 32, 64], [(64, 16)]) == [(64, 16)]


@pytest.mark.parametrize("pairs, message", [
    ([{"from": 48, "to": 64}], r"finetune.pairs\[0\] uses 48 px, which is not a grid resolution \[16, 32, 64\]: list pairs"),
    ([{"from": 32, "to": 32}], r"finetune.pairs\[0\] goes from 32 px to itself"),
    ([{"from": 16, "to": 32}, {"from": 16, "to": 32}], r"finetune.pairs lists a pair more than once"),
    ([{"from": 16}], r"missing key 'finetune.pairs\[0\].to'"),
    ([{"from": 16, "to": 32, "by": 2}], r"unknown key 'finetune.pairs\[0\].by'"),
    ("all", r"finetune.pairs must be a list or next"),
])
def test_bad_pairs_name_the_key(pairs, message):
    raw = shipped()
    raw["finetune"]["pairs"] = pairs
    with pytest.raises(ParamsError, match=message):
        validate(parse_params(raw))


def test_the_shipped_grid_lists_every_model_pair_and_seed():
    params = load_params(REPO / "params.yaml")
    assert params.grid.finetune == {str(cell): cell for cell in params.finetune_cells}
    assert str(FinetuneCell("tiny_cnn", 16, 32, 0)) == "tiny_cnn-16to32-0"


def test_composition_refuses_a_pair_outside_the_grid_in_one_line(tmp_path):
    folder = shipped_params(tmp_path / "study")
    params = (folder / "params.yaml").read_bytes()
    done = proc([sys.executable, "-m", "tools.compose", "finetune.pairs=[{from:48,to:64}]"], folder, tool_env(PYTHONPATH=str(REPO)))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error: finetune.pairs[0] uses 48 px, which is not a grid resolution [16, 32, 64]: list pairs of grid resolutions, or next")
    assert (folder / "params.yaml").read_bytes() == params


# --- the stage, run as DVC runs it ----------------------------------------------------------------


def finetune_study(path: Path, tiny_synthetic: Path, at_16: Path, weights: bool = True) -> Path:
    """tiny_cnn on a 16 and 32 px grid, both prepared, random weights at 16 when `weights`."""
    cwd = shipped_params(path, {"models": ["tiny_cnn"], "resolutions": [16, 32], "seeds": [0], "finetune.epochs": 1,
                                "train.batch_size": 16})
    shutil.copytree(tiny_synthetic, cwd / "data/prepared/32")
    shutil.copytree(at_16, cwd / "data/prepared/16")
    if weights:
        torch.manual_seed(0)
        save_state_dict(cwd / "models/tiny_cnn/16/0/model.pt", build_model("tiny_cnn", 10).state_dict())
    return cwd


def run_finetune(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.finetune", "tiny_cnn", "16", "32", "0"], cwd=cwd,
                          env=stage_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def at_16(tiny_synthetic, tmp_path_factory):
    from resomap.core.config import DataParams, ImageCounts
    from resomap.prepare.resolution import prepare_resolution

    out = tmp_path_factory.mktemp("prepared") / "16"
    prepare_resolution(DataParams(images=ImageCounts(train=120, val=40, test=40)), 16, out)
    return out


def test_the_stage_tunes_scores_and_writes_evaluates_columns_for_the_same_images(tmp_path, tiny_synthetic, at_16):
    cwd = finetune_study(tmp_path / "study", tiny_synthetic, at_16)
    done = run_finetune(cwd)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((cwd / "metrics/finetune/tiny_cnn/16to32/0/metrics.json").read_text())
    assert (metrics["from_resolution"], metrics["to_resolution"], metrics["layers"], metrics["epochs"]) == (16, 32, "classifier_bn", 1)
    assert 0 <= metrics["accuracy"] <= 1 and "macro_f1" in metrics and "ece" in metrics
    assert (cwd / "models/finetune/tiny_cnn/16to32/0/model.pt").is_file()
    with (cwd / "plots/finetune/tiny_cnn/16to32/0/predictions.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["index", "actual", "predicted", "correct", "confidence"]
    assert [int(row[0]) for row in rows[1:]] == list(range(40))
    assert sum(row[3] == "1" for row in rows[1:]) / 40 == pytest.approx(metrics["accuracy"], abs=1e-6)


def test_missing_source_weights_stop_the_stage_in_one_line_before_any_work(tmp_path, tiny_synthetic, at_16):
    cwd = finetune_study(tmp_path / "study", tiny_synthetic, at_16, weights=False)
    done = run_finetune(cwd)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error: models/tiny_cnn/16/0/model.pt not found: run `dvc repro` (or `dvc checkout models/tiny_cnn/16/0/model.pt`) to make it")
    assert not (cwd / "metrics").exists() and not (cwd / "models/finetune").exists()
