"""train.micro_batch_size: auto: the largest micro-batch that fits, found by probing.  Out of memory
is injected where the probe's forward and backward run (as the back-off tests do), so the search
is tested on the CPU; on the CPU itself there is nothing to probe."""

from __future__ import annotations

import pytest
import torch

from helpers.env import shipped
from helpers.fitting import CPU, run_fit, same_weights
from resomap.core.config import ParamsError, TrainParams, parse_params, validate
from resomap.data.placement import training_memory
from resomap.data.prepared import load_prepared
from resomap.models.registry import build_model
from resomap.train import step as training
from resomap.train.losses import class_counts
from resomap.train.micro_batch import probe_micro_batch


def probe_with_memory_for(limit: int, tiny_synthetic, monkeypatch) -> tuple[int, list[int], dict, dict]:
    """Probe with out-of-memory above `limit` images; returns the probed size, the sizes tried and
    the model's state before and after."""
    data = load_prepared(tiny_synthetic, ("train", "val"))
    train = TrainParams(batch_size=32, micro_batch_size="auto", warmup_epochs=0)
    torch.manual_seed(0)
    model = build_model("tiny_cnn", data.num_classes)
    split = training_memory(data.splits["train"], CPU)
    step = training.make_train_step(model, train, CPU, len(split), class_counts=class_counts(split.labels, data.num_classes))
    real, tried = training.forward_backward, []

    def limited(step, x, y, weight):
        tried.append(len(x))
        if len(x) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(step, x, y, weight)

    monkeypatch.setattr(training, "forward_backward", limited)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    return probe_micro_batch(step, model, split), tried, before, model.state_dict()


@pytest.mark.parametrize(("limit", "expected"), [(32, 32), (100, 32), (11, 11), (16, 16), (1, 1)])
def test_the_probe_finds_the_largest_micro_batch_that_fits(tiny_synthetic, monkeypatch, limit, expected):
    probed, tried, _, _ = probe_with_memory_for(limit, tiny_synthetic, monkeypatch)
    assert probed == expected
    assert len(tried) <= 2 * 6, "halving then a binary search: logarithmic in the batch"


def test_the_probe_leaves_no_trace(tiny_synthetic, monkeypatch):
    rng = torch.get_rng_state()
    _, _, before, after = probe_with_memory_for(11, tiny_synthetic, monkeypatch)
    assert same_weights(before, after), "weights and BatchNorm statistics restored"
    assert torch.equal(rng, torch.get_rng_state())


def test_on_the_cpu_auto_trains_as_the_whole_batch(tiny_synthetic):
    data = load_prepared(tiny_synthetic, ("train", "val"))
    plain = TrainParams(epochs=2, batch_size=16, warmup_epochs=0)
    auto = run_fit(data, TrainParams(epochs=2, batch_size=16, warmup_epochs=0, micro_batch_size="auto"))
    assert auto.micro_batch_size == 16
    assert same_weights(auto.best_state, run_fit(data, plain).best_state)


def test_auto_with_gradient_accumulation_set_is_a_one_line_error():
    raw = shipped()
    raw["train"].update(micro_batch_size="auto", grad_accum_steps=2)
    with pytest.raises(ParamsError, match=r"^train.micro_batch_size: auto chooses the accumulation itself: set train.grad_accum_steps to 1"):
        validate(parse_params(raw))
