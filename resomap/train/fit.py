"""fit: train one cell on prepared uint8 arrays held on the device, keep the best epoch's weights."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from resomap.core.config import TrainParams
from resomap.core.device import autocast, memory_format
from resomap.data.augment import normalize
from resomap.data.placement import training_memory
from resomap.data.prepared import PreparedData, Split
from resomap.models.heads import freeze_backbone
from resomap.models.inference import predict_logits
from resomap.train.checkpoint import Checkpointer, capture, restore
from resomap.train.distributed import Ranks
from resomap.train.losses import class_counts
from resomap.train.micro_batch import probe_micro_batch
from resomap.train.progressive import epoch_resolution
from resomap.train.records import EarlyStopper, EpochStats, FitResult, KeptEpoch, keep_top
from resomap.train.side_effects import effects_undone
from resomap.train.step import TrainingInterrupted, TrainStep, forward_backward_first, make_train_step, train_one_epoch

VAL_BATCH = 512  # images per validation forward


def fit(
    model: nn.Module,
    data: PreparedData,
    train: TrainParams,
    *,
    seed: int,
    device: torch.device,
    on_epoch: Callable[[EpochStats], None] = lambda stats: None,
    checkpointer: Checkpointer = Checkpointer(),
    stop_requested: Callable[[], bool] = lambda: False,
    ranks: Ranks = Ranks(),
) -> FitResult:
    """Train for train.epochs (or until early stopping); the result holds the best epoch's weights.
    Under torchrun (`ranks` of several processes) each rank trains on its shard of every batch and
    every rank ends with the same result; the caller lets rank 0 write it.

    After every epoch `checkpointer.save` gets everything needed to continue bit-identically (see
    `checkpoint.capture`); when `checkpointer.resumed` holds such a state, training goes on after
    its epoch. When `stop_requested()` turns true, the epoch is abandoned after the current
    optimizer step and TrainingInterrupted is raised (the last checkpoint stays the resume point)."""
    generator = torch.Generator().manual_seed(seed)
    model = model.to(device, memory_format=memory_format(train.channels_last))
    train_split = training_memory(data.splits["train"], device)
    val = data.splits["val"]
    val_shard = Split(ranks.shard(val.images), ranks.shard(val.labels), None)  # once: a shard is a copy
    step = make_train_step(model, train, device, len(train_split), ranks=ranks, stop_requested=stop_requested,
                           class_counts=class_counts(data.splits["train"].labels, data.num_classes))
    stopper = EarlyStopper(train.early_stopping.monitor, train.early_stopping.patience, train.early_stopping.min_delta)
    result = FitResult(best_state={}, best_epoch=0, data_placement=train_split.placement.where,
                       data_placement_reason=train_split.placement.reason)
    if ranks.is_main:
        print(f"training data: {result.data_placement} ({result.data_placement_reason})", flush=True)
    if train.micro_batch_size == "auto" and device.type == "cuda":
        probed = torch.tensor(probe_micro_batch(step, model, train_split), device=device)
        step.micro_batch_size = int(ranks.min(probed).item())  # the ranks keep one micro-batch
    if train.compile:
        # validation runs the weight average, uncompiled, when train.ema_decay is on
        result.compile_seconds = compile_now(step, model, train_split, val_shard if step.ema is None else None)
    first_epoch = 1
    if checkpointer.resumed is not None:
        first_epoch = restore(checkpointer.resumed, model, step, stopper, generator, result) + 1
    if stopper.should_stop:  # resumed after the early-stopping epoch
        result.stopped_early = len(result.history) < train.epochs
        first_epoch = train.epochs + 1
    for epoch in range(first_epoch, train.epochs + 1):
        if train.freeze_epochs:
            freeze_backbone(model, frozen=epoch <= train.freeze_epochs)
        step.resolution = epoch_resolution(train.progressive, epoch, data.resolution)
        stats = _run_epoch(step, model, train_split, (val_shard, len(val)), generator, epoch)
        result.history.append(stats)
        on_epoch(stats)
        monitored = stats.monitored(train.early_stopping.monitor)
        if stopper.update(monitored):
            result.best_state, result.best_epoch = _cpu_state(_kept(step, model)), epoch
        if train.save_top_k > 1:
            state = result.best_state if result.best_epoch == epoch else _cpu_state(_kept(step, model))
            result.top = keep_top(result.top, KeptEpoch(epoch, monitored, state), train.save_top_k, train.early_stopping.monitor)
        step.schedule.after_epoch(stats.monitored(train.early_stopping.monitor))
        checkpointer.save(capture(epoch, model, step, stopper, generator, result))
        if stopper.should_stop:
            result.stopped_early = epoch < train.epochs
            break
        if step.stop_requested():  # arrived during validation: this epoch is saved, stop here
            raise TrainingInterrupted(epoch + 1, train.epochs)
    result.micro_batch_size, result.oom_backoffs = step.micro_batch_size, step.oom_backoffs
    return result


def compile_now(step: TrainStep, model: nn.Module, split: Split, val: Split | None = None) -> float:
    """torch.compile compiles at the first call: make the calls here, on batches whose effects are
    undone (weights, BatchNorm statistics, gradients, random state), so compilation is timed on its
    own instead of hiding in epoch 1.  Returns the seconds it took.

    Every graph the fit runs is compiled: training (train mode, gradients) at the micro-batch and
    at a batch's short last micro-batch, and, given this rank's `val` shard, validation (eval mode
    under no_grad, as predict_logits runs it: grad mode and training flags are guarded) at its batch
    sizes.  The batch dimension is marked dynamic, so a size met later (out-of-memory back-off)
    reuses a graph where the kernels' choices allow (CPU convolutions under no_grad, for one, guard
    on a range of batch sizes)."""
    start = time.perf_counter()
    shard_batch = len(range(step.ranks.rank, min(step.train.batch_size, len(split)), step.ranks.world_size))
    with effects_undone(step, model):
        model.train()
        for size in _batch_sizes(shard_batch, step.micro_batch_size):
            forward_backward_first(step, split, size, _dynamic_batch)
        step.model.eval()
        for size in _batch_sizes(len(val.labels), VAL_BATCH) if val is not None else []:
            x = normalize(val.images[:size].to(step.device), step.memory_format)
            with torch.no_grad(), autocast(step.device, step.dtype):
                step.model(_dynamic_batch(x))
        if step.device.type == "cuda":
            torch.cuda.synchronize(step.device)
    return time.perf_counter() - start


def _batch_sizes(total: int, batch_size: int) -> list[int]:
    """The sizes of the batches `total` items split into: the full one and a short last one."""
    return sorted({min(batch_size, total), total % batch_size} - {0}, reverse=True)


def _dynamic_batch(x: torch.Tensor) -> torch.Tensor:
    import torch._dynamo  # already loaded by torch.compile; only a compiling fit gets here

    torch._dynamo.maybe_mark_dynamic(x, 0)
    return x


def _run_epoch(step: TrainStep, model: nn.Module, train_split: Split, val: tuple[Split, int], generator, epoch: int) -> EpochStats:
    lr = step.schedule.lr
    start = time.perf_counter()
    train_loss, train_accuracy, seen = train_one_epoch(step, train_split, generator, epoch)
    if step.device.type == "cuda":
        torch.cuda.synchronize(step.device)
    train_seconds = time.perf_counter() - start
    step.ranks.average_buffers(model)
    if step.ema is not None:
        step.ranks.average_buffers(step.ema.module)  # an average of averages: the same linear average
    val_loss, val_accuracy = _validate(step, *val)
    return EpochStats(
        epoch=epoch,
        train_loss=train_loss,
        train_accuracy=train_accuracy,
        val_loss=val_loss,
        val_accuracy=val_accuracy,
        lr=lr,
        resolution=step.resolution or train_split.images.shape[-1],
        epoch_seconds=time.perf_counter() - start,
        images_per_s=seen / train_seconds,
    )


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights on the CPU, unchanged by further training."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _kept(step: TrainStep, model: nn.Module) -> nn.Module:
    """The weights validated and kept: the moving average when train.ema_decay is on."""
    return step.ema.module if step.ema is not None else model


def _validate(step: TrainStep, shard: Split, size: int) -> tuple[float, float]:
    """Mean loss and accuracy on the validation split of `size` images (plain cross-entropy, whatever
    the training loss); each rank scores its `shard`, the sums are reduced."""
    logits = predict_logits(
        _kept(step, step.model), shard.images, batch_size=VAL_BATCH,
        device=step.device, dtype=step.dtype, memory_format=step.memory_format,
    )
    labels = shard.labels
    sums = torch.stack([F.cross_entropy(logits, labels, reduction="sum"), (logits.argmax(1) == labels).sum().float()])
    loss_sum, correct = step.ranks.sum(sums.to(step.device, torch.float64)).tolist()
    return loss_sum / size, correct / size
