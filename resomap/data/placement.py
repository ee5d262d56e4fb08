"""Where the training arrays live: GPU memory when they fit, else the host's memory map.

Either way a batch reaches the device without a host synchronisation. Host-resident arrays stay
the memory-mapped (pageable) split; a background thread gathers each batch of the epoch ahead into
one of two small pinned buffers and copies it on a side CUDA stream while the GPU still computes
the previous batch (resomap/data/prefetch.py); training on the CPU gathers ahead the same way.
RESOMAP_DATA_PLACEMENT=auto|device|host forces either place (auto: the device when the images
take at most GPU_SHARE of the free GPU memory); the place and why are printed and recorded in
`TrainingSplit.placement` for the train stage's metrics.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from resomap.core.device import upload
from resomap.core.environment import PLACEMENT_ENV, placement_choice
from resomap.core.errors import ResoMapError
from resomap.data.prefetch import Copies, CudaCopies, GatheredBatch, Prefetcher
from resomap.data.prepared import Split

BatchSource = Split | GatheredBatch  # what a training batch is read from

GPU_SHARE = 0.5  # of the free GPU memory at most; the rest is for activations and cudnn workspaces


@dataclass(frozen=True)
class Placement:
    where: str  # "cpu" (training on the CPU), "device" (GPU memory) or "host" (gathered ahead, pinned, copied)
    reason: str


@dataclass(frozen=True)
class TrainingSplit(Split):
    """A split where the train loop reads it; `epoch_batches` serves an epoch from it."""

    placement: Placement = Placement("cpu", "training on the CPU")
    copies: Copies | None = None  # host arrays on a GPU: how gathered batches reach it


def training_memory(split: Split, device: torch.device) -> TrainingSplit:
    """The split's images and labels where the train loop reads them (masks are not needed), and
    where that is and why (`.placement`, for the train metrics)."""
    choice = placement_choice()
    if device.type != "cuda":
        note = f" ({PLACEMENT_ENV}={choice} applies on a GPU only)" if choice != "auto" else ""
        reason = "training on the CPU, each batch gathered ahead from the memory-mapped split" + note
        return TrainingSplit(split.images, split.labels, None, split.rows_file, placement=Placement("cpu", reason))
    free_bytes, _ = torch.cuda.mem_get_info(device)
    images = split.images
    size_gib, free_gib = images.numel() * images.element_size() / 2**30, free_bytes / 2**30
    fits = images.numel() * images.element_size() <= GPU_SHARE * free_bytes
    if choice == "device" or (choice == "auto" and fits):
        reason = f"{PLACEMENT_ENV}=device" if choice == "device" else (
            f"training images ({size_gib:.1f} GiB) fit in {GPU_SHARE:.0%} of free GPU memory ({free_gib:.1f} GiB)")
        try:
            return TrainingSplit(images.to(device), split.labels.to(device), None, placement=Placement("device", reason))
        except torch.OutOfMemoryError:
            raise ResoMapError(
                f"{PLACEMENT_ENV}=device but the training images ({size_gib:.1f} GiB) do not fit in GPU memory "
                f"({free_gib:.1f} GiB free): use {PLACEMENT_ENV}=auto or host"
            ) from None
    reason = f"{PLACEMENT_ENV}=host" if choice == "host" else (
        f"training images ({size_gib:.1f} GiB) exceed {GPU_SHARE:.0%} of free GPU memory ({free_gib:.1f} GiB)")
    reason += ": memory-mapped on the host, each batch gathered ahead into pinned buffers and copied asynchronously"
    return TrainingSplit(images, split.labels, None, split.rows_file, placement=Placement("host", reason), copies=CudaCopies(device))


def epoch_batches(split: Split, plan: Sequence[torch.Tensor], read_unit: int = 1) -> AbstractContextManager[Iterator[BatchSource]]:
    """What each of an epoch's batches is read from, given the ids each reads (`plan`): the split
    itself where it lives on the training device, else batches gathered ahead by a background
    thread, a memory-mapped split's next batch read ahead in aligned blocks of `read_unit` images
    (a split that is not a TrainingSplit is read as it is)."""
    if not isinstance(split, TrainingSplit) or split.placement.where == "device":
        return contextlib.nullcontext(itertools.repeat(split, len(plan)))
    readahead = functools.partial(split.rows_file.will_need, unit=read_unit) if split.rows_file is not None else None
    return Prefetcher(split.images, split.labels, plan, split.copies, pin=split.copies is not None, readahead=readahead)


def batch(source: BatchSource, ids: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of `ids` (CPU indices) on `device`: taken from a gathered batch; or
    indexed where the split's arrays already are (the ids copied once); or gathered from the host
    arrays and uploaded (the few batches outside an epoch: compilation, probes, the range test)."""
    if isinstance(source, GatheredBatch):
        return source.take(ids)
    if source.images.device.type == device.type:
        ids = upload(ids, source.images.device)
        return source.images[ids], source.labels[ids]
    return upload(source.images[ids], device), upload(source.labels[ids], device)
