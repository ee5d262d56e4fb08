"""fit: train one cell on prepared uint8 arrays held on the device, keep the best epoch's weights."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from resomap.config import TrainParams
from resomap.data.augment import crop_flip, draw_crop_flip, normalize
from resomap.data.placement import batch, training_memory
from resomap.data.prepared import PreparedData, Split
from resomap.device import amp_dtype, autocast, memory_format
from resomap.distributed import Ranks, deferred_gradient_sync
from resomap.errors import ResoMapError
from resomap.inference import predict_logits
from resomap.oom import with_oom_backoff
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
    micro_batch_size: int = 0  # after any out-of-memory back-off
    oom_backoffs: int = 0
    compile_seconds: float | None = None  # torch.compile's one-off cost, kept out of the epochs' figures


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


class TrainingInterrupted(ResoMapError):
    """SIGINT/SIGTERM arrived: the current epoch was abandoned at an optimizer-step boundary."""

    def __init__(self, epoch: int, epochs: int):
        super().__init__(f"interrupted during epoch {epoch}/{epochs}")
        self.epoch = epoch


@dataclass
class TrainStep:
    """What one optimisation step needs; built once per fit.  micro_batch_size (this rank's)
    shrinks on out-of-memory."""

    model: nn.Module  # what runs forward: DDP-wrapped and/or compiled
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scaler: torch.amp.GradScaler
    train: TrainParams
    device: torch.device
    dtype: torch.dtype | None
    memory_format: torch.memory_format
    micro_batch_size: int
    ranks: Ranks = Ranks()
    oom_backoffs: int = 0
    stop_requested: Callable[[], bool] = lambda: False

    @property
    def accum_steps(self) -> int:
        """Gradient accumulation actually used: the effective batch is always train.batch_size."""
        return -(-self.train.batch_size // (self.micro_batch_size * self.ranks.world_size))


def forward_backward(step: TrainStep, x: torch.Tensor, y: torch.Tensor, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward of one micro-batch, its loss weighted by its share of the batch;
    returns the (unweighted) loss and the logits.  Tests wrap this to inject faults."""
    with autocast(step.device, step.dtype):
        logits = step.model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=step.train.label_smoothing)
    step.scaler.scale(loss * weight).backward()
    return loss, logits


def train_one_epoch(
    step: TrainStep, split: Split, generator: torch.Generator, epoch: int
) -> tuple[float, float, int]:
    """One pass over the training split in a seeded order; returns mean loss, accuracy and images seen
    (over all ranks: each trains on its shard of every batch).

    The last partial batch is dropped so every step has the same batch statistics.  A batch that
    runs out of memory is retried from its start (same augmentation draws) with half the
    micro-batch; a non-finite loss stops training, naming the epoch and step."""
    train, model = step.train, step.model
    model.train()
    batch_size = min(train.batch_size, len(split))
    padding = round(train.augment.crop_padding * split.images.shape[-1])
    order = torch.randperm(len(split), generator=generator)
    steps = len(split) // batch_size
    loss_sum = torch.zeros((), device=step.device)
    correct = torch.zeros((), device=step.device, dtype=torch.long)
    # first step whose loss was not finite, tracked on the device: no per-step synchronisation
    first_bad = torch.full((), steps + 1, device=step.device, dtype=torch.long)
    desc = f"epoch {epoch}/{train.epochs}"
    progress = tqdm(range(steps), desc=desc, unit="batch", leave=False, mininterval=1.0, disable=not step.ranks.is_main)
    for batch_index in progress:
        batch_ids = order[batch_index * batch_size : (batch_index + 1) * batch_size]
        offsets, flips = draw_crop_flip(len(batch_ids), padding, train.augment.hflip, generator)
        own = [step.ranks.shard(t) for t in (batch_ids, offsets, flips)]
        batch_loss, batch_correct = _batch_with_backoff(step, split, *own, padding)
        first_bad = torch.where(torch.isfinite(batch_loss) | (first_bad <= steps), first_bad, batch_index + 1)
        loss_sum += batch_loss
        correct += batch_correct
        _optimizer_step(step)
        if step.stop_requested():
            raise TrainingInterrupted(epoch, train.epochs)
    seen = steps * batch_size
    for total in (loss_sum, correct):
        step.ranks.sum(total)
    step.ranks.min(first_bad)
    bad_step = int(first_bad.item())
    if bad_step <= steps:
        raise ResoMapError(
            f"training loss became non-finite at epoch {epoch}/{train.epochs}, step {bad_step}/{steps}: "
            "lower train.lr, or try train.amp: bf16 / off"
        )
    return loss_sum.item() / seen, correct.item() / seen, seen


def _batch_with_backoff(step: TrainStep, split: Split, batch_ids, offsets, flips, padding: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch's gradients; out of memory drops the partial gradients and halves the micro-batch
    (the effective batch stays train.batch_size, the augmentation draws stay the same)."""

    def attempt(micro_batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        step.optimizer.zero_grad(set_to_none=True)
        micro_batches = zip(*(t.split(micro_batch_size) for t in (batch_ids, offsets, flips)))
        return _accumulate_batch(step, split, list(micro_batches), padding)

    try:
        result, micro_batch_size, backoffs = with_oom_backoff(attempt, step.micro_batch_size, step.device)
    except torch.OutOfMemoryError:
        raise ResoMapError("out of memory even at micro-batch 1: use a smaller model or resolution") from None
    if backoffs:
        step.micro_batch_size, step.oom_backoffs = micro_batch_size, step.oom_backoffs + backoffs
        print(
            f"out of memory: micro-batch now {step.micro_batch_size}, gradient accumulation {step.accum_steps} "
            f"(effective batch still {step.train.batch_size})",
            flush=True,
        )
    return result


def _accumulate_batch(step: TrainStep, split: Split, micro_batches, padding: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of one batch (this rank's share), micro-batch by micro-batch; its summed loss and
    correct count, on the device.  Under DDP only the last backward all-reduces the gradients."""
    total = sum(len(ids) for ids, _, _ in micro_batches)
    loss_sum = torch.zeros((), device=step.device)
    correct = torch.zeros((), device=step.device, dtype=torch.long)
    for index, (ids, offsets, flips) in enumerate(micro_batches):
        x, y = batch(split, ids, step.device)
        x = normalize(crop_flip(x, padding, offsets, flips), step.memory_format)
        last = index == len(micro_batches) - 1
        with contextlib.nullcontext() if last else deferred_gradient_sync(step.model):
            loss, logits = forward_backward(step, x, y, len(ids) / total)
        # accumulate on the device: reading .item() here would synchronise every step
        loss_sum += loss.detach().float() * len(ids)
        correct += (logits.argmax(1) == y).sum()
    return loss_sum, correct


def _optimizer_step(step: TrainStep) -> None:
    if step.train.grad_clip_norm is not None:
        step.scaler.unscale_(step.optimizer)
        nn.utils.clip_grad_norm_(step.model.parameters(), step.train.grad_clip_norm)
    step.scaler.step(step.optimizer)
    step.scaler.update()
    step.optimizer.zero_grad(set_to_none=True)
    step.schedule.after_optimizer_step()


def make_train_step(
    model: nn.Module,
    train: TrainParams,
    device: torch.device,
    train_images: int,
    *,
    ranks: Ranks = Ranks(),
    stop_requested: Callable[[], bool] = lambda: False,
) -> TrainStep:
    """The optimiser, schedule and forward module (DDP-wrapped across ranks, compiled when asked)
    for a model already on `device`; the train stage's loop and the throughput benchmark share it."""
    if train.batch_size % ranks.world_size:
        raise ResoMapError(
            f"train.batch_size {train.batch_size} does not split evenly over {ranks.world_size} processes: "
            "launch a divisor of it"
        )
    wrapped = ranks.wrap(model, device)
    optimizer = build_optimizer(model, train, device)
    dtype = amp_dtype(train.amp, device)
    return TrainStep(
        model=torch.compile(wrapped) if train.compile else wrapped,
        optimizer=optimizer,
        schedule=LRSchedule(optimizer, train, max(1, train_images // train.batch_size)),
        # fp16 needs loss scaling against gradient underflow; bf16 and fp32 do not
        scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
        train=train,
        device=device,
        dtype=dtype,
        memory_format=memory_format(train.channels_last),
        micro_batch_size=max(1, min(train.batch_size, train_images) // ranks.world_size // train.grad_accum_steps),
        ranks=ranks,
        stop_requested=ranks.agreed(stop_requested, device),
    )


def fit(
    model: nn.Module,
    data: PreparedData,
    train: TrainParams,
    *,
    seed: int,
    device: torch.device,
    on_epoch: Callable[[EpochStats], None] = lambda stats: None,
    resume: dict | None = None,
    on_checkpoint: Callable[[dict], None] = lambda state: None,
    stop_requested: Callable[[], bool] = lambda: False,
    ranks: Ranks = Ranks(),
) -> FitResult:
    """Train for train.epochs (or until early stopping); the result holds the best epoch's weights.
    Under torchrun (`ranks` of several processes) each rank trains on its shard of every batch and
    every rank ends with the same result; the caller lets rank 0 write it.

    After every epoch `on_checkpoint` gets everything needed to continue bit-identically (see
    `checkpoint`); `resume` is such a state, and training goes on after its epoch.  When
    `stop_requested()` turns true, the epoch is abandoned after the current optimizer step
    and TrainingInterrupted is raised (the last checkpoint stays the resume point)."""
    generator = torch.Generator().manual_seed(seed)
    model = model.to(device, memory_format=memory_format(train.channels_last))
    train_split = training_memory(data.splits["train"], device)
    step = make_train_step(model, train, device, len(train_split), ranks=ranks, stop_requested=stop_requested)
    stopper = EarlyStopper(train.early_stopping.monitor, train.early_stopping.patience, train.early_stopping.min_delta)
    result = FitResult(best_state={}, best_epoch=0)
    if train.compile:
        result.compile_seconds = compile_now(step, model, train_split)
    first_epoch = 1
    if resume is not None:
        first_epoch = _restore(resume, model, step, stopper, generator, result) + 1
    if stopper.should_stop:  # resumed after the early-stopping epoch
        result.stopped_early = len(result.history) < train.epochs
        first_epoch = train.epochs + 1
    for epoch in range(first_epoch, train.epochs + 1):
        stats = _run_epoch(step, model, data, train_split, generator, epoch)
        result.history.append(stats)
        on_epoch(stats)
        if stopper.update(stats.monitored(train.early_stopping.monitor)):
            result.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            result.best_epoch = epoch
        step.schedule.after_epoch(stats.monitored(train.early_stopping.monitor))
        on_checkpoint(checkpoint(epoch, model, step, stopper, generator, result))
        if stopper.should_stop:
            result.stopped_early = epoch < train.epochs
            break
        if step.stop_requested():  # arrived during validation: this epoch is saved, stop here
            raise TrainingInterrupted(epoch + 1, train.epochs)
    result.micro_batch_size, result.oom_backoffs = step.micro_batch_size, step.oom_backoffs
    return result


def compile_now(step: TrainStep, model: nn.Module, split: Split) -> float:
    """torch.compile compiles at the first call: make that call here, on one micro-batch whose
    effects are undone (weights, BatchNorm statistics, gradients, random state), so compilation is
    timed on its own instead of hiding in epoch 1.  Returns the seconds it took."""
    saved = copy.deepcopy(model.state_dict())
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[step.device] if step.device.type == "cuda" else []):
        model.train()
        x, y = batch(split, torch.arange(min(step.micro_batch_size, len(split))), step.device)
        forward_backward(step, normalize(x, step.memory_format), y, 1.0)
        if step.device.type == "cuda":
            torch.cuda.synchronize(step.device)
    step.optimizer.zero_grad(set_to_none=True)
    model.load_state_dict(saved)
    return time.perf_counter() - start


def checkpoint(epoch: int, model: nn.Module, step: TrainStep, stopper: EarlyStopper, generator, result: FitResult) -> dict:
    """Everything a resumed fit needs to continue as if never stopped; tensors and plain values only."""
    state = {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": step.optimizer.state_dict(),
        "scheduler": step.schedule.scheduler.state_dict() if step.schedule.scheduler is not None else None,
        "scaler": step.scaler.state_dict(),
        "stopper": {"best": stopper.best, "epochs_since_best": stopper.epochs_since_best},
        "best_state": result.best_state,
        "best_epoch": result.best_epoch,
        "history": [dataclasses.asdict(stats) for stats in result.history],
        "micro_batch_size": step.micro_batch_size,
        "oom_backoffs": step.oom_backoffs,
        "rng": {"generator": generator.get_state(), "torch": torch.get_rng_state()},
    }
    if step.device.type == "cuda":
        state["rng"]["cuda"] = torch.cuda.get_rng_state(step.device)
    return state


def _restore(state: dict, model: nn.Module, step: TrainStep, stopper: EarlyStopper, generator, result: FitResult) -> int:
    """Load a checkpoint() into a freshly built fit; returns the epoch it was taken after."""
    model.load_state_dict(state["model"])
    step.optimizer.load_state_dict(state["optimizer"])
    if step.schedule.scheduler is not None:
        step.schedule.scheduler.load_state_dict(state["scheduler"])
    step.scaler.load_state_dict(state["scaler"])
    stopper.best, stopper.epochs_since_best = state["stopper"]["best"], state["stopper"]["epochs_since_best"]
    result.best_state, result.best_epoch = state["best_state"], state["best_epoch"]
    result.history = [EpochStats(**stats) for stats in state["history"]]
    step.micro_batch_size, step.oom_backoffs = state["micro_batch_size"], state["oom_backoffs"]
    generator.set_state(state["rng"]["generator"])
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and step.device.type == "cuda":
        torch.cuda.set_rng_state(state["rng"]["cuda"], step.device)
    return state["epoch"]


def _run_epoch(step: TrainStep, model: nn.Module, data: PreparedData, train_split: Split, generator, epoch: int) -> EpochStats:
    lr = step.schedule.lr
    start = time.perf_counter()
    train_loss, train_accuracy, seen = train_one_epoch(step, train_split, generator, epoch)
    if step.device.type == "cuda":
        torch.cuda.synchronize(step.device)
    train_seconds = time.perf_counter() - start
    step.ranks.average_buffers(model)
    val_loss, val_accuracy = _validate(step, data.splits["val"])
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


def _validate(step: TrainStep, val: Split) -> tuple[float, float]:
    """Mean loss and accuracy on the validation split; each rank scores its shard, the sums are reduced."""
    labels = step.ranks.shard(val.labels)
    logits = predict_logits(
        step.model, step.ranks.shard(val.images), batch_size=512,
        device=step.device, dtype=step.dtype, memory_format=step.memory_format,
    )
    sums = torch.stack([F.cross_entropy(logits, labels, reduction="sum"), (logits.argmax(1) == labels).sum().float()])
    loss_sum, correct = step.ranks.sum(sums.to(step.device, torch.float64)).tolist()
    return loss_sum / len(val), correct / len(val)
