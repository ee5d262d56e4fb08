"""Training calls made ahead of the fit (compiling, probing the micro-batch) must not change it:
the weights, BatchNorm statistics, gradients and random state are put back afterwards."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch import nn

    from resomap.train.step import TrainStep


@contextlib.contextmanager
def effects_undone(step: TrainStep, model: nn.Module) -> Iterator[None]:
    """Run the body, then restore `model`'s state dict (the unwrapped model step.model runs) and
    clear the gradients; the global random state (and the GPU's) is forked, so the body's draws
    are forgotten too."""
    saved = copy.deepcopy(model.state_dict())
    with torch.random.fork_rng(devices=[step.device] if step.device.type == "cuda" else []):
        try:
            yield
        finally:
            step.optimizer.zero_grad(set_to_none=True)
            model.load_state_dict(saved)
