"""Peak memory of a piece of work: the CUDA allocator's peak on GPU, resident-set growth on CPU.

Both figures are growth over one baseline, what was in use when the block started: allocated
(tensors) and reserved (what the caching allocator holds from the driver). The caller adds the
weights (resomap/profile/costs.py)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MB = 2**20


@dataclass
class PeakMemory:
    """Filled in when the `measure_peak_memory` block ends; growth over the block's baseline."""

    allocated_mb: float | None = None  # GPU: tensors; CPU: growth of the resident set
    reserved_mb: float | None = None  # GPU: what the caching allocator holds; CPU: None
    method: str = ""
    device: torch.device | None = field(default=None, repr=False)

    def warmed_up(self) -> None:
        """Call inside the block after its warm-up calls. On CUDA the peaks restart from what the
        warm-up left in place: state it created and kept (optimizer buffers, autocast's weight
        copies, cuBLAS workspaces) stays above the baseline and counts, while what it used once
        and freed (cuDNN autotuning's trial workspaces, with cudnn.benchmark on) does not; the
        cache it left is released first, so the reserved peak is not the trials' either. On CPU
        nothing changes: the resident set keeps freed pages, so only growth from the block's start
        shows the work's memory (and the CPU has no autotuning to exclude)."""
        if self.device is None or self.device.type != "cuda":
            return
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class _RssSampler(threading.Thread):
    """Samples the resident set every millisecond; torch kernels release the GIL, so it keeps up."""

    def __init__(self):
        super().__init__(daemon=True)
        self.baseline = self.peak = _rss_bytes()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.001):
            self.peak = max(self.peak, _rss_bytes())


@contextmanager
def measure_peak_memory(device: torch.device) -> Iterator[PeakMemory]:
    """Peak memory used by the block, above what was in use when it started. On CUDA the cache is
    released first, so the reserved baseline is the memory live tensors hold (not the blocks an
    earlier measurement left cached) and reserved growth is what the block made the allocator take."""
    result = PeakMemory(device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        start_allocated = torch.cuda.memory_allocated(device)
        start_reserved = torch.cuda.memory_reserved(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        torch.cuda.synchronize(device)
        result.allocated_mb = max(0, torch.cuda.max_memory_allocated(device) - start_allocated) / MB
        result.reserved_mb = max(0, torch.cuda.max_memory_reserved(device) - start_reserved) / MB
        result.method = "cuda_allocator"
        return
    sampler = _RssSampler()
    sampler.start()
    try:
        yield result
    finally:
        sampler.done.set()
        sampler.join()
    result.allocated_mb = max(0, max(sampler.peak, _rss_bytes()) - sampler.baseline) / MB
    result.method = "rss_growth"
