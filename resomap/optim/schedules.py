"""Learning-rate schedules from train params, behind one interface for the fit loop."""

from __future__ import annotations

import torch
from torch.optim import lr_scheduler

from resomap.core.config import TrainParams


class LRSchedule:
    """One interface over torch's schedulers: onecycle steps per optimizer step, the rest per epoch."""

    def __init__(self, optimizer: torch.optim.Optimizer, train: TrainParams, steps_per_epoch: int):
        self.name = train.scheduler
        self.optimizer = optimizer
        self.scheduler = self._build(optimizer, train, steps_per_epoch)

    @staticmethod
    def _build(optimizer, train: TrainParams, steps_per_epoch: int):
        main_epochs = train.epochs - train.warmup_epochs
        maximize = train.early_stopping.monitor == "val_accuracy"
        builders = {
            "none": lambda: None,
            "cosine": lambda: lr_scheduler.CosineAnnealingLR(optimizer, T_max=main_epochs),
            "step": lambda: lr_scheduler.StepLR(optimizer, step_size=train.step_size, gamma=train.gamma),
            "multistep": lambda: lr_scheduler.MultiStepLR(optimizer, milestones=train.milestones, gamma=train.gamma),
            "exponential": lambda: lr_scheduler.ExponentialLR(optimizer, gamma=train.gamma),
            "plateau": lambda: lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max" if maximize else "min", factor=train.gamma, patience=train.plateau_patience
            ),
            "onecycle": lambda: lr_scheduler.OneCycleLR(
                optimizer, max_lr=train.lr, epochs=train.epochs, steps_per_epoch=steps_per_epoch
            ),
        }
        main = builders[train.scheduler]()
        if not train.warmup_epochs:
            return main
        warmup = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (train.warmup_epochs + 1), total_iters=train.warmup_epochs)
        if main is None:
            return warmup
        return lr_scheduler.SequentialLR(optimizer, [warmup, main], milestones=[train.warmup_epochs])

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def after_optimizer_step(self) -> None:
        if self.name == "onecycle":
            self.scheduler.step()

    def after_epoch(self, monitored: float) -> None:
        if self.scheduler is None or self.name == "onecycle":
            return
        if self.name == "plateau":
            self.scheduler.step(monitored)
        else:
            self.scheduler.step()
