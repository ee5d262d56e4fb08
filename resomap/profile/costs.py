"""profile: what a model costs at a resolution, measured the way timm's benchmark.py does:
warm-up, device synchronisation (CUDA events on GPU), many repeats, median with spread,
out-of-memory back-off recorded in the results, and the conditions stored beside every number."""

from __future__ import annotations

import copy
import platform
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from resomap.core.config import Params
from resomap.core.device import amp_dtype, autocast, memory_format, numerics
from resomap.core.oom import with_oom_backoff
from resomap.optim.optimizers import build_optimizer
from resomap.profile.energy import driver_version, measure_energy
from resomap.profile.flops import FLOPS_CONVENTION, count_flops, count_params, model_size_mb
from resomap.profile.memory import PeakMemory, measure_peak_memory
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
    """Batch-1 latency (with samples), throughput at the inference batch, peak memory, energy.

    Each measurement runs inside one autocast context, entered once around its warm-up and its
    timed calls: autocast caches its low-precision copies of the weights until the context exits,
    so the weights are cast once, in the warm-up, not again in every timed call (a deployed AMP
    model casts them once too). The cached copies stay in use and count in the throughput
    block's memory."""
    model.eval()
    single = _input(1, resolution, setup)
    with torch.no_grad(), autocast(setup.device, dtype):
        samples = time_calls_ms(lambda: model(single), setup.device, setup.warmup, setup.repeats, setup.min_seconds)
    metrics = summarise_latency(samples)

    def throughput(batch: int) -> dict:
        x = _input(batch, resolution, setup)

        def forward() -> None:
            model(x)

        with torch.no_grad(), autocast(setup.device, dtype):
            with measure_peak_memory(setup.device) as peak:
                batch_ms = _batch_call_ms(forward, setup, peak)
            result = {"throughput_img_s": round(batch / batch_ms * 1e3, 2), **_memory_keys("", peak, model)}
            result.update(measure_energy(forward, batch, setup.device))
        return result

    measured, batch, backoffs = with_oom_backoff(throughput, setup.batch_size, setup.device)
    metrics.update(measured, throughput_batch_size=batch, throughput_backoffs=backoffs)
    return metrics, samples


def _batch_call_ms(fn: Callable[[], None], setup: ProfileSetup, peak: PeakMemory) -> float:
    """Median time of `fn` over `batch_repeats` calls after BATCH_WARMUP untimed ones, inside a
    `measure_peak_memory` block whose peak leaves out the warm-up's transients: all warm-up calls
    but the last run before the peak restarts (cuDNN autotuning, lazily created state), the last
    after it (on CUDA it takes back from the driver what the restart released, so no cudaMalloc
    lands in a timed call; on CPU the restart does nothing)."""
    for _ in range(BATCH_WARMUP - 1):
        fn()
    peak.warmed_up()
    return statistics.median(time_calls_ms(fn, setup.device, 1, setup.batch_repeats))


def training_optimizer(model: nn.Module, setup: ProfileSetup) -> torch.optim.Optimizer:
    """The train stage's optimizer (resomap/optim/optimizers.py, as `optimizer_for` builds it from
    params.train: class, parameter groups, momentum, Nesterov, fused on CUDA); the learning rate
    does not change the cost, so a fixed one keeps train.lr out of profile's params."""
    return build_optimizer(
        model, setup.optimizer, lr=1e-3, momentum=setup.momentum, weight_decay=setup.weight_decay, device=setup.device
    )


def training_costs(model: nn.Module, resolution: int, setup: ProfileSetup, dtype) -> dict:
    """Forward + backward + optimizer step at the train batch size, on a copy of the model, the way
    the train stage steps (resomap/train/step.py): its optimizer (whose state is part of the
    step's memory), autocast entered per step, and fp16's loss scaling."""
    model = copy.deepcopy(model).train()

    def measure(batch: int) -> dict:
        # a fresh optimizer per attempt: after an out-of-memory halving its state is created
        # again inside this attempt's memory block, so it counts
        optimizer = training_optimizer(model, setup)
        optimizer.zero_grad(set_to_none=True)  # nor do a failed attempt's gradients sit in the baseline
        scaler = torch.amp.GradScaler(setup.device.type, enabled=dtype == torch.float16)
        x = _input(batch, resolution, setup)
        y = torch.randint(0, 2, (batch,), device=setup.device)

        def step() -> None:
            with autocast(setup.device, dtype):
                loss = F.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)

        with measure_peak_memory(setup.device) as peak:
            step_ms = _batch_call_ms(step, setup, peak)
        return {"train_throughput_img_s": round(batch / step_ms * 1e3, 2), **_memory_keys("train_", peak, model)}

    measured, batch, backoffs = with_oom_backoff(measure, setup.train_batch_size, setup.device)
    return {**measured, "train_batch_size": batch, "train_backoffs": backoffs}


def _memory_keys(prefix: str, peak: PeakMemory, model: nn.Module) -> dict:
    """peak = weights + growth during the block, for allocated and reserved alike (the same
    baseline); activation = the allocated growth alone."""
    weights = model_size_mb(model)
    keys = {
        f"{prefix}peak_memory_mb": round(weights + peak.allocated_mb, 4),
        f"{prefix}peak_memory_reserved_mb": None if peak.reserved_mb is None else round(weights + peak.reserved_mb, 4),
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
        **numerics(device),  # dtype float32 may still mean TF32 matmuls on a GPU: `tf32` says
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
