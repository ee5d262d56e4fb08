"""Batched augmentation and normalisation on the device: no per-image Python in the hot loop."""

from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F

from resomap.core.device import upload

# ImageNet statistics: a stable convention, so prepared data needs no per-dataset statistics pass.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@cache
def _mean_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Made once per device: built from Python lists at every batch they would be copied to the
    GPU each time, and that copy waits for the GPU."""
    return torch.tensor(MEAN, device=device).view(1, 3, 1, 1), torch.tensor(STD, device=device).view(1, 3, 1, 1)


def normalize(images: torch.Tensor, memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """uint8 (B, 3, H, W), or float already in [0, 1] (an augmentation policy's output) -> float32,
    standardised per channel."""
    mean, std = _mean_std(images.device)
    scaled = images.float() / 255.0 if images.dtype == torch.uint8 else images
    return ((scaled - mean) / std).contiguous(memory_format=memory_format)


def draw_crop_flip(batch: int, padding: int, hflip: bool, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image crop offsets in [0, 2*padding] and flip flags (none when hflip is off), drawn on the
    CPU from the cell's generator so any device gets the same, once per batch so its micro-batches
    and the ranks of a distributed run each apply their slice of the same draws."""
    offsets = torch.randint(0, 2 * padding + 1, (batch, 2), generator=generator)
    flips = torch.rand(batch, generator=generator) < 0.5
    return offsets, flips if hflip else torch.zeros_like(flips)


def crop_flip(images: torch.Tensor, padding: int, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Zero-pad by `padding`, crop back to H x W at `offsets`, mirror where `flips`: torchvision's
    RandomCrop(padding) + RandomHorizontalFlip, for a whole batch with one gather."""
    batch, channels, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets, flips = upload(offsets, device), upload(flips, device)
    cols = torch.arange(width, device=device).expand(batch, width)
    cols = torch.where(flips[:, None], width - 1 - cols, cols) + offsets[:, 1:2]
    rows = torch.arange(height, device=device)[None, :] + offsets[:, 0:1]
    return padded[
        torch.arange(batch, device=device)[:, None, None, None],
        torch.arange(channels, device=device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]

