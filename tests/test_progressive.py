"""Progressive resizing (train.progressive): the schedule's sizes, the on-device resize, and a fit
that trains small first and records each epoch's size."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers.env import shipped
from helpers.fitting import run_fit, same_weights
from resomap.core.config import ParamsError, Progressive, TrainParams, parse_params, validate
from resomap.data.prepared import load_prepared
from resomap.train.progressive import epoch_resolution, resize_batch


@pytest.mark.parametrize(
    ("progressive", "full", "expected"),
    [
        # 16 -> 64 over epochs 1..8: 16 + 48 * (e - 1) / 7, rounded to a multiple of 8
        (Progressive(16, 8), 64, [16, 24, 32, 40, 40, 48, 56, 64, 64, 64]),
        # FFCV's ResNet-50 plan scaled: 160 -> 192 by epoch 5
        (Progressive(160, 5), 192, [160, 168, 176, 184, 192, 192]),
        # the cell's resolution need not be a multiple of 8: the ramp ends on it exactly
        (Progressive(16, 4), 60, [16, 32, 48, 60, 60]),
        # end_epoch 1: no ramp at all
        (Progressive(16, 1), 64, [64, 64]),
        (None, 64, [64, 64, 64]),
    ],
)
def test_the_schedule_hits_the_documented_sizes(progressive, full, expected):
    assert [epoch_resolution(progressive, epoch, full) for epoch in range(1, len(expected) + 1)] == expected


def test_the_ramp_never_leaves_its_two_ends():
    """A start that is no multiple of 8 is kept at epoch 1, not rounded below it."""
    sizes = [epoch_resolution(Progressive(12, 6), epoch, 40) for epoch in range(1, 7)]
    assert sizes[0] == 12 and sizes[-1] == 40 and sizes == sorted(sizes)
    assert all(size % 8 == 0 for size in sizes[1:-1])


def test_the_resize_keeps_uint8_and_a_flat_image_flat():
    images = torch.full((2, 3, 32, 32), 77, dtype=torch.uint8)
    small = resize_batch(images, 16)
    assert small.shape == (2, 3, 16, 16) and small.dtype == torch.uint8
    assert bool((small == 77).all())
    assert resize_batch(images, 32) is images


def test_a_progressive_fit_trains_small_first_and_validates_at_full_size(tiny_synthetic):
    data = load_prepared(tiny_synthetic, ("train", "val"))
    train = TrainParams(epochs=4, batch_size=16, lr=0.05, warmup_epochs=0, progressive=Progressive(16, 3))
    result = run_fit(data, train)
    assert [stats.resolution for stats in result.history] == [16, 24, 32, 32]
    again = run_fit(data, train)
    assert same_weights(result.best_state, again.best_state), "bit-reproducible on the CPU"
    plain = run_fit(data, dataclasses.replace(train, progressive=None))
    assert [stats.resolution for stats in plain.history] == [32] * 4
    assert not same_weights(result.best_state, plain.best_state)


@pytest.mark.parametrize(
    ("progressive", "message"),
    [
        ({"start_resolution": 32, "end_epoch": 4}, r"^train.progressive.start_resolution \(32\) is above the cell resolution 16: set"),
        ({"start_resolution": 8, "end_epoch": 99}, r"^train.progressive.end_epoch must be in \[1, train.epochs \(12\)\]"),
        ({"start_resolution": 0, "end_epoch": 4}, r"^train.progressive.start_resolution must be positive"),
    ],
)
def test_bad_progressive_params_are_one_line_errors(progressive, message):
    raw = shipped()
    raw["train"]["progressive"] = progressive
    with pytest.raises(ParamsError, match=message):
        validate(parse_params(raw))
