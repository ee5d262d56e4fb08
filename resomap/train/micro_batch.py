"""train.micro_batch_size: auto: the largest micro-batch whose forward and backward fit on the GPU,
found before the first epoch; gradient accumulation then keeps the effective batch at
train.batch_size.  Halving finds a size that fits (as the out-of-memory back-off does), a binary
search between it and the first size that did not fit finds the largest.  On the CPU there is
nothing to probe: the micro-batch is this rank's share of the batch."""

from __future__ import annotations

import torch
from torch import nn

from resomap.core.oom import with_oom_backoff
from resomap.data.prepared import Split
from resomap.train import step as training
from resomap.train.side_effects import effects_undone


def probe_micro_batch(step: training.TrainStep, model: nn.Module, split: Split) -> int:
    """The largest micro-batch, up to step.micro_batch_size, that trains without running out of
    memory at the split's full resolution; the probes leave no trace (weights, BatchNorm
    statistics, gradients, random state).  `model` is the unwrapped model step.model runs."""
    with effects_undone(step, model):
        step.model.train()
        _, fits, backoffs = with_oom_backoff(lambda size: _try(step, split, size), step.micro_batch_size, step.device)
        fails = fits * 2 if backoffs else step.micro_batch_size + 1
        while fails - fits > 1:  # invariant: `fits` fits, `fails` does not
            middle = (fits + fails) // 2
            try:
                _try(step, split, middle)
                fits = middle
            except torch.OutOfMemoryError:
                fails = middle
    return fits


def _try(step: training.TrainStep, split: Split, size: int) -> None:
    """One forward and backward of `size` images; the gradients and activations are dropped."""
    try:
        training.forward_backward_first(step, split, size)
    finally:
        step.optimizer.zero_grad(set_to_none=True)
        if step.device.type == "cuda":
            torch.cuda.empty_cache()
