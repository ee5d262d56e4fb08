"""Batched forward passes over a prepared split, shared by validation, evaluation and explanation."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from resomap.core.device import autocast
from resomap.data.augment import normalize


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
    view: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """float32 logits (N, C) on the CPU for uint8 images (N, 3, R, R). `view` (test-time
    augmentation) maps each uint8 batch, on the device, to uint8 or [0, 1] float images."""
    model.eval()
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device, non_blocking=True)
        batch = normalize(batch if view is None else view(batch), memory_format)
        with autocast(device, dtype):
            outputs.append(model(batch).float().cpu())
    return torch.cat(outputs)

