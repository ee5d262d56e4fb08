"""The real train stage killed or stopped mid-training, as a subprocess and under `dvc repro`: the rerun
resumes and matches an uninterrupted run bit for bit; changed params start fresh."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers.env import REPO, stage_env
from helpers.study_repo import dvc, make_study_repo, set_params, tool_env
from resomap.core import io
from resomap.core.config import DataParams, ImageCounts
from resomap.prepare.resolution import prepare_resolution

CELL = ("tiny_cnn", "32", "0")
STATE = Path(".resomap/resume/tiny_cnn/32/0/state.pt")
TIMINGS = {"epoch_seconds", "images_per_s", "train_seconds"}
EPOCHS = 8


# ---------------------------------------------------------------- the real stage, as a subprocess


def make_cell_dir(path: Path, prepared: Path, data: dict | None = None, **train) -> Path:
    """A folder the train stage can run in: params.yaml and data/prepared/32."""
    path.mkdir()
    shutil.copytree(prepared, path / "data/prepared/32")
    write_params(path, data, **train)
    return path


def write_params(path: Path, data: dict | None = None, **train) -> None:
    """The project's params.yaml, with a one-cell grid, a small, quick train section and `data`."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(models=["tiny_cnn"], resolutions=[32], seeds=[0])
    params["data"].update(data or {})
    params["train"].update({"epochs": EPOCHS, "batch_size": 16, "warmup_epochs": 1, **train})
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def start(cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "stages.train", *CELL], cwd=cwd, env=stage_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def run_stage(cwd: Path) -> subprocess.CompletedProcess:
    proc = start(cwd)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def interrupt_after_epoch(cwd: Path, epoch: int, sig: int) -> tuple[int, str, str]:
    """Start the stage, send `sig` once it has printed epoch `epoch`; (returncode, stdout, stderr)."""
    proc = start(cwd)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(f"epoch {epoch}/"):
            proc.send_signal(sig)
            break
    out, err = proc.communicate(timeout=120)
    return proc.returncode, "".join(lines) + out, err


def outputs(cwd: Path) -> dict:
    """What must match an uninterrupted run: weights' bytes, metrics and curves less wall-clock timings."""
    live = cwd / "metrics/train/tiny_cnn/32/0"
    metrics = json.loads((live / "metrics.json").read_text())
    curves = {}
    for tsv in sorted((live / "plots/metrics").rglob("*.tsv")):
        rows = tsv.read_text().splitlines()
        name = str(tsv.relative_to(live))
        curves[name] = rows if tsv.stem not in TIMINGS else [row.split("\t")[0] for row in rows]
    return {
        "model.pt": hashlib.md5((cwd / "models/tiny_cnn/32/0/model.pt").read_bytes()).hexdigest(),
        "weights": {path.name: hashlib.md5(path.read_bytes()).hexdigest() for path in (cwd / "models/tiny_cnn/32/0").iterdir()},
        "lr_range_test.csv": (live / "lr_range_test.csv").read_text(),
        "metrics.json": {k: v for k, v in metrics.items() if k not in TIMINGS},
        "curves": curves,
    }


@pytest.fixture(scope="module")
def uninterrupted(tiny_synthetic, tmp_path_factory) -> dict:
    cwd = make_cell_dir(tmp_path_factory.mktemp("clean") / "cell", tiny_synthetic)
    done = run_stage(cwd)
    assert done.returncode == 0, done.stderr
    assert "resumed" not in done.stdout and not (cwd / STATE).exists()
    return outputs(cwd)


def test_kill_9_then_rerun_resumes_and_matches_an_uninterrupted_run(tiny_synthetic, tmp_path, uninterrupted):
    cwd = make_cell_dir(tmp_path / "cell", tiny_synthetic)
    code, out, _ = interrupt_after_epoch(cwd, 3, signal.SIGKILL)
    assert code == -signal.SIGKILL and (cwd / STATE).is_file()
    assert not (cwd / "models/tiny_cnn/32/0/model.pt").exists()
    saved = io.load_state_dict(cwd / STATE)["epoch"]
    assert 2 <= saved < EPOCHS
    done = run_stage(cwd)
    assert done.returncode == 0, done.stderr
    assert f"resumed train tiny_cnn-32-0 from epoch {saved}/{EPOCHS}" in done.stdout
    epochs_run = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("epoch ")]
    assert epochs_run == [f"{epoch}/{EPOCHS}" for epoch in range(saved + 1, EPOCHS + 1)]
    assert outputs(cwd) == uninterrupted
    assert not (cwd / STATE).exists(), "resume state is removed once the cell has finished"


def test_kill_9_with_the_strong_recipe_on_resumes_bit_identically(tiny_synthetic, tmp_path_factory):
    """EMA, MixUp/CutMix, focal loss, balanced weights and a per-image policy keep state and draws
    that a resume must restore exactly: the weight average, the generator behind every draw."""
    augment = {**yaml.safe_load((REPO / "params.yaml").read_text())["train"]["augment"], "policy": "randaugment", "random_erasing": 0.25}
    recipe = {"loss": "focal", "class_weights": "balanced", "mixup_alpha": 0.2, "cutmix_alpha": 1.0, "ema_decay": 0.9, "augment": augment}
    clean = make_cell_dir(tmp_path_factory.mktemp("recipe_clean") / "cell", tiny_synthetic, **recipe)
    assert run_stage(clean).returncode == 0
    cwd = make_cell_dir(tmp_path_factory.mktemp("recipe_killed") / "cell", tiny_synthetic, **recipe)
    code, _, _ = interrupt_after_epoch(cwd, 3, signal.SIGKILL)
    assert code == -signal.SIGKILL and io.load_state_dict(cwd / STATE)["ema"] is not None
    done = run_stage(cwd)
    assert done.returncode == 0 and "resumed train tiny_cnn-32-0 from epoch" in done.stdout, done.stderr
    assert outputs(cwd) == outputs(clean)


def test_kill_9_in_the_pseudo_labelling_phase_resumes_bit_identically(tmp_path_factory):
    """The ImageNet plan's schedule and the pseudo-labelling phase: killed in the phase, the rerun
    resumes the main fit at its end (the LR range test found the same rate), labels the pool the
    same way and resumes the phase; the weights, top-k files, curves and metrics all match."""
    prepared = tmp_path_factory.mktemp("pooled") / "32"
    prepare_resolution(DataParams(images=ImageCounts(train=120, val=40, test=40, unlabeled=60)), 32, prepared)
    recipe = {"epochs": 3, "warmup_epochs": 0, "lr": "auto", "progressive": {"start_resolution": 16, "end_epoch": 2},
              "save_top_k": 2, "ema_decay": 0.9, "pseudo_label": {"threshold": 0.1, "epochs": 4, "lr_factor": 0.1}}
    pool = {"images": {"train": 120, "val": 40, "test": 40, "unlabeled": 60}}
    clean = make_cell_dir(tmp_path_factory.mktemp("pseudo_clean") / "cell", prepared, pool, **recipe)
    done = run_stage(clean)
    assert done.returncode == 0 and "pseudo-labels: kept" in done.stdout, done.stderr
    cwd = make_cell_dir(tmp_path_factory.mktemp("pseudo_killed") / "cell", prepared, pool, **recipe)
    code, _, _ = interrupt_after_epoch(cwd, 5, signal.SIGKILL)  # the phase's second epoch of four
    assert code == -signal.SIGKILL and list((cwd / ".resomap/resume/pseudo_label").rglob("state.pt"))
    done = run_stage(cwd)
    assert done.returncode == 0, done.stderr
    assert "resumed train tiny_cnn-32-0 from epoch 3/3" in done.stdout
    first = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("epoch ")][0]
    assert first in ("5/7", "6/7"), f"the phase resumed after its saved epochs, not from its start (4/7): {first}"
    assert outputs(cwd) == outputs(clean)
    assert len(outputs(cwd)["weights"]) == 3, "model.pt and the two best epochs"
    assert not (cwd / ".resomap/resume").exists() or not list((cwd / ".resomap/resume").rglob("state.pt"))


def test_sigterm_stops_cleanly_with_state_saved_and_the_rerun_resumes(tiny_synthetic, tmp_path, uninterrupted):
    cwd = make_cell_dir(tmp_path / "cell", tiny_synthetic)
    code, _, err = interrupt_after_epoch(cwd, 2, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: train tiny_cnn-32-0 stopped by SIGTERM during epoch ")
    assert "run `dvc repro` again to resume" in message and "Traceback" not in err
    assert io.load_state_dict(cwd / STATE)["epoch"] >= 2
    assert not (cwd / "models/tiny_cnn/32/0/model.pt").exists()
    done = run_stage(cwd)
    assert done.returncode == 0 and "resumed train tiny_cnn-32-0 from epoch" in done.stdout
    assert outputs(cwd) == uninterrupted


def test_changed_train_params_ignore_the_resume_state(tiny_synthetic, tmp_path, uninterrupted):
    cwd = make_cell_dir(tmp_path / "cell", tiny_synthetic)
    code, _, _ = interrupt_after_epoch(cwd, 2, signal.SIGKILL)
    assert code == -signal.SIGKILL and (cwd / STATE).is_file()
    write_params(cwd, lr=0.02)
    done = run_stage(cwd)
    assert done.returncode == 0, done.stderr
    assert "ignoring resume state for train tiny_cnn-32-0 (train params changed); training from scratch" in done.stdout
    assert "resumed" not in done.stdout and f"epoch 1/{EPOCHS}" in done.stdout
    assert outputs(cwd)["model.pt"] != uninterrupted["model.pt"]


def test_huge_lr_stops_with_a_one_line_error_and_writes_no_weights(tiny_synthetic, tmp_path):
    cwd = make_cell_dir(tmp_path / "cell", tiny_synthetic, lr=1e6, epochs=2)
    done = run_stage(cwd)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: training loss became non-finite at epoch 1/2, step "), done.stderr
    assert last.endswith("lower train.lr, or try train.amp: bf16 / off")
    assert not list((cwd / "models").rglob("*.pt"))


# ---------------------------------------------------------------- a real `dvc repro`, killed mid-training


def test_kill_9_of_dvc_repro_then_repro_resumes(tmp_path):
    repo = make_study_repo(tmp_path / "study")
    set_params(repo, {"resolutions": [16], "train.epochs": 6, "data.images.train": 160})
    env = tool_env(CUDA_VISIBLE_DEVICES="")  # every run on the CPU: the resume key holds the device
    dvc(repo, "repro", "prepare@16", env=env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "train@tiny_cnn-16-0"], cwd=repo, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    state = repo / ".resomap/resume/tiny_cnn/16/0/state.pt"
    deadline = time.monotonic() + 120
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state.exists(), proc.communicate()[0] if proc.poll() is not None else "no resume state in 120 s"
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage it runs, like kill -9 of the whole job
    proc.wait()
    out = dvc(repo, "repro", "train@tiny_cnn-16-0", env=env)
    assert "resumed train tiny_cnn-16-0 from epoch" in out
    assert not state.exists()
    assert "train@tiny_cnn-16-0" not in dvc(repo, "status", env=env)
