"""The train stage relaunched under torchrun (RESOMAP_NPROC): rank 0 alone writes, results close to one process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helpers.env import REPO, stage_env
from resomap.core.config import DataParams, ImageCounts
from resomap.prepare.resolution import prepare_resolution


def run_train_stage(folder: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stages.train", "simple_cnn", "16", "0"], cwd=folder, env=stage_env(**env), capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def study_folder(tmp_path_factory) -> Path:
    """params.yaml and prepared 16 px data, as the train stage finds them under `dvc repro`."""
    folder = tmp_path_factory.mktemp("cell")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"].update(epochs=4, batch_size=32, warmup_epochs=0)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    prepare_resolution(DataParams(images=ImageCounts(train=320, val=100, test=10)), 16, folder / "data/prepared/16")
    return folder


def outputs(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and "data" not in p.parts}


def test_train_stage_under_torchrun_writes_once_and_stays_close_to_one_process(study_folder, tmp_path):
    """RESOMAP_NPROC=2 relaunches the stage under torchrun (gloo on the CPU): rank 0 alone writes
    the same files as a single process, with metrics close to it (BatchNorm sees half batches)."""
    single, double = tmp_path / "single", tmp_path / "double"
    for folder in (single, double):
        shutil.copytree(study_folder, folder)
    done = run_train_stage(single)
    assert done.returncode == 0, done.stderr
    done = run_train_stage(double, RESOMAP_NPROC="2")
    assert done.returncode == 0, done.stderr
    assert "x 2 processes" in done.stdout and done.stdout.count("train simple_cnn-16-0: best epoch") == 1
    assert outputs(double) == outputs(single)
    metrics = {name: json.loads((folder / "metrics/train/simple_cnn/16/0/metrics.json").read_text()) for name, folder in
               (("single", single), ("double", double))}
    assert metrics["single"]["processes"] == 1 and metrics["double"]["processes"] == 2
    assert metrics["double"]["micro_batch_size"] == 16
    assert metrics["double"]["train"]["loss"] == pytest.approx(metrics["single"]["train"]["loss"], abs=0.1)
    assert metrics["double"]["val"]["accuracy"] == pytest.approx(metrics["single"]["val"]["accuracy"], abs=0.15)
    assert torch.load(double / "models/simple_cnn/16/0/model.pt").keys() == torch.load(single / "models/simple_cnn/16/0/model.pt").keys()


def test_a_bad_process_count_is_one_line(tmp_path):
    """Refused before the data are read: a folder with params.yaml alone will do."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    done = run_train_stage(tmp_path, RESOMAP_NPROC="two")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: RESOMAP_NPROC='two' is not a process count: set it to a positive integer, e.g. the GPU count, or unset it"
    )
