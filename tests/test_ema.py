"""The weight average (train.ema_decay): a hand-computed EMA over parameters and BatchNorm
buffers, and CPU fits with the whole recipe on (focal, balanced weights, MixUp, CutMix, EMA) that
are bit-identical when rerun and when resumed after epoch 1."""

from __future__ import annotations

import torch
from test_train_faults import KeepEpochs, run_fit, same_weights, train_params, without_timings
from torch import nn

from helpers.recipe import RECIPE
from resomap.core import io
from resomap.data.prepared import load_prepared
from resomap.train.ema import WeightAverage


def test_the_average_matches_a_hand_computed_ema_with_warm_up():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    average = WeightAverage(model, decay=0.5)
    expected = None
    for t in range(4):
        with torch.no_grad():
            model.train()
            model(torch.randn(8, 4))  # moves the BatchNorm running statistics
            model[0].weight.add_(torch.randn(3, 4))
        current = {k: v.clone().float() for k, v in model.state_dict().items() if k.endswith(("weight", "bias", "running_mean", "running_var"))}
        decay = min(0.5, (1 + t) / (10 + t))  # t: updates averaged before this one
        expected = current if expected is None else {k: decay * expected[k] + (1 - decay) * current[k] for k in current}
        average.update()
    averaged = average.module.state_dict()
    assert average.decay_at(1) == 2 / 11 and average.decay_at(100) == 0.5
    for key, value in expected.items():
        torch.testing.assert_close(averaged[key], value, rtol=1e-6, atol=1e-7)
    assert not torch.equal(averaged["1.running_mean"], model.state_dict()["1.running_mean"]), "buffers are averaged, not copied"


def test_a_fit_with_the_recipe_on_is_bit_reproducible_and_keeps_the_average(tiny_synthetic, tmp_path):
    data = load_prepared(tiny_synthetic, ("train", "val"))
    train = train_params(epochs=3, **RECIPE)
    first = run_fit(data, train, checkpointer=KeepEpochs(tmp_path, epochs=(1, 2, 3)))
    second = run_fit(data, train)
    assert same_weights(first.best_state, second.best_state)
    assert without_timings(first.history) == without_timings(second.history)
    best = io.load_state_dict(tmp_path / f"epoch_{first.best_epoch}.pt")
    assert same_weights(first.best_state, {k.removeprefix("module."): v for k, v in best["ema"].items() if k != "n_averaged"})
    assert first.best_state.keys() == best["model"].keys(), "evaluate and explain load the average as they load a model"
    assert not same_weights(first.best_state, best["model"]), "model.pt holds the average, not the last weights"
    plain = run_fit(data, train_params(epochs=3, **{**RECIPE, "ema_decay": None, "mixup_alpha": 0.0, "cutmix_alpha": 0.0}))
    assert not same_weights(first.best_state, plain.best_state), "the recipe must change training"


def test_a_fit_resumed_after_epoch_1_with_the_recipe_on_is_bit_identical(tiny_synthetic, tmp_path):
    data = load_prepared(tiny_synthetic, ("train", "val"))
    train = train_params(epochs=3, **RECIPE)
    full = run_fit(data, train, checkpointer=KeepEpochs(tmp_path, epochs=(1,)))
    torch.manual_seed(123)  # the resumed run must not depend on the global generator
    resumed = run_fit(data, train, checkpointer=KeepEpochs(resumed=io.load_state_dict(tmp_path / "epoch_1.pt")))
    assert same_weights(full.best_state, resumed.best_state)
    assert full.best_epoch == resumed.best_epoch
    assert without_timings(full.history) == without_timings(resumed.history)
