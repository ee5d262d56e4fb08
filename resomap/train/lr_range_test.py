"""Smith's LR range test, for train.lr: auto: train a copy of the model for a few optimizer steps
while the learning rate grows exponentially, and read a learning rate off the loss curve.

The ramp runs from train.lr_range.start to train.lr_range.end over at most train.lr_range.steps
optimizer steps on the cell's own train split (a fresh seeded order whenever the split runs out),
with the real run's step: its augmentation, loss, class weights, mixing and AMP
(`resomap/train/step.py`). The loss is smoothed as fastai does (an exponential moving average,
beta 0.98, bias-corrected), and the test stops once the smoothed loss exceeds 4 times its minimum
or the loss is not finite.

The rule, `lr_min` (fastai's `minimum` suggestion): the learning rate at the lowest smoothed loss,
divided by 10, a step back from where the loss is about to blow up; as in fastai's `lr_find`, the
first 10% of the ramp is left out of the search (the average is still settling there). Where the
test stopped within those 10%, or the loss only rose after them, the ramp started too high, and
the test stops with an error rather than guess.

Nothing leaks into the real run: the test trains a deep copy of the model with its own optimizer
and its own generator seeded from the cell's seed, and torch's global random state is restored.
Under DDP each rank trains on its shard of every batch as the fit does, and the batch loss is
summed over the ranks at every step, so every rank sees the same curve, stops at the same step and
finds the same learning rate.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from resomap.core import io
from resomap.core.config import LRRange, Params, TrainParams
from resomap.core.device import memory_format
from resomap.core.errors import ResoMapError
from resomap.core.grid import Cell, train_metrics_dir
from resomap.data.placement import training_memory
from resomap.data.prepared import PreparedData
from resomap.train.distributed import Ranks
from resomap.train.losses import class_counts
from resomap.train.step import make_train_step, train_batch

RULE = "lr_min"  # the learning rate at the lowest smoothed loss / 10 (fastai's `minimum`)
BETA = 0.98  # fastai's smoothing of the loss
DIVERGED = 4.0  # the test stops once the smoothed loss exceeds this many times its minimum
CURVE_FILE = "lr_range_test.csv"  # in the cell's train metrics folder: a DVC plot of the train stage
CURVE_FIELDS = ("step", "lr", "loss", "smoothed_loss")


@dataclass(frozen=True)
class LRRangeResult:
    lr_found: float
    rows: list[dict]  # one per optimizer step: CURVE_FIELDS
    rule: str = RULE


def find_lr(
    model: nn.Module, data: PreparedData, train: TrainParams, *, seed: int, device: torch.device, ranks: Ranks = Ranks()
) -> LRRangeResult:
    """The learning rate the range test finds for `model` (left untouched) on data's train split."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        rows = _ramp(copy.deepcopy(model), data, train, seed, device, ranks)
    return LRRangeResult(_lr_min(rows, train.lr_range), rows)


def summary(result: LRRangeResult | None) -> dict:
    """The train metrics' keys: null when train.lr is a number, so every cell has the same keys."""
    return {"lr_found": result.lr_found if result else None, "lr_rule": result.rule if result else None}


def write_curve(path: Path, rows: list[dict]) -> None:
    """The curve as CSV. With no rows (train.lr is a number) the header alone: DVC needs every
    declared output to exist, and `dvc plots show` shows nothing for it."""
    with io.atomic_open(path) as f:
        writer = csv.DictWriter(f, CURVE_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _ramp(trial: nn.Module, data: PreparedData, train: TrainParams, seed: int, device: torch.device, ranks: Ranks) -> list[dict]:
    """Train `trial` along the ramp; a row per step until the end or the loss blows up."""
    lr_range = train.lr_range
    fixed = dataclasses.replace(train, lr=lr_range.start, scheduler="none", warmup_epochs=0, ema_decay=None, compile=False)
    trial = trial.to(device, memory_format=memory_format(train.channels_last))
    split = training_memory(data.splits["train"], device)
    step = make_train_step(trial, fixed, device, len(split), ranks=ranks,
                           class_counts=class_counts(data.splits["train"].labels, data.num_classes))
    step.model.train()
    generator = torch.Generator().manual_seed(seed)
    batch_size = min(train.batch_size, len(split))
    rows, average, lowest = [], 0.0, math.inf
    for index, ids in enumerate(itertools.islice(_batches(len(split), batch_size, generator), lr_range.steps)):
        lr = _ramp_lr(lr_range, index)
        for group in step.optimizer.param_groups:
            group["lr"] = lr
        batch_loss, _ = train_batch(step, split, ids, generator)
        loss = ranks.sum(batch_loss).item() / batch_size  # the whole batch's mean: the same on every rank
        if not math.isfinite(loss):
            break
        average = BETA * average + (1 - BETA) * loss
        smoothed = average / (1 - BETA ** (index + 1))
        rows.append({"step": index + 1, "lr": lr, "loss": loss, "smoothed_loss": smoothed})
        lowest = min(lowest, smoothed)
        if smoothed > DIVERGED * lowest:
            break
    return rows


def _batches(images: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Batch ids without end: a fresh seeded order each pass, the last partial batch dropped (as
    an epoch of the fit drops it)."""
    while True:
        order = torch.randperm(images, generator=generator)
        for start in range(0, images - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def _ramp_lr(lr_range: LRRange, index: int) -> float:
    """Step `index`'s learning rate: exponential from start (step 0) to end (the last step)."""
    return lr_range.start * (lr_range.end / lr_range.start) ** (index / (lr_range.steps - 1))


def _lr_min(rows: list[dict], lr_range: LRRange) -> float:
    """The rule: the learning rate at the lowest smoothed loss after the first 10% of the ramp
    (fastai leaves those out too: the average is still settling), / 10.  An error where the test
    stopped within those 10%, or the loss only rose after them (its lowest point is their end)."""
    window = rows[lr_range.steps // 10 :]
    lowest = min(window, key=lambda row: row["smoothed_loss"], default=None)
    if lowest is None or lowest is window[0]:
        raise ResoMapError(
            f"train.lr: auto: the range test's loss never fell (it rose from lr {lr_range.start:g}): "
            "lower train.lr_range.start, or set train.lr to a number"
        )
    return lowest["lr"] / 10


def with_lr_found(
    cell: Cell, params: Params, model: nn.Module, data: PreparedData, ranks: Ranks, device: torch.device
) -> tuple[Params, LRRangeResult | None]:
    """train.lr: auto: the params with the learning rate the range test finds (the same on every
    rank), and the test.  The curve file is written either way, header only when train.lr is a
    number: DVC needs every declared output to exist."""
    found = None
    if params.train.lr == "auto":
        found = find_lr(model, data, params.train, seed=cell.seed, device=device, ranks=ranks)
        params = dataclasses.replace(params, train=dataclasses.replace(params.train, lr=found.lr_found))
    if ranks.is_main:
        write_curve(train_metrics_dir(cell) / CURVE_FILE, found.rows if found else [])
        if found is not None:
            print(f"lr range test: train.lr {found.lr_found:.4g} ({found.rule}, {len(found.rows)} steps)", flush=True)
    return params, found
