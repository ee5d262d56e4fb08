"""profile: what a model costs at a resolution, measured with warm-up, synchronisation and repeats."""

from __future__ import annotations

import platform
import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resomap.config import ProfileParams


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_size_mb(model: nn.Module) -> float:
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


@torch.no_grad()
def count_flops(model: nn.Module, resolution: int) -> int:
    """Forward FLOPs for one image. torch's counter counts a multiply-add as 2 FLOPs."""
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, resolution, resolution))
    return counter.get_total_flops()


@torch.no_grad()
def time_forward_ms(model: nn.Module, batch: torch.Tensor, warmup: int, repeats: int) -> list[float]:
    """Wall time of each of `repeats` forwards after `warmup` untimed ones; CUDA events on GPU."""
    model.eval()
    for _ in range(warmup):
        model(batch)
    samples = []
    for _ in range(repeats):
        if batch.is_cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(batch)
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            start_s = time.perf_counter()
            model(batch)
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


def conditions(device: torch.device, params: ProfileParams) -> dict:
    """What the numbers depend on, stored beside them."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "device": device.type,
        "device_name": name,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "dtype": "float32",
        "latency_batch_size": 1,
        "throughput_batch_size": params.batch_size,
        "warmup": params.warmup,
        "repeats": params.repeats,
    }


def profile_model(model: nn.Module, resolution: int, params: ProfileParams, device: torch.device) -> tuple[dict, list[float]]:
    """Cost metrics with units in their keys, and the raw batch-1 latency samples."""
    metrics = {"params": count_params(model), "model_size_mb": round(model_size_mb(model), 4)}
    metrics["flops"] = count_flops(model, resolution)
    model = model.to(device)
    single = torch.randn(1, 3, resolution, resolution, device=device)
    samples = time_forward_ms(model, single, params.warmup, params.repeats)
    metrics.update(summarise_latency(samples))
    batch = torch.randn(params.batch_size, 3, resolution, resolution, device=device)
    batch_ms = statistics.median(time_forward_ms(model, batch, params.warmup, max(3, params.repeats // 4)))
    metrics["throughput_img_s"] = round(params.batch_size / batch_ms * 1e3, 2)
    metrics.update(conditions(device, params))
    return metrics, samples
