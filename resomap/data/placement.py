"""Where the training arrays live: GPU memory when they fit, else host memory.

Either way a batch reaches the device without a host synchronisation. Host-resident arrays stay
plain (pageable) CPU tensors; each batch is gathered into one of two small pinned buffers and
copied on a side CUDA stream while the GPU still computes the previous batch (HostBatches).
RESOMAP_DATA_PLACEMENT=auto|device|host forces either place (auto: the device when the images
take at most GPU_SHARE of the free GPU memory); the place and why are recorded in
`TrainingSplit.placement` for the train stage's metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from resomap.core.device import upload
from resomap.core.environment import PLACEMENT_ENV, placement_choice
from resomap.core.errors import ResoMapError
from resomap.data.prepared import Split

GPU_SHARE = 0.5  # of the free GPU memory at most; the rest is for activations and cudnn workspaces


@dataclass(frozen=True)
class Placement:
    where: str  # "cpu" (training on the CPU), "device" (GPU memory) or "host" (pinned per-batch copies)
    reason: str


class Copies(Protocol):
    """Asynchronous copies of gathered host buffers to the device (CudaCopies; the tests plant a
    deferred one on the CPU)."""

    def copy(self, tensors: tuple[torch.Tensor, ...]) -> tuple[tuple[torch.Tensor, ...], Any]:
        """Queue the copies; the device tensors (usable by the compute stream) and an event that
        completes once the copies no longer read the host buffers."""

    def wait(self, event: Any) -> None:
        """Block the host until `event` completed."""


class CudaCopies:
    """Copies on a side stream, so they overlap the compute stream's kernels. The compute stream
    waits for each copy's event before it uses the batch, and each batch is recorded as used by
    the compute stream (record_stream), so the caching allocator does not hand its memory to a
    later copy while kernels still read it."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stream = torch.cuda.Stream(device)

    def copy(self, tensors: tuple[torch.Tensor, ...]) -> tuple[tuple[torch.Tensor, ...], torch.cuda.Event]:
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.stream):
            copied = tuple(t.to(self.device, non_blocking=True) for t in tensors)
            event = torch.cuda.Event()
            event.record(self.stream)
        compute.wait_event(event)
        for tensor in copied:
            tensor.record_stream(compute)
        return copied, event

    def wait(self, event: torch.cuda.Event) -> None:
        event.synchronize()


class HostBatches:
    """Batches of host-resident arrays: `images[ids]` and `labels[ids]` gathered with index_select
    into one of two reusable buffers (pinned on CUDA) and handed to `copies`. A buffer is written
    again only after the event of its previous copy completed, so the CPU gathers batch n + 1 while
    batch n is still in flight, and never overwrites a buffer a copy still reads."""

    SLOTS = 2

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, copies: Copies, *, pin: bool):
        self.images, self.labels, self.copies, self.pin = images, labels, copies, pin
        channels_last = images.ndim == 4 and images.is_contiguous(memory_format=torch.channels_last)
        self._format = torch.channels_last if channels_last else torch.contiguous_format  # images[ids]'s layout
        self._buffers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * self.SLOTS
        self._in_flight: list[Any] = [None] * self.SLOTS  # the event of the copy still reading each buffer
        self._next = 0

    def __call__(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        slot = self._next
        self._next = (slot + 1) % self.SLOTS
        if self._in_flight[slot] is not None:
            self.copies.wait(self._in_flight[slot])
            self._in_flight[slot] = None
        images, labels = self._buffer(slot, len(ids))
        x = torch.index_select(self.images, 0, ids, out=images[: len(ids)])
        y = torch.index_select(self.labels, 0, ids, out=labels[: len(ids)])
        (x, y), self._in_flight[slot] = self.copies.copy((x, y))
        return x, y

    def _buffer(self, slot: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The slot's buffers, (re)allocated when a batch is larger than any before (its copy has completed)."""
        buffers = self._buffers[slot]
        if buffers is None or len(buffers[1]) < count:
            images = torch.empty((count, *self.images.shape[1:]), dtype=self.images.dtype,
                                 pin_memory=self.pin, memory_format=self._format)
            labels = torch.empty((count, *self.labels.shape[1:]), dtype=self.labels.dtype, pin_memory=self.pin)
            buffers = self._buffers[slot] = (images, labels)
        return buffers


@dataclass(frozen=True)
class TrainingSplit(Split):
    """A split where the train loop reads it; `batch` gathers from it."""

    placement: Placement = Placement("cpu", "training on the CPU")
    host_batches: HostBatches | None = None


def training_memory(split: Split, device: torch.device) -> TrainingSplit:
    """The split's images and labels where the train loop reads them (masks are not needed), and
    where that is and why (`.placement`, for the train metrics)."""
    choice = placement_choice()
    if device.type != "cuda":
        note = f" ({PLACEMENT_ENV}={choice} applies on a GPU only)" if choice != "auto" else ""
        return TrainingSplit(split.images, split.labels, None, placement=Placement("cpu", "training on the CPU" + note))
    free_bytes, _ = torch.cuda.mem_get_info(device)
    images = split.images
    size_gib, free_gib = images.numel() * images.element_size() / 2**30, free_bytes / 2**30
    fits = images.numel() * images.element_size() <= GPU_SHARE * free_bytes
    if choice == "device" or (choice == "auto" and fits):
        reason = f"{PLACEMENT_ENV}=device" if choice == "device" else (
            f"training images ({size_gib:.1f} GiB) fit in {GPU_SHARE:.0%} of free GPU memory ({free_gib:.1f} GiB)")
        try:
            placed = TrainingSplit(images.to(device), split.labels.to(device), None, placement=Placement("device", reason))
        except torch.OutOfMemoryError:
            raise ResoMapError(
                f"{PLACEMENT_ENV}=device but the training images ({size_gib:.1f} GiB) do not fit in GPU memory "
                f"({free_gib:.1f} GiB free): use {PLACEMENT_ENV}=auto or host"
            ) from None
        return placed
    reason = f"{PLACEMENT_ENV}=host" if choice == "host" else (
        f"training images ({size_gib:.1f} GiB) exceed {GPU_SHARE:.0%} of free GPU memory ({free_gib:.1f} GiB)")
    print(f"{reason}: kept in host memory, each batch gathered into pinned buffers and copied asynchronously", flush=True)
    host_batches = HostBatches(images, split.labels, CudaCopies(device), pin=True)
    return TrainingSplit(images, split.labels, None, placement=Placement("host", reason), host_batches=host_batches)


def batch(split: Split, ids: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of `ids` (CPU indices) on `device`: the ids are copied once where the
    arrays already are; host-resident arrays of a TrainingSplit go through its double-buffered
    pinned gather, those of a plain Split are gathered and uploaded as they are."""
    if isinstance(split, TrainingSplit) and split.host_batches is not None and device.type == "cuda":
        return split.host_batches(ids)
    if split.images.device.type == device.type:
        ids = upload(ids, split.images.device)
        return split.images[ids], split.labels[ids]
    return upload(split.images[ids], device), upload(split.labels[ids], device)
