"""Batches gathered ahead of the train loop, in a background thread.

An epoch's batches are known when it starts (its order is drawn first), so a thread gathers batch
n + 1 from the split (memory-mapped: this is where the disk is read) while the loop trains on
batch n. Each batch's images are gathered in the order the loop asks for them (each image once)
into one of two reusable buffers (pinned on CUDA) and, on CUDA, copied to the device on a side
stream; a buffer is refilled only after the copy that read it completed (on the CPU, once the
loop has asked for the batch after the one it holds). The loop takes its micro-batches from the
gathered batch by id: the values are the split's, byte for byte, so training is bit-identical to
gathering in the loop.

The thread stops at the end of the epoch, when the loop leaves early (an exception, Ctrl-C: the
prefetcher is a context manager), or when a gather fails, whose exception the loop then gets at
its next batch.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from resomap.core.device import upload


class Copies(Protocol):
    """Asynchronous copies of gathered host buffers to the device (CudaCopies; the tests plant a
    deferred one on the CPU)."""

    def copy(self, tensors: tuple[torch.Tensor, ...]) -> tuple[tuple[torch.Tensor, ...], Any]:
        """Queue the copies; the device tensors (usable by the compute stream) and an event that
        completes once the copies no longer read the host buffers."""

    def wait(self, event: Any) -> None:
        """Block the calling thread until `event` completed."""


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


@dataclass(frozen=True)
class GatheredBatch:
    """The images and labels of `ids` (distinct, on the CPU), where the loop trains."""

    ids: torch.Tensor
    images: torch.Tensor
    labels: torch.Tensor

    def take(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows of `ids` (any of the gathered ones, in any order), as indexing the split would
        give them: the buffers themselves when `ids` are the gathered ones in their order (a batch
        of one micro-batch, unmixed, in one process: the usual case), else a gather from them."""
        if torch.equal(ids, self.ids):
            return self.images, self.labels
        sorter = torch.argsort(self.ids)
        positions = sorter[torch.searchsorted(self.ids[sorter], ids)]
        positions = upload(positions, self.images.device)
        return self.images[positions], self.labels[positions]


def _distinct(ids: np.ndarray) -> np.ndarray:
    """`ids` without repeats, in the order of their first appearance (a batch's own images, then
    those of its MixUp/CutMix partners not among them)."""
    _, first = np.unique(ids, return_index=True)
    return ids[np.sort(first)]


def _rows(tensor: torch.Tensor) -> np.ndarray:
    """The tensor as numpy rows in memory order: a channels-last image batch as N x H x W x C."""
    if tensor.ndim == 4 and tensor.is_contiguous(memory_format=torch.channels_last):
        tensor = tensor.permute(0, 2, 3, 1)
    return tensor.numpy()


_END = object()  # the thread's last item: every planned batch was gathered


class Prefetcher:
    """Iterates one GatheredBatch per entry of `plan` (the ids each batch reads, in any order),
    gathered from `images` and `labels` by a background thread; use it as a context manager.
    `readahead(ids)`, when given, is called for each batch while the one before it is gathered
    (resomap/data/readahead.py)."""

    SLOTS = 2

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, plan: Sequence[torch.Tensor],
                 copies: Copies | None = None, *, pin: bool = False, readahead: Callable[[torch.Tensor], None] | None = None):
        self.images, self.labels, self.copies, self.pin, self.readahead = images, labels, copies, pin, readahead
        # allocated here, not in the thread: no torch op may run there (see _gather)
        self._buffers = [self._allocate(max((len(ids) for ids in plan), default=0)) for _ in range(self.SLOTS)]
        self._free: queue.Queue = queue.Queue()  # (slot, the event of the copy still reading it, or None)
        for slot in range(self.SLOTS):
            self._free.put((slot, None))
        self._ready: queue.Queue = queue.Queue()  # gathered batches, then _END or the gather's exception
        self._held: tuple[int, None] | None = None  # on the CPU, the slot the loop trains from
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._gather_plan, args=(list(plan),), name="resomap-prefetch", daemon=True)
        self._thread.start()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> GatheredBatch:
        if self._held is not None:  # the loop is done with the batch it held
            self._free.put(self._held)
            self._held = None
        item = self._ready.get()
        if item is _END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        slot, ids, images, labels = item
        if self.copies is None:
            self._held = (slot, None)
            return GatheredBatch(ids, images, labels)
        (images, labels), event = self.copies.copy((images, labels))
        self._free.put((slot, event))  # refilled once the copy has read it
        return GatheredBatch(ids, images, labels)

    def close(self) -> None:
        """Stop the thread (after the gather it is in, if any) and wait for it."""
        self._stopping.set()
        self._free.put((None, None))  # wakes a thread waiting for a free buffer
        self._thread.join()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _gather_plan(self, plan: list[torch.Tensor]) -> None:
        try:
            for index, ids in enumerate(plan):
                if self.readahead is not None:  # the first batch at once, each next one while this is gathered
                    if index == 0:
                        self.readahead(ids)
                    if index + 1 < len(plan):
                        self.readahead(plan[index + 1])
                slot, event = self._free.get()
                if self._stopping.is_set():
                    return
                if event is not None:
                    self.copies.wait(event)
                self._ready.put((slot, *self._gather(slot, _distinct(ids.numpy()))))
        except BaseException as error:  # noqa: BLE001 - handed to the loop, which raises it
            self._ready.put(error)
            return
        self._ready.put(_END)

    def _gather(self, slot: int, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rows `ids` into the slot's buffers, with numpy's take: single-threaded and without the
        GIL. No torch op runs in this thread: one that goes parallel (a gather, or the fill of a
        new tensor under deterministic algorithms) starts an OpenMP team of this thread's own, and
        with more OpenMP threads than cores libgomp stops spinning and sleeps between parallel
        regions, which halved the training step's speed on 2 cores."""
        outside = ids[(ids < 0) | (ids >= len(self.labels))]
        if len(outside):
            raise IndexError(f"image {outside[0]} is out of range for a split of {len(self.labels)} images")
        images, labels = (buffer[: len(ids)] for buffer in self._buffers[slot])
        for source, target in ((self.images, images), (self.labels, labels)):
            np.take(_rows(source), ids, axis=0, out=_rows(target), mode="clip")  # "raise" would copy through a temporary
        return torch.from_numpy(ids), images, labels

    def _allocate(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A slot's buffers for `count` images, laid out as images[ids] would be (channels-last stays so)."""
        channels_last = self.images.ndim == 4 and self.images.is_contiguous(memory_format=torch.channels_last)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        images = torch.empty((count, *self.images.shape[1:]), dtype=self.images.dtype, pin_memory=self.pin, memory_format=layout)
        labels = torch.empty((count, *self.labels.shape[1:]), dtype=self.labels.dtype, pin_memory=self.pin)
        return images, labels
