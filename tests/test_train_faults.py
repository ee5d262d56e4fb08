"""Fault tolerance of the train stage: kill -9 / SIGTERM then resume bit-identically, changed params
start fresh, non-finite loss stops with the epoch and step, out-of-memory backs off the micro-batch."""

from __future__ import annotations

import dataclasses
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
import torch
import yaml

from conftest import REPO, stage_env
from resomap import io, training
from resomap.config import EarlyStopping, TrainParams
from resomap.data.prepared import load_prepared
from resomap.errors import ResoMapError
from resomap.models import build_model
from resomap.training import fit
from study_repo import dvc, make_study_repo, set_params, tool_env

CPU = torch.device("cpu")
CELL = ("tiny_cnn", "32", "0")
STATE = Path(".resomap/resume/tiny_cnn/32/0/state.pt")
TIMINGS = {"epoch_seconds", "images_per_s", "train_seconds"}
EPOCHS = 8


# ---------------------------------------------------------------- in-process: fit(resume=...)


def train_params(**changes) -> TrainParams:
    return dataclasses.replace(TrainParams(epochs=4, batch_size=16, lr=0.05, warmup_epochs=0), **changes)


def run_fit(data, train: TrainParams, **kwargs):
    torch.manual_seed(0)
    return fit(build_model("tiny_cnn", data.num_classes), data, train, seed=0, device=CPU, **kwargs)


def without_timings(history) -> list[dict]:
    return [{k: v for k, v in dataclasses.asdict(s).items() if k not in TIMINGS} for s in history]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "changes",
    [
        {"scheduler": "cosine", "warmup_epochs": 1},
        {"scheduler": "onecycle", "optimizer": "adamw"},
        {"scheduler": "plateau"},
    ],
    ids=["cosine-warmup", "onecycle-adamw", "plateau"],
)
def test_fit_resumed_from_a_saved_epoch_is_bit_identical(tiny_synthetic, tmp_path, changes):
    data = load_prepared(tiny_synthetic, ("train", "val"))
    train = train_params(**changes)
    saved = tmp_path / "state.pt"

    def save_epoch_2(state: dict) -> None:
        if state["epoch"] == 2:
            io.save_state_dict(saved, state)

    full = run_fit(data, train, on_checkpoint=save_epoch_2)
    torch.manual_seed(123)  # the resumed run must not depend on the global RNG it starts with
    resumed = run_fit(data, train, resume=io.load_state_dict(saved))
    assert same_weights(full.best_state, resumed.best_state)
    assert full.best_epoch == resumed.best_epoch
    assert without_timings(full.history) == without_timings(resumed.history)


def test_resume_after_early_stop_trains_no_more(tiny_synthetic, tmp_path):
    data = load_prepared(tiny_synthetic, ("train", "val"))
    train = train_params(epochs=6, early_stopping=EarlyStopping(patience=1, min_delta=10.0))
    saved = tmp_path / "state.pt"
    full = run_fit(data, train, on_checkpoint=lambda state: io.save_state_dict(saved, state))
    assert full.stopped_early and len(full.history) == 2
    resumed = run_fit(data, train, resume=io.load_state_dict(saved))
    assert resumed.stopped_early and len(resumed.history) == 2
    assert same_weights(full.best_state, resumed.best_state)


def test_stop_request_abandons_the_epoch_after_an_optimizer_step(tiny_synthetic):
    data = load_prepared(tiny_synthetic, ("train", "val"))
    epochs_done = []
    with pytest.raises(training.TrainingInterrupted) as stopped:
        run_fit(data, train_params(), on_checkpoint=lambda s: epochs_done.append(s["epoch"]),
                stop_requested=lambda: len(epochs_done) >= 2)
    assert stopped.value.epoch == 3 and epochs_done == [1, 2]


def test_non_finite_loss_names_epoch_and_step(tiny_synthetic, monkeypatch):
    data = load_prepared(tiny_synthetic, ("train", "val"))
    real, calls = training.forward_backward, []

    def nan_at_step_3_of_epoch_2(step, x, y, weight):
        loss, logits = real(step, x, y, weight)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 7 + 3 else loss), logits  # 7 steps per epoch

    monkeypatch.setattr(training, "forward_backward", nan_at_step_3_of_epoch_2)
    with pytest.raises(ResoMapError, match=r"non-finite at epoch 2/4, step 3/7: lower train.lr, or try train.amp"):
        run_fit(data, train_params())


def test_out_of_memory_halves_the_micro_batch_and_keeps_the_effective_batch(tiny_synthetic, monkeypatch):
    data = load_prepared(tiny_synthetic, ("train", "val"))
    train = train_params(epochs=2)
    real, sizes = training.forward_backward, []

    def oom_twice(step, x, y, weight):
        if len(sizes) < 2:
            sizes.append(None)
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        sizes.append(len(x))
        return real(step, x, y, weight)

    monkeypatch.setattr(training, "forward_backward", oom_twice)
    backed_off = run_fit(data, train)
    assert (backed_off.micro_batch_size, backed_off.oom_backoffs) == (4, 2)
    sizes = sizes[2:]
    assert set(sizes) == {4} and len(sizes) == 2 * 7 * 4, "every optimizer step still sees 16 images"
    monkeypatch.setattr(training, "forward_backward", real)
    # the failed batch is replayed with the same random draws: as if run at micro-batch 4 throughout
    planned = run_fit(data, dataclasses.replace(train, grad_accum_steps=4))
    assert same_weights(planned.best_state, backed_off.best_state)
    assert without_timings(planned.history) == without_timings(backed_off.history)


def test_out_of_memory_at_micro_batch_1_is_a_one_line_error(tiny_synthetic, monkeypatch):
    data = load_prepared(tiny_synthetic, ("train", "val"))

    def always_oom(step, x, y, weight):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(training, "forward_backward", always_oom)
    with pytest.raises(ResoMapError, match="out of memory even at micro-batch 1"):
        run_fit(data, train_params(batch_size=4))


# ---------------------------------------------------------------- the real stage, as a subprocess


def make_cell_dir(path: Path, prepared: Path, **train) -> Path:
    """A folder the train stage can run in: params.yaml and data/prepared/32."""
    path.mkdir()
    shutil.copytree(prepared, path / "data/prepared/32")
    write_params(path, **train)
    return path


def write_params(path: Path, **train) -> None:
    """The project's params.yaml, with a one-cell grid and a small, quick train section."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(models=["tiny_cnn"], resolutions=[32], seeds=[0])
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


def test_sigterm_stops_cleanly_with_state_saved_and_the_rerun_resumes(tiny_synthetic, tmp_path, uninterrupted):
    cwd = make_cell_dir(tmp_path / "cell", tiny_synthetic)
    code, _, err = interrupt_after_epoch(cwd, 2, signal.SIGTERM)
    assert code == 2
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
    assert not (cwd / "models").exists()


# ---------------------------------------------------------------- a real `dvc repro`, killed mid-training


@pytest.mark.slow
def test_kill_9_of_dvc_repro_then_repro_resumes(tmp_path):
    repo = make_study_repo(tmp_path / "study")
    set_params(repo, {"resolutions": [16], "train.epochs": 6, "data.size.train": 160})
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
