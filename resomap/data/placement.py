"""Where the training arrays live: GPU memory when they fit, else pinned host memory.

Either way a batch reaches the device without a host synchronisation: the CPU queues the next
batch's gather and copy while the GPU still computes the current one (asynchronous prefetch).
"""

from __future__ import annotations

import torch

from resomap.core.device import upload
from resomap.data.prepared import Split

GPU_SHARE = 0.5  # of the free GPU memory at most; the rest is for activations and cudnn workspaces


def training_memory(split: Split, device: torch.device) -> Split:
    """The split's images and labels where the train loop reads them (masks are not needed)."""
    if device.type != "cuda":
        return Split(split.images, split.labels, None)
    free_bytes, _ = torch.cuda.mem_get_info(device)
    images = split.images
    if images.numel() * images.element_size() <= GPU_SHARE * free_bytes:
        return Split(images.to(device), split.labels.to(device), None)
    print(f"training images ({images.numel() / 2**30:.1f} GiB) exceed {GPU_SHARE:.0%} of free GPU memory: kept in pinned host memory", flush=True)
    return Split(images.pin_memory(), split.labels, None)


def batch(split: Split, ids: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of `ids` (CPU indices) on `device`: the ids are copied once where the
    arrays already are; host-resident arrays are gathered on the CPU and copied asynchronously."""
    if split.images.device.type == device.type:
        ids = upload(ids, split.images.device)
        return split.images[ids], split.labels[ids]
    return upload(split.images[ids], device), upload(split.labels[ids], device)
