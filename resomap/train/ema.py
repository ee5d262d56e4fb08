"""An exponential moving average of the weights (train.ema_decay), updated after every optimizer
step: torch's AveragedModel with get_ema_multi_avg_fn over parameters and buffers alike
(use_buffers: BatchNorm's running statistics are averaged too, so the averaged model is
consistent with itself).  When it is on, validation, the best epoch and model.pt use it.

The decay warms up as in TensorFlow's ExponentialMovingAverage(num_updates):
decay_t = min(decay, (1 + t) / (10 + t)) with t the updates averaged so far (the first update
copies the weights), so a short fit is not dominated by its random initial weights."""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class WeightAverage:
    """The average of `model`'s weights; `update()` after each optimizer step."""

    def __init__(self, model: nn.Module, decay: float):
        self.source, self.decay = model, decay
        # n_averaged stays on the CPU (no device given): reading it never waits for the GPU
        self.averaged = AveragedModel(model, multi_avg_fn=self._average, use_buffers=True)

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    def decay_at(self, updates: int) -> float:
        return min(self.decay, (1 + updates) / (10 + updates))

    def update(self) -> None:
        self.averaged.update_parameters(self.source)

    def _average(self, averaged, current, updates) -> None:
        get_ema_multi_avg_fn(self.decay_at(int(self.averaged.n_averaged)))(averaged, current, updates)
