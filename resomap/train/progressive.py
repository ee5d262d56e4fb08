"""Progressive resizing (train.progressive): low-resolution epochs first, for speed, growing to the
cell's resolution.  The schedule is FFCV's: a linear ramp from start_resolution at epoch 1 to the
cell's resolution at end_epoch; the two ends exact, the sizes between rounded to a multiple of 8."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from resomap.core.config import Progressive

MULTIPLE = 8


def epoch_resolution(progressive: Progressive | None, epoch: int, full: int) -> int:
    """The side the train images have in `epoch` (1-based)."""
    if progressive is None or epoch >= progressive.end_epoch:
        return full
    start = progressive.start_resolution
    if epoch <= 1:
        return start
    share = (epoch - 1) / (progressive.end_epoch - 1)
    ramped = start + share * (full - start)
    return min(full, max(start, round(ramped / MULTIPLE) * MULTIPLE))


def resize_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> uint8 (B, 3, size, size), bilinear and antialiased on the device (as
    prepare's resize antialiases); the same tensor when already that size."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized.round_().clamp_(0, 255).to(torch.uint8).contiguous(memory_format=torch.channels_last)
