"""One optimisation step of the fit loop: micro-batches with gradient accumulation, out-of-memory
back-off (agreed across DDP ranks), one gradient sync per batch, and one pass over the training split."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from resomap.core.config import TrainParams
from resomap.core.device import amp_dtype, autocast, memory_format
from resomap.core.errors import ResoMapError
from resomap.core.oom import with_oom_backoff
from resomap.data.augment import crop_flip, draw_crop_flip, normalize
from resomap.data.mixing import Mix, draw_mix, is_mixing, mix_images, mix_targets, partner_rows
from resomap.data.order import epoch_order, read_unit
from resomap.data.placement import BatchSource, batch, epoch_batches
from resomap.data.policies import apply_policy, draw_policy
from resomap.data.prepared import Split
from resomap.optim.optimizers import optimizer_for
from resomap.optim.schedules import LRSchedule
from resomap.train.distributed import Ranks, deferred_gradient_sync
from resomap.train.ema import WeightAverage
from resomap.train.losses import Loss, make_loss
from resomap.train.progressive import resize_batch


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
    loss: Loss
    classes: int  # the targets' classes (MixUp/CutMix make one-hot targets)
    ema: WeightAverage | None = None  # train.ema_decay: the weights validated and kept
    ranks: Ranks = Ranks()
    oom_backoffs: int = 0
    resolution: int | None = None  # the train images' side this epoch (progressive resizing); None: as prepared
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
        loss = step.loss(logits, y)
    step.scaler.scale(loss * weight).backward()
    return loss, logits


def forward_backward_first(
    step: TrainStep, split: BatchSource, size: int, mark: Callable[[torch.Tensor], torch.Tensor] = lambda x: x
) -> None:
    """Forward and backward of the split's first `size` images as a training step runs them (no
    all-reduce in the backward), `mark` applied to the normalised batch; for the passes that
    prepare a fit (compilation, the micro-batch probe), whose effects the caller undoes."""
    x, y = batch(split, torch.arange(size), step.device)
    with deferred_gradient_sync(step.model):
        forward_backward(step, mark(normalize(x, step.memory_format)), y, 1.0)


def train_one_epoch(
    step: TrainStep, split: Split, generator: torch.Generator, epoch: int
) -> tuple[float, float, int]:
    """One pass over the training split in a seeded order; returns mean loss, accuracy and images seen
    (over all ranks: each trains on its shard of every batch).

    The last partial batch is dropped so every step has the same batch statistics.  A non-finite
    loss stops training, naming the epoch and step."""
    train = step.train
    step.model.train()
    batch_size = min(train.batch_size, len(split))
    order = epoch_order(len(split), train, generator)
    steps = len(split) // batch_size
    batches = [order[i * batch_size : (i + 1) * batch_size] for i in range(steps)]
    loss_sum = torch.zeros((), device=step.device)
    correct = torch.zeros((), device=step.device, dtype=torch.long)
    # first step whose loss was not finite, tracked on the device: no per-step synchronisation
    first_bad = torch.full((), steps + 1, device=step.device, dtype=torch.long)
    desc = f"epoch {epoch}/{train.epochs}"
    with epoch_batches(split, [reads(step, ids) for ids in batches], read_unit(train)) as sources:
        progress = tqdm(zip(batches, sources), total=steps, desc=desc, unit="batch", leave=False, mininterval=1.0,
                        disable=not step.ranks.is_main)
        for batch_index, (batch_ids, source) in enumerate(progress):
            batch_loss, batch_correct = train_batch(step, source, batch_ids, generator)
            first_bad = torch.where(torch.isfinite(batch_loss) | (first_bad <= steps), first_bad, batch_index + 1)
            loss_sum += batch_loss
            correct += batch_correct
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


def reads(step: TrainStep, batch_ids: torch.Tensor) -> torch.Tensor:
    """The ids of the images this rank reads for the batch `batch_ids`: its shard, and with mixing
    its shard's partners (resomap/data/mixing.py), which may lie in another rank's shard."""
    own = step.ranks.shard(batch_ids)
    return torch.cat([own, step.ranks.shard(batch_ids.flip(0))]) if is_mixing(step.train) else own


def train_batch(step: TrainStep, split: BatchSource, batch_ids: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on the images `batch_ids`: augmentation drawn from `generator`, the
    gradients (this rank's shard, micro-batch by micro-batch), the step itself.  Returns the
    batch's summed loss and correct count, on the device (reading them would synchronise).

    The images are trained at step.resolution (progressive resizing), resized before any
    augmentation so the draws are in its pixels.  A batch that runs out of memory is retried from
    its start (same augmentation draws) with half the micro-batch."""
    train = step.train
    size = step.resolution or split.images.shape[-1]
    padding = round(train.augment.crop_padding * size)
    offsets, flips = draw_crop_flip(len(batch_ids), padding, train.augment.hflip, generator)
    policy = draw_policy(len(batch_ids), train.augment, size, size, generator)
    rows = (batch_ids, offsets, flips, policy)
    mix = draw_mix(train, size, size, generator)
    if mix is not None:  # partners paired on the whole batch, before any split (resomap/data/mixing.py)
        rows += partner_rows(rows)
    own = [step.ranks.shard(t) for t in rows]
    batch_loss, batch_correct = _batch_with_backoff(step, split, own, mix, (size, padding))
    _optimizer_step(step)
    return batch_loss, batch_correct


class RankOutOfMemory(torch.OutOfMemoryError):
    """Some rank ran out of memory in this attempt: every rank backs off (`ranks` names them)."""

    def __init__(self, ranks: list[int]):
        super().__init__(f"out of memory on rank {', '.join(map(str, ranks))}")
        self.ranks = ranks


def _batch_with_backoff(
    step: TrainStep, split: BatchSource, rows: list[torch.Tensor], mix: Mix | None, geometry: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch's gradients; out of memory drops the partial gradients and halves the micro-batch
    (the effective batch stays train.batch_size, the augmentation draws stay the same).  Under DDP
    the ranks agree after every attempt: one rank out of memory and all back off together, so the
    ranks keep the same micro-batch and none is left waiting in a collective."""

    def attempt(micro_batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        step.optimizer.zero_grad(set_to_none=True)
        micro_batches = list(zip(*(t.split(micro_batch_size) for t in rows)))
        if not step.ranks.distributed:
            return _accumulate_batch(step, split, micro_batches, mix, geometry)
        result = None
        with contextlib.suppress(torch.OutOfMemoryError):  # leaving it frees the attempt's activations
            result = _accumulate_batch(step, split, micro_batches, mix, geometry)
        out_of_memory = step.ranks.flagged(result is None)
        if out_of_memory:
            raise RankOutOfMemory(out_of_memory)
        step.ranks.average_gradients(step.model)
        return result

    try:
        result, micro_batch_size, backoffs = with_oom_backoff(attempt, step.micro_batch_size, step.device)
    except torch.OutOfMemoryError as error:
        where = f" (rank {', '.join(map(str, error.ranks))} of {step.ranks.world_size})" if isinstance(error, RankOutOfMemory) else ""
        raise ResoMapError(f"out of memory even at micro-batch 1{where}: use a smaller model or resolution") from None
    if backoffs:
        step.micro_batch_size, step.oom_backoffs = micro_batch_size, step.oom_backoffs + backoffs
        if step.ranks.is_main:
            print(
                f"out of memory: micro-batch now {step.micro_batch_size}, gradient accumulation {step.accum_steps} "
                f"(effective batch still {step.train.batch_size})",
                flush=True,
            )
    return result


def _accumulate_batch(
    step: TrainStep, split: BatchSource, micro_batches, mix: Mix | None, geometry: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of one batch (this rank's share), micro-batch by micro-batch; its summed loss and
    correct count, on the device.  Under DDP no backward all-reduces: the caller syncs the gradients
    once every rank has finished (a synced backward that ran out of memory could not be retried)."""
    total = sum(len(ids) for ids, *_ in micro_batches)
    loss_sum = torch.zeros((), device=step.device)
    correct = torch.zeros((), device=step.device, dtype=torch.long)
    for rows in micro_batches:
        count = len(rows[0])
        if mix is None:
            x, y = _augmented(step, split, rows, geometry)
            target = y
        else:  # the images and their partners (the rows' second half) gathered and augmented together
            half = len(rows) // 2
            x, y = _augmented(step, split, [torch.cat(pair) for pair in zip(rows[:half], rows[half:])], geometry)
            x = mix_images(x[:count], x[count:], mix)
            target, y = mix_targets(y[:count], y[count:], mix, step.classes)
        with deferred_gradient_sync(step.model):
            loss, logits = forward_backward(step, x, target, count / total)
        # accumulate on the device: reading .item() here would synchronise every step
        loss_sum += loss.detach().float() * count
        correct += (logits.argmax(1) == y).sum()  # a mixed image counts against its dominant label
    return loss_sum, correct


def _augmented(step: TrainStep, split: BatchSource, rows, geometry: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of rows' ids at the step's size, cropped, flipped, put through the policy and
    normalised, with their labels; `geometry` is (size, crop padding) in pixels."""
    ids, offsets, flips, policy = rows
    size, padding = geometry
    x, y = batch(split, ids, step.device)
    x = crop_flip(resize_batch(x, size), padding, offsets, flips)
    return normalize(apply_policy(x, step.train.augment, policy), step.memory_format), y


def _optimizer_step(step: TrainStep) -> None:
    if step.train.grad_clip_norm is not None:
        step.scaler.unscale_(step.optimizer)
        nn.utils.clip_grad_norm_(step.model.parameters(), step.train.grad_clip_norm)
    step.scaler.step(step.optimizer)
    step.scaler.update()
    step.optimizer.zero_grad(set_to_none=True)
    step.schedule.after_optimizer_step()
    if step.ema is not None:
        step.ema.update()


def make_train_step(
    model: nn.Module,
    train: TrainParams,
    device: torch.device,
    train_images: int,
    *,
    ranks: Ranks = Ranks(),
    stop_requested: Callable[[], bool] = lambda: False,
    class_counts: torch.Tensor | None = None,
) -> TrainStep:
    """The optimiser, schedule, loss and forward module (DDP-wrapped across ranks, compiled when
    asked), and the weight average when train.ema_decay asks, for a model already on `device`; the
    train stage's loop and the throughput benchmark share it.  `class_counts` (images per class of
    the train split) is needed by balanced class weights and mixing."""
    if class_counts is None and (train.class_weights != "none" or is_mixing(train)):
        raise ResoMapError("train.class_weights and MixUp/CutMix need the train split's class counts: pass class_counts")
    if train.batch_size % ranks.world_size:
        raise ResoMapError(
            f"train.batch_size {train.batch_size} does not split evenly over {ranks.world_size} processes: "
            "launch a divisor of it"
        )
    ema = WeightAverage(model, train.ema_decay) if train.ema_decay is not None else None  # copied before any wrapping
    wrapped = ranks.wrap(model, device)
    optimizer = optimizer_for(model, train, device)
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
        loss=make_loss(train, class_counts, device),
        classes=len(class_counts) if class_counts is not None else 0,
        ema=ema,
        ranks=ranks,
        stop_requested=ranks.agreed(stop_requested),
    )
