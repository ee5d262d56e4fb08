"""Peak memory of a piece of work: the CUDA allocator's peak on GPU, resident-set growth on CPU."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MB = 2**20


@dataclass
class PeakMemory:
    """Filled in when the `measure_peak_memory` block ends."""

    allocated_mb: float | None = None  # GPU: tensors; CPU: growth of the resident set
    reserved_mb: float | None = None  # GPU: what the caching allocator holds; CPU: None
    method: str = ""


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
    """Peak memory used by the block, above what was in use when it started."""
    result = PeakMemory()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        yield result
        torch.cuda.synchronize(device)
        result.allocated_mb = (torch.cuda.max_memory_allocated(device) - start) / MB
        result.reserved_mb = torch.cuda.max_memory_reserved(device) / MB
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
