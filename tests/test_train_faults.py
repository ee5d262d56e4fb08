"""Fault tolerance of the train stage: kill -9 / SIGTERM then resume bit-identically, changed params
start fresh, non-finite loss stops with the epoch and step, out-of-memory backs off the micro-batch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from helpers.fitting import run_fit, same_weights, without_timings
from helpers.recipe import RECIPE
from resomap.core import io
from resomap.core.config import EarlyStopping, Progressive, TrainParams
from resomap.core.errors import ResoMapError
from resomap.core.grid import Cell
from resomap.data.prepared import load_prepared
from resomap.train import step as training
from resomap.train.checkpoint import Checkpointer, ResumeStore, resume_key

# ---------------------------------------------------------------- in-process: fit(checkpointer=...)


def train_params(**changes) -> TrainParams:
    return dataclasses.replace(TrainParams(epochs=4, batch_size=16, lr=0.05, warmup_epochs=0), **changes)


class KeepEpochs(Checkpointer):
    """Saves the states of the epochs asked for, to `folder`; resumes from `resumed`."""

    def __init__(self, folder: Path | None = None, epochs: tuple[int, ...] = (), resumed: dict | None = None):
        super().__init__(resumed)
        self.folder, self.epochs, self.saved = folder, epochs, []

    def save(self, state: dict) -> None:
        self.saved.append(state["epoch"])
        if state["epoch"] in self.epochs:
            io.save_state_dict(self.folder / f"epoch_{state['epoch']}.pt", state)


@pytest.mark.parametrize(
    "changes",
    [
        {"scheduler": "cosine", "warmup_epochs": 1},
        {"scheduler": "onecycle", "optimizer": "adamw"},
        {"scheduler": "plateau"},
        {"progressive": Progressive(start_resolution=16, end_epoch=3), "save_top_k": 2},
    ],
    ids=["cosine-warmup", "onecycle-adamw", "plateau", "progressive-top2"],
)
def test_fit_resumed_from_a_saved_epoch_is_bit_identical(tiny_synthetic, tmp_path, changes):
    data = load_prepared(tiny_synthetic, ("train", "val"))
    train = train_params(**changes)
    full = run_fit(data, train, checkpointer=KeepEpochs(tmp_path, epochs=(2,)))
    torch.manual_seed(123)  # the resumed run must not depend on the global RNG it starts with
    resumed = run_fit(data, train, checkpointer=KeepEpochs(resumed=io.load_state_dict(tmp_path / "epoch_2.pt")))
    assert same_weights(full.best_state, resumed.best_state)
    assert full.best_epoch == resumed.best_epoch
    assert without_timings(full.history) == without_timings(resumed.history)
    assert [kept.epoch for kept in full.top] == [kept.epoch for kept in resumed.top]
    assert all(same_weights(a.state, b.state) for a, b in zip(full.top, resumed.top, strict=True))


def test_resume_after_early_stop_trains_no_more(tiny_synthetic, tmp_path):
    data = load_prepared(tiny_synthetic, ("train", "val"))
    train = train_params(epochs=6, early_stopping=EarlyStopping(patience=1, min_delta=10.0))
    full = run_fit(data, train, checkpointer=KeepEpochs(tmp_path, epochs=(2,)))
    assert full.stopped_early and len(full.history) == 2
    resumed = run_fit(data, train, checkpointer=KeepEpochs(resumed=io.load_state_dict(tmp_path / "epoch_2.pt")))
    assert resumed.stopped_early and len(resumed.history) == 2
    assert same_weights(full.best_state, resumed.best_state)


def test_stop_request_abandons_the_epoch_after_an_optimizer_step(tiny_synthetic):
    data = load_prepared(tiny_synthetic, ("train", "val"))
    checkpoints = KeepEpochs()
    with pytest.raises(training.TrainingInterrupted) as stopped:
        run_fit(data, train_params(), checkpointer=checkpoints, stop_requested=lambda: len(checkpoints.saved) >= 2)
    assert stopped.value.epoch == 3 and checkpoints.saved == [1, 2]


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


@pytest.mark.parametrize("changes", [{}, RECIPE], ids=["plain", "focal-mixup-cutmix-ema"])
def test_out_of_memory_halves_the_micro_batch_and_keeps_the_effective_batch(tiny_synthetic, monkeypatch, changes):
    """A mixed batch too: the mix is drawn per batch and each image's partner rows travel with it."""
    data = load_prepared(tiny_synthetic, ("train", "val"))
    train = train_params(epochs=2, **changes)
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


def test_a_state_saved_under_another_autocast_dtype_is_not_resumed(tiny_synthetic, tmp_path, monkeypatch, capsys):
    """train.amp: auto is bf16 on a GPU that has it and fp16 on one that has not: same params, same
    device type, different numerics, so the resume key tells them apart."""
    data = load_prepared(tiny_synthetic, ("train", "val"))
    cell, train, gpu = Cell("tiny_cnn", 32, 0), train_params(amp="auto"), torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *args, **kwargs: (9, 0))  # the key records TF32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    bf16 = resume_key(cell, train, data, gpu)
    ResumeStore(cell, bf16, tmp_path).save({"epoch": 1})
    assert ResumeStore(cell, bf16, tmp_path).resumed["epoch"] == 1
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    fp16 = resume_key(cell, train, data, gpu)
    assert {part for part in bf16 if bf16[part] != fp16[part]} == {"autocast"}
    assert ResumeStore(cell, fp16, tmp_path).resumed is None
    assert "ignoring resume state for train tiny_cnn-32-0 (autocast changed); training from scratch" in capsys.readouterr().out
