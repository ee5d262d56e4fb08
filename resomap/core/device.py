"""Runtime placement: which device and numerics a stage uses. Not a result param (docs/design.md, DVC rules)."""

from __future__ import annotations

import contextlib
import os

import torch

from resomap.core.environment import DEVICE_ENV, device_choice, requested_processes
from resomap.core.errors import ResoMapError
from resomap.core.gpu_claim import claim_gpu, visible_gpu_ids


def pick_device() -> torch.device:
    """RESOMAP_DEVICE=auto|cpu|cuda|cuda:N. auto is the CPU without a GPU, else a GPU this process
    claims (resomap/core/gpu_claim.py), so concurrent stages spread over the host's GPUs. A chosen
    GPU becomes the current device: CUDA events and streams follow it."""
    choice = device_choice()
    if choice == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if choice == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ResoMapError(f"{DEVICE_ENV}={choice} but no CUDA device is visible: unset it or use cpu")
    index = _claimed_gpu() if choice in ("auto", "cuda") else torch.device(choice).index
    if index >= torch.cuda.device_count():
        raise ResoMapError(
            f"{DEVICE_ENV}={choice} but only {torch.cuda.device_count()} GPU(s) are visible: "
            f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}, or unset it"
        )
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def _claimed_gpu() -> int:
    """The GPU this process claims; 0 with one GPU, and under torchrun (or about to relaunch under
    it), where each rank takes its LOCAL_RANK. When every GPU is claimed already, the stage shares
    the first and says so."""
    count = torch.cuda.device_count()
    if count == 1 or "LOCAL_RANK" in os.environ or requested_processes() > 1:
        return 0
    index = claim_gpu(visible_gpu_ids(count))
    if index is None:
        print(f"all {count} GPUs are claimed by other stages on this host: sharing cuda:0", flush=True)
        return 0
    return index


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for train.amp, or None for fp32. auto = bf16 on CUDA when supported, off on CPU."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "fp16":
        return torch.float16
    if mode == "auto" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def configure_backends(device: torch.device, *, compiling: bool = False) -> None:
    """cudnn autotuning on GPU (input shapes are fixed per cell); deterministic kernels on CPU."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif compiling:
        torch.use_deterministic_algorithms(True)  # sets the compiler's flag too: its kernels are generated
    else:
        # the same ATen switch that torch.use_deterministic_algorithms sets; that call also imports
        # torch._inductor (1.3 s of every stage's start-up) only to set the compiler's flag
        torch._C._set_deterministic_algorithms(True)


def upload(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on `device` without stalling the host: pinned, then copied asynchronously
    (a plain .to() from pageable memory waits for the GPU to drain its queue)."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def memory_format(channels_last: bool) -> torch.memory_format:
    """Channels-last pays on GPUs (tensor cores) and on CPUs too (oneDNN: ~25% faster training here)."""
    return torch.channels_last if channels_last else torch.contiguous_format
