import copy
import dataclasses
import math

import pytest
import torch
from torch import nn

from helpers.recipe import RECIPE
from resomap.core.config import TrainParams
from resomap.data.prepared import PreparedData, Split, load_prepared
from resomap.models.registry import build_model
from resomap.optim.optimizers import optimizer_for
from resomap.optim.schedules import LRSchedule
from resomap.train.fit import EarlyStopper, compile_now, fit
from resomap.train.step import make_train_step

CPU = torch.device("cpu")


def train_params(**changes) -> TrainParams:
    return dataclasses.replace(TrainParams(epochs=3, batch_size=32, lr=0.05, warmup_epochs=0), **changes)


def state_of(model_name: str, data: PreparedData, train: TrainParams, seed: int = 0):
    torch.manual_seed(seed)
    result = fit(build_model(model_name, data.num_classes), data, train, seed=seed, device=CPU)
    return result


def test_cpu_training_is_bit_reproducible(tiny_synthetic):
    data = load_prepared(tiny_synthetic)
    a = state_of("tiny_cnn", data, train_params(epochs=2))
    b = state_of("tiny_cnn", data, train_params(epochs=2))
    assert a.history[-1].train_loss == b.history[-1].train_loss
    assert all(torch.equal(a.best_state[k], b.best_state[k]) for k in a.best_state)
    assert a.compile_seconds is None  # not compiled: no compile time to report
    c = state_of("tiny_cnn", data, train_params(epochs=2), seed=1)
    assert not all(torch.equal(a.best_state[k], c.best_state[k]) for k in a.best_state)


def test_training_learns_the_synthetic_classes(tiny_synthetic):
    data = load_prepared(tiny_synthetic)
    result = state_of("simple_cnn", data, train_params(epochs=6, lr=0.05, batch_size=16))
    first, last = result.history[0], result.history[-1]
    assert last.train_loss < first.train_loss - 0.2
    assert last.train_accuracy > 0.2, "10 classes: chance is 0.1"


def test_best_checkpoint_is_the_best_monitored_epoch(tiny_synthetic):
    data = load_prepared(tiny_synthetic)
    result = state_of("tiny_cnn", data, train_params(epochs=4))
    accuracies = [s.val_accuracy for s in result.history]
    assert result.best_epoch == accuracies.index(max(accuracies)) + 1


def test_early_stopping_stops_after_patience():
    stopper = EarlyStopper("val_loss", patience=2, min_delta=0.01)
    assert stopper.update(1.0) and not stopper.should_stop
    assert not stopper.update(0.995)  # within min_delta: no improvement
    assert not stopper.should_stop
    assert not stopper.update(1.2)
    assert stopper.should_stop


def linear_data(n: int = 64) -> PreparedData:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 4, 4), dtype=torch.uint8, generator=generator)
    labels = (images[:, 0, 0, 0] > 127).long()
    split = Split(images, labels, None)
    return PreparedData(["dark", "light"], 4, {"train": split, "val": split})


@pytest.mark.parametrize("accum", [2, 4])
@pytest.mark.parametrize("recipe", [{}, RECIPE], ids=["plain", "focal-mixup-cutmix-ema"])
def test_gradient_accumulation_matches_the_full_batch(accum, recipe):
    """Without batch norm, accumulating micro-batches must give the full batch's update; with
    MixUp/CutMix too, since each image's partner is chosen in the whole batch, not the micro-batch."""
    data = linear_data()
    augment = dataclasses.replace(TrainParams().augment, hflip=False, crop_padding=0.0)
    plain = dict(batch_size=32, epochs=2, scheduler="none", augment=augment, **recipe)
    results = []
    for steps in (1, accum):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
        results.append(fit(model, data, train_params(grad_accum_steps=steps, **plain), seed=0, device=CPU).best_state)
    for key in results[0]:
        torch.testing.assert_close(results[0][key], results[1][key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["cosine", "step", "multistep", "exponential", "plateau", "onecycle", "none"])
def test_every_scheduler_steps_through_training(name):
    train = train_params(scheduler=name, epochs=6, warmup_epochs=1 if name in ("cosine", "step") else 0)
    model = nn.Linear(2, 2)
    optimizer = optimizer_for(model, train, CPU)
    schedule = LRSchedule(optimizer, train, steps_per_epoch=5)
    lrs = []
    for _ in range(train.epochs):
        lrs.append(schedule.lr)
        for _ in range(5):
            optimizer.step()
            schedule.after_optimizer_step()
        schedule.after_epoch(0.5)
    assert all(lr > 0 for lr in lrs)
    if name == "none":
        assert lrs == [train.lr] * 6
    else:
        assert len(set(lrs)) > 1, f"{name} should change the learning rate"
    if name == "cosine":
        assert lrs[0] < lrs[1], "warm-up starts below the base lr"


def test_optimizer_skips_weight_decay_on_norms_and_biases():
    model = build_model("tiny_cnn", 3)
    optimizer = optimizer_for(model, train_params(optimizer="adamw", weight_decay=0.1), CPU)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim <= 1 for p in plain["params"])


def test_compiling_ahead_of_training_leaves_no_trace(tiny_synthetic):
    """compile_now runs one forward/backward to trigger compilation, then undoes it: weights,
    BatchNorm statistics, gradients and the random state are as before."""
    data = load_prepared(tiny_synthetic)
    torch.manual_seed(0)
    model = build_model("simple_cnn", data.num_classes)
    step = make_train_step(model, train_params(), CPU, len(data.splits["train"]))
    before, rng = copy.deepcopy(model.state_dict()), torch.get_rng_state()
    assert compile_now(step, model, data.splits["train"]) > 0
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


def test_compiling_ahead_of_training_compiles_every_graph_the_fit_runs(tiny_synthetic, monkeypatch):
    """After compile_now nothing recompiles: not validation (eval mode under no_grad), not a short
    last micro-batch, not an out-of-memory back-off to a smaller one.  Dynamo's own tracing with a
    backend that counts the graphs (no inductor: fast on the CPU)."""
    import torch._dynamo

    from resomap.train import fit as fitting
    from resomap.train import step as training

    graphs, real_compile, real_compile_now, real_step = [], torch.compile, fitting.compile_now, training.forward_backward
    after_compile_now = []

    def counting_backend(graph, example_inputs):
        graphs.append(torch.is_grad_enabled())
        return graph.forward

    def compile_now(*args):
        seconds = real_compile_now(*args)
        after_compile_now.append(list(graphs))
        return seconds

    def oom_once(step, x, y, weight):
        if after_compile_now and not oom_once.raised:  # in training, once compile_now is done
            oom_once.raised = True
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real_step(step, x, y, weight)

    oom_once.raised = False
    monkeypatch.setattr(torch, "compile", lambda model: real_compile(model, backend=counting_backend))
    monkeypatch.setattr(fitting, "compile_now", compile_now)
    monkeypatch.setattr(training, "forward_backward", oom_once)
    torch._dynamo.reset()
    try:
        # 120 images, batches of 32 in micro-batches of 10 (the last 2), then 5 after the back-off
        result = state_of("tiny_cnn", load_prepared(tiny_synthetic), train_params(epochs=2, grad_accum_steps=3, compile=True))
    finally:
        torch._dynamo.reset()
    assert (result.micro_batch_size, result.oom_backoffs) == (5, 1)
    assert set(after_compile_now[0]) == {True, False}, "compile_now compiles the training and the validation graph"
    assert graphs == after_compile_now[0], "recompiled after compile_now"


@pytest.mark.slow
def test_compiled_training_reports_its_compile_time_apart(tiny_synthetic):
    """train.compile: torch.compile (inductor, here on the CPU) runs the same loop; the compile
    time is measured before epoch 1 and reported on its own."""
    data = load_prepared(tiny_synthetic)
    result = state_of("tiny_cnn", data, train_params(epochs=1, compile=True))
    assert result.compile_seconds is not None and result.compile_seconds > 0
    assert math.isfinite(result.history[0].train_loss)
