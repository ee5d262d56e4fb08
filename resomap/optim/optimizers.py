"""Optimizers with the study's parameter groups: one builder for the train stage and the profile stage,
so a profiled training step carries the same optimizer state (momentum buffers, Adam moments)."""

from __future__ import annotations

import torch
from torch import nn

from resomap.core.config import TrainParams


def build_optimizer(
    model: nn.Module, name: str, *, lr: float, momentum: float, weight_decay: float, device: torch.device
) -> torch.optim.Optimizer:
    """No weight decay on norms and biases; fused kernels on CUDA."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = {"fused": True} if device.type == "cuda" else {}
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0, **fused)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, **fused)
    return torch.optim.AdamW(groups, lr=lr, **fused)


def optimizer_for(model: nn.Module, train: TrainParams, device: torch.device) -> torch.optim.Optimizer:
    """The train stage's optimizer, from its params."""
    return build_optimizer(
        model, train.optimizer, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay, device=device
    )
