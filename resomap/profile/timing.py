"""Timing the way timm's benchmark does: warm-up, CUDA events on GPU (no host sync inside the timed
region), a monotonic clock on CPU, many repeats, median with spread."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def time_calls_ms(
    fn: Callable[[], object], device: torch.device, warmup: int, repeats: int, min_seconds: float = 0.0
) -> list[float]:
    """Wall time of each call after `warmup` untimed ones, for at least `repeats` calls and
    `min_seconds`: CUDA events on GPU (no host sync inside the timed region), a monotonic clock on CPU."""
    for _ in range(warmup):
        fn()
    samples = []
    start_all = time.perf_counter()
    while len(samples) < repeats or time.perf_counter() - start_all < min_seconds:
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            start_s = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - start_s) * 1e3)
    return samples


def summarise_latency(samples_ms: list[float]) -> dict[str, float]:
    q1, _, q3 = statistics.quantiles(samples_ms, n=4, method="inclusive")
    p90 = statistics.quantiles(samples_ms, n=10, method="inclusive")[-1]
    return {
        "latency_ms": round(statistics.median(samples_ms), 4),
        "latency_ms_p90": round(p90, 4),
        "latency_ms_min": round(min(samples_ms), 4),
        "latency_ms_iqr": round(q3 - q1, 4),
    }
