"""Static costs of a model: parameters, weight bytes and forward FLOPs per image."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

FLOPS_CONVENTION = "torch.utils.flop_counter: one multiply-add = 2 FLOPs; forward pass, one image"


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_size_mb(model: nn.Module) -> float:
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


@torch.no_grad()
def count_flops(model: nn.Module, resolution: int) -> int:
    """Forward FLOPs for one image (see FLOPS_CONVENTION)."""
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, resolution, resolution, device=next(model.parameters()).device))
    return counter.get_total_flops()
