"""Where the training arrays live: GPU memory when they fit, else pinned host memory.

Either way a batch reaches the device without a host synchronisation: the CPU queues the next
batch's gather and copy while the GPU still computes the current one (asynchronous prefetch).
"""

from __future__ import annotations

import torch

from resomap.data.prepared import Split
from resomap.device import upload

GPU_SHARE = 0.5  # of the free GPU memory at most; the rest is for activations and cudnn workspaces


def training_memory(split: Split, device: torch.device) -> Split:
    """The split's images and labels where the train loop reads them (masks are not needed)."""
    if device.type != "cuda":
        return Split(split.images, split.labels, None)
    free_bytes, _ = torch.cuda.mem_get_info(device)
    images = split.images
    if images.numel() * images.element_size() <= GPU_SHARE * free_bytes:
        images = images.to(device)
    else:
        print(f"training images ({images.numel() / 2**30:.1f} GiB) exceed {GPU_SHARE:.0%} of free GPU memory: kept in pinned host memory", flush=True)
        images = images.pin_memory()
    return Split(images, split.labels.to(device), None)


def gather(tensor: torch.Tensor, ids: torch.Tensor, device: torch.device) -> torch.Tensor:
    """tensor[ids] on `device`; ids are CPU indices. A host-resident tensor is gathered on the CPU
    into pinned memory and copied asynchronously."""
    if tensor.device.type == device.type:
        return tensor[upload(ids, tensor.device)]
    return upload(tensor[ids], device)
