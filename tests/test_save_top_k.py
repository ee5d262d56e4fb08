"""train.save_top_k: the k best epochs' weights, ranked by the monitored metric, named by epoch and value."""

from __future__ import annotations

import pytest
import torch

from helpers.fitting import run_fit, same_weights
from resomap.core.config import EarlyStopping, TrainParams
from resomap.data.prepared import load_prepared
from resomap.train.records import KeptEpoch, keep_top, kept_file_name


def kept(epoch: int, value: float) -> KeptEpoch:
    return KeptEpoch(epoch, value, {"w": torch.tensor(float(epoch))})


@pytest.mark.parametrize(
    ("monitor", "values", "expected"),
    [
        ("val_accuracy", [0.2, 0.5, 0.4, 0.5, 0.1], [2, 4, 3]),  # highest first, a tie goes to the earlier epoch
        ("val_loss", [2.0, 1.0, 1.5, 0.9, 3.0], [4, 2, 3]),  # lowest first
    ],
)
def test_keep_top_ranks_by_the_monitored_metric(monitor, values, expected):
    top: list[KeptEpoch] = []
    for epoch, value in enumerate(values, start=1):
        top = keep_top(top, kept(epoch, value), 3, monitor)
    assert [k.epoch for k in top] == expected


def test_the_file_name_says_epoch_and_value():
    assert kept_file_name(kept(7, 0.64), "val_accuracy") == "epoch=07-val_accuracy=0.6400.pt"


@pytest.mark.parametrize("monitor", ["val_accuracy", "val_loss"])
def test_a_fit_keeps_the_k_best_epochs_weights(tiny_synthetic, monitor):
    data = load_prepared(tiny_synthetic, ("train", "val"))
    train = TrainParams(epochs=5, batch_size=16, lr=0.05, warmup_epochs=0, save_top_k=3,
                        early_stopping=EarlyStopping(monitor=monitor))
    result = run_fit(data, train)
    values = [stats.monitored(monitor) for stats in result.history]
    ranked = sorted(range(1, 6), key=lambda e: (values[e - 1] if monitor == "val_loss" else -values[e - 1], e))
    assert [k.epoch for k in result.top] == ranked[:3]
    assert [k.value for k in result.top] == [values[e - 1] for e in ranked[:3]]
    assert result.top[0].epoch == result.best_epoch and same_weights(result.top[0].state, result.best_state)
    assert not same_weights(result.top[0].state, result.top[1].state), "each kept epoch has its own weights"


def test_save_top_k_1_keeps_no_extra_weights(tiny_synthetic):
    data = load_prepared(tiny_synthetic, ("train", "val"))
    assert run_fit(data, TrainParams(epochs=2, batch_size=16, warmup_epochs=0)).top == []
