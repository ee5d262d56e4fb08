"""profile: what a model costs at a resolution, measured the way timm's benchmark.py does:
warm-up, device synchronisation (CUDA events on GPU), many repeats, median with spread,
out-of-memory back-off recorded in the results, and the conditions stored beside every number."""

from __future__ import annotations

import copy
import platform
import statistics
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from resomap.core.config import Params
from resomap.core.device import amp_dtype, autocast, memory_format
from resomap.core.oom import with_oom_backoff
from resomap.optim.optimizers import build_optimizer
from resomap.profile.energy import driver_version, measure_energy
from resomap.profile.flops import FLOPS_CONVENTION, count_flops, count_params, model_size_mb
from resomap.profile.memory import measure_peak_memory
from resomap.profile.timing import summarise_latency, time_calls_ms

BATCH_WARMUP = 2  # untimed batch calls before throughput and training-step timing


@dataclass(frozen=True)
class ProfileSetup:
    """How one model is measured: the profile params plus the train params that set training cost."""

    device: torch.device
    batch_size: int  # inference batch for throughput
    train_batch_size: int
    optimizer: str
    momentum: float
    weight_decay: float
    amp: str
    channels_last: bool
    warmup: int
    repeats: int  # batch-1 latency: at least this many timed calls...
    min_seconds: float = 1.0  # ...and at least this long, so a noisy machine gets more samples
    batch_repeats: int = 5  # throughput and training-step timing: each call already averages a batch


def setup_from_params(params: Params, device: torch.device) -> ProfileSetup:
    """The profile params plus the train keys dvc.yaml declares for profile (training-step cost)."""
    return ProfileSetup(
        device=device,
        batch_size=params.profile.batch_size,
        train_batch_size=params.train.batch_size,
        optimizer=params.train.optimizer,
        momentum=params.train.momentum,
        weight_decay=params.train.weight_decay,
        amp=params.train.amp,
        channels_last=params.train.channels_last,
        warmup=params.profile.warmup,
        repeats=params.profile.repeats,
        min_seconds=params.profile.min_seconds,
        batch_repeats=params.profile.batch_repeats,
    )


def _input(batch: int, resolution: int, setup: ProfileSetup) -> torch.Tensor:
    x = torch.randn(batch, 3, resolution, resolution, device=setup.device)
    return x.contiguous(memory_format=memory_format(setup.channels_last))


def inference_costs(model: nn.Module, resolution: int, setup: ProfileSetup, dtype) -> tuple[dict, list[float]]:
    """Batch-1 latency (with samples), throughput at the inference batch, peak memory, energy."""
    model.eval()

    @torch.no_grad()
    def forward(x: torch.Tensor) -> None:
        with autocast(setup.device, dtype):
            model(x)

    single = _input(1, resolution, setup)
    samples = time_calls_ms(lambda: forward(single), setup.device, setup.warmup, setup.repeats, setup.min_seconds)
    metrics = summarise_latency(samples)

    def throughput(batch: int) -> dict:
        x = _input(batch, resolution, setup)
        with measure_peak_memory(setup.device) as peak:
            batch_ms = statistics.median(time_calls_ms(lambda: forward(x), setup.device, BATCH_WARMUP, setup.batch_repeats))
        result = {"throughput_img_s": round(batch / batch_ms * 1e3, 2), **_memory_keys("", peak, model)}
        result.update(measure_energy(lambda: forward(x), batch, setup.device))
        return result

    measured, batch, backoffs = with_oom_backoff(throughput, setup.batch_size, setup.device)
    metrics.update(measured, throughput_batch_size=batch, throughput_backoffs=backoffs)
    return metrics, samples


def training_costs(model: nn.Module, resolution: int, setup: ProfileSetup, dtype) -> dict:
    """Forward + backward + optimizer step at the train batch size, on a copy of the model, with the
    train stage's optimizer (its state is part of the step's memory); the learning rate does not
    change the cost, so a fixed one keeps train.lr out of profile's params."""
    model = copy.deepcopy(model).train()
    optimizer = build_optimizer(
        model, setup.optimizer, lr=1e-3, momentum=setup.momentum, weight_decay=setup.weight_decay, device=setup.device
    )

    def measure(batch: int) -> dict:
        x = _input(batch, resolution, setup)
        y = torch.randint(0, 2, (batch,), device=setup.device)

        def step() -> None:
            with autocast(setup.device, dtype):
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        with measure_peak_memory(setup.device) as peak:
            step_ms = statistics.median(time_calls_ms(step, setup.device, BATCH_WARMUP, setup.batch_repeats))
        return {"train_throughput_img_s": round(batch / step_ms * 1e3, 2), **_memory_keys("train_", peak, model)}

    measured, batch, backoffs = with_oom_backoff(measure, setup.train_batch_size, setup.device)
    return {**measured, "train_batch_size": batch, "train_backoffs": backoffs}


def _memory_keys(prefix: str, peak, model: nn.Module) -> dict:
    """peak = weights + growth during the block; activation = the growth alone."""
    weights = model_size_mb(model)
    keys = {
        f"{prefix}peak_memory_mb": round(weights + peak.allocated_mb, 4),
        f"{prefix}peak_memory_reserved_mb": None if peak.reserved_mb is None else round(peak.reserved_mb, 4),
    }
    if not prefix:
        keys["activation_memory_mb"] = round(peak.allocated_mb, 4)
        keys["memory_method"] = peak.method
    return keys


def conditions(setup: ProfileSetup) -> dict:
    """What the numbers depend on, stored beside them."""
    device = setup.device
    cuda = device.type == "cuda"
    return {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine()),
        "driver_version": driver_version(device),
        "cuda_version": torch.version.cuda if cuda else None,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "channels_last": setup.channels_last,
        "latency_batch_size": 1,
        "warmup": setup.warmup,
        "repeats": setup.repeats,
        "min_seconds": setup.min_seconds,
        "batch_repeats": setup.batch_repeats,
        "flops_convention": FLOPS_CONVENTION,
    }


def precisions(setup: ProfileSetup) -> dict[str, torch.dtype | None]:
    """fp32 always; the training AMP dtype too when train.amp uses one on this device."""
    dtype = amp_dtype(setup.amp, setup.device)
    return {"fp32": None} if dtype is None else {"fp32": None, str(dtype).removeprefix("torch."): dtype}


def profile_model(model: nn.Module, resolution: int, setup: ProfileSetup) -> tuple[dict, dict[str, list[float]]]:
    """Flat cost metrics with units in their keys (fp32 at top level, the AMP dtype under `amp.`)
    and the raw batch-1 latency samples per precision."""
    model = model.to(setup.device, memory_format=memory_format(setup.channels_last))
    metrics = {"params": count_params(model), "model_size_mb": round(model_size_mb(model), 4)}
    metrics["flops"] = count_flops(model, resolution)
    samples = {}
    for name, dtype in precisions(setup).items():
        costs, samples[name] = inference_costs(model, resolution, setup, dtype)
        costs.update(training_costs(model, resolution, setup, dtype))
        if dtype is None:
            metrics.update(costs, dtype="float32")
        else:
            metrics["amp"] = {**costs, "dtype": name}
    metrics.update(conditions(setup))
    return metrics, samples
