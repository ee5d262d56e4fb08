"""fit: train one cell on prepared uint8 arrays held on the device, keep the best epoch's weights."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from resomap.config import TrainParams
from resomap.data.augment import augment_batch, normalize
from resomap.data.prepared import PreparedData, Split
from resomap.device import amp_dtype, autocast, memory_format
from resomap.errors import ResoMapError
from resomap.inference import loss_and_accuracy, predict_logits
from resomap.optim import LRSchedule, build_optimizer


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    epoch_seconds: float
    images_per_s: float

    def monitored(self, monitor: str) -> float:
        return getattr(self, monitor)


@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    history: list[EpochStats] = field(default_factory=list)
    stopped_early: bool = False


class EarlyStopper:
    """Tracks the monitored validation metric: which epoch is best, and when to give up."""

    def __init__(self, monitor: str, patience: int | None, min_delta: float):
        self.sign = 1.0 if monitor == "val_accuracy" else -1.0
        self.patience, self.min_delta = patience, min_delta
        self.best = -math.inf
        self.epochs_since_best = 0

    def update(self, value: float) -> bool:
        """Record an epoch's value; True when it is a new best by more than min_delta."""
        score = self.sign * value
        if score > self.best + self.min_delta:
            self.best, self.epochs_since_best = score, 0
            return True
        self.epochs_since_best += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.epochs_since_best >= self.patience


@dataclass
class TrainStep:
    """What one optimisation step needs; built once per fit."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scaler: torch.amp.GradScaler
    train: TrainParams
    device: torch.device
    dtype: torch.dtype | None
    memory_format: torch.memory_format


def train_one_epoch(step: TrainStep, split: Split, generator: torch.Generator, desc: str) -> tuple[float, float, int]:
    """One pass over the training split in a seeded order; returns mean loss, accuracy and images seen.

    The last partial batch is dropped so every step has the same batch statistics."""
    train, model = step.train, step.model
    model.train()
    images, labels = split.images, split.labels
    batch_size = min(train.batch_size, len(labels))
    micro = batch_size // train.grad_accum_steps
    padding = round(train.augment.crop_padding * images.shape[-1])
    order = torch.randperm(len(labels), generator=generator)
    steps = len(labels) // batch_size
    loss_sum = torch.zeros((), device=step.device)
    correct = torch.zeros((), device=step.device, dtype=torch.long)
    for batch_index in tqdm(range(steps), desc=desc, unit="batch", leave=False, mininterval=1.0):
        batch_ids = order[batch_index * batch_size : (batch_index + 1) * batch_size]
        for ids in batch_ids.split(micro):
            x = augment_batch(images[ids.to(images.device)], padding, train.augment.hflip, generator)
            x = normalize(x.to(step.device, non_blocking=True), step.memory_format)
            y = labels[ids.to(labels.device)].to(step.device, non_blocking=True)
            with autocast(step.device, step.dtype):
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=train.label_smoothing)
            step.scaler.scale(loss / train.grad_accum_steps).backward()
            # accumulate on the device: reading .item() here would synchronise every step
            loss_sum += loss.detach().float() * len(ids)
            correct += (logits.argmax(1) == y).sum()
        _optimizer_step(step)
    seen = steps * batch_size
    mean_loss = loss_sum.item() / seen
    if not math.isfinite(mean_loss):
        raise ResoMapError(f"training loss became {mean_loss}: lower train.lr or set train.amp to off")
    return mean_loss, correct.item() / seen, seen


def _optimizer_step(step: TrainStep) -> None:
    if step.train.grad_clip_norm is not None:
        step.scaler.unscale_(step.optimizer)
        nn.utils.clip_grad_norm_(step.model.parameters(), step.train.grad_clip_norm)
    step.scaler.step(step.optimizer)
    step.scaler.update()
    step.optimizer.zero_grad(set_to_none=True)
    step.schedule.after_optimizer_step()


def fit(
    model: nn.Module,
    data: PreparedData,
    train: TrainParams,
    *,
    seed: int,
    device: torch.device,
    on_epoch: Callable[[EpochStats], None] = lambda stats: None,
) -> FitResult:
    """Train for train.epochs (or until early stopping); the result holds the best epoch's weights."""
    generator = torch.Generator().manual_seed(seed)
    fmt = memory_format(train.channels_last)
    model = model.to(device, memory_format=fmt)
    forward = torch.compile(model) if train.compile else model
    dtype = amp_dtype(train.amp, device)
    train_split = data.splits["train"]
    train_split = Split(train_split.images.to(device), train_split.labels.to(device), None)
    steps_per_epoch = max(1, len(train_split) // train.batch_size)
    optimizer = build_optimizer(model, train, device)
    step = TrainStep(
        model=forward,
        optimizer=optimizer,
        schedule=LRSchedule(optimizer, train, steps_per_epoch),
        scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
        train=train,
        device=device,
        dtype=dtype,
        memory_format=fmt,
    )
    stopper = EarlyStopper(train.early_stopping.monitor, train.early_stopping.patience, train.early_stopping.min_delta)
    result = FitResult(best_state={}, best_epoch=0)
    for epoch in range(1, train.epochs + 1):
        stats = _run_epoch(step, data, train_split, generator, epoch)
        result.history.append(stats)
        on_epoch(stats)
        if stopper.update(stats.monitored(train.early_stopping.monitor)):
            result.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            result.best_epoch = epoch
        step.schedule.after_epoch(stats.monitored(train.early_stopping.monitor))
        if stopper.should_stop:
            result.stopped_early = epoch < train.epochs
            break
    return result


def _run_epoch(step: TrainStep, data: PreparedData, train_split: Split, generator, epoch: int) -> EpochStats:
    lr = step.schedule.lr
    start = time.perf_counter()
    desc = f"epoch {epoch}/{step.train.epochs}"
    train_loss, train_accuracy, seen = train_one_epoch(step, train_split, generator, desc)
    if step.device.type == "cuda":
        torch.cuda.synchronize(step.device)
    train_seconds = time.perf_counter() - start
    val = data.splits["val"]
    logits = predict_logits(
        step.model, val.images, batch_size=512, device=step.device, dtype=step.dtype, memory_format=step.memory_format
    )
    val_loss, val_accuracy = loss_and_accuracy(logits, val.labels)
    return EpochStats(
        epoch=epoch,
        train_loss=train_loss,
        train_accuracy=train_accuracy,
        val_loss=val_loss,
        val_accuracy=val_accuracy,
        lr=lr,
        epoch_seconds=time.perf_counter() - start,
        images_per_s=seen / train_seconds,
    )
