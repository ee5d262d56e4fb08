"""Ask the kernel to read a batch's images from disk before the gather touches them.

A gather from a memory map reads each missing page when it faults: synchronously, one request at
a time. Advising the next batch's rows first (POSIX_FADV_WILLNEED) lets the kernel fetch them in
the background, many requests in flight, while the prefetch thread still gathers the current
batch; a run of consecutive rows (block-shuffled reading, resomap/data/order.py), or rows close
together, goes out as one request. On a split already in the page cache the advice costs a few
system calls a batch."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class MappedRows:
    """Where a memory-mapped array's rows lie in its file."""

    path: Path
    offset: int  # bytes before row 0 (the .npy header)
    row_bytes: int

    @classmethod
    def of(cls, path: Path, array: np.memmap) -> MappedRows:
        return cls(path, array.offset, int(np.prod(array.shape[1:])) * array.itemsize)

    def will_need(self, ids: torch.Tensor, unit: int = 1) -> None:
        """Start reading the rows `ids` into the page cache, without waiting for them (Linux; elsewhere
        a no-op); with `unit` above 1, the whole aligned blocks of `unit` rows they lie in (a
        block-shuffled epoch reads the rest of each block within its window: one sequential read
        now instead of scattered ones later)."""
        if not hasattr(os, "posix_fadvise"):
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for start, stop in byte_ranges(ids.numpy() // unit, self.row_bytes * unit, self.offset):
                os.posix_fadvise(fd, start, stop - start, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)


MERGE_GAP = 128 * 1024  # bytes: about what the kernel's read-around around a fault reads anyway


def byte_ranges(rows: np.ndarray, row_bytes: int, offset: int, gap: int = MERGE_GAP) -> list[tuple[int, int]]:
    """The file's byte ranges (start, stop) holding `rows`, in order, ranges less than `gap` bytes
    apart merged: one system call for many small images, and none of the work in torch (this runs
    in the prefetch thread, where a torch op would start a competing OpenMP team)."""
    rows = np.unique(rows)
    if not len(rows):
        return []
    starts = offset + rows * row_bytes
    stops = starts + row_bytes
    breaks = np.flatnonzero(starts[1:] - stops[:-1] > gap) + 1
    return list(zip(starts[np.r_[0, breaks]].tolist(), stops[np.r_[breaks - 1, len(rows) - 1]].tolist()))
