"""What a fit records as it goes: each epoch's figures, the result, and the early-stopping tracker,
shared by the fit loop and the checkpoints that save and restore them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


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
    resolution: int  # of the train images (progressive resizing); validation is always at the cell's

    def monitored(self, monitor: str) -> float:
        return getattr(self, monitor)


@dataclass
class KeptEpoch:
    """One of the train.save_top_k best epochs: its monitored value and weights (on the CPU)."""

    epoch: int
    value: float
    state: dict[str, torch.Tensor]


@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    history: list[EpochStats] = field(default_factory=list)
    top: list[KeptEpoch] = field(default_factory=list)  # train.save_top_k > 1: the best epochs, best first
    stopped_early: bool = False
    micro_batch_size: int = 0  # after any out-of-memory back-off
    oom_backoffs: int = 0
    compile_seconds: float | None = None  # torch.compile's one-off cost, kept out of the epochs' figures
    data_placement: str = ""  # where the training images were: cpu, device or host (resomap/data/placement.py)
    data_placement_reason: str = ""


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


def keep_top(kept: list[KeptEpoch], candidate: KeptEpoch, k: int, monitor: str) -> list[KeptEpoch]:
    """The k best of `kept` and `candidate` by the monitored value (higher accuracy, lower loss),
    best first; on a tie the earlier epoch ranks first."""
    sign = -1.0 if monitor == "val_accuracy" else 1.0
    return sorted([*kept, candidate], key=lambda e: (sign * e.value, e.epoch))[:k]


def kept_file_name(kept: KeptEpoch, monitor: str) -> str:
    """Lightning's checkpoint naming: the epoch and the monitored value, e.g. epoch=07-val_accuracy=0.6400.pt."""
    return f"epoch={kept.epoch:02d}-{monitor}={kept.value:.4f}.pt"
