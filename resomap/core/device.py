"""Runtime placement: which device and numerics a stage uses. Not a result param (docs/design.md, DVC rules)."""

from __future__ import annotations

import contextlib
import os

import torch

from resomap.core.environment import DEVICE_ENV, deterministic_mode, device_choice, requested_processes
from resomap.core.errors import ResoMapError
from resomap.core.gpu_claim import claim_gpu, visible_gpu_ids

# cuBLAS reads its workspace size once, at its first call; this fixed one makes its reductions
# deterministic (torch's reproducibility notes)
CUBLAS_WORKSPACE_ENV = "CUBLAS_WORKSPACE_CONFIG"
DETERMINISTIC_CUBLAS_WORKSPACE = ":4096:8"


def pick_device() -> torch.device:
    """RESOMAP_DEVICE=auto|cpu|cuda|cuda:N. auto is the CPU without a GPU, else a GPU this process
    claims (resomap/core/gpu_claim.py), so concurrent stages spread over the host's GPUs. A chosen
    GPU (auto, cuda or cuda:N alike) becomes the current device: CUDA events, streams and
    is_bf16_supported follow it. Under RESOMAP_DETERMINISTIC=1 it fixes cuBLAS's workspace before
    any GPU work (configure_backends does the rest)."""
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
    if deterministic_mode():
        os.environ.setdefault(CUBLAS_WORKSPACE_ENV, DETERMINISTIC_CUBLAS_WORKSPACE)
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
    """The autocast dtype for train.amp, or None for fp32. auto = bf16 on CUDA when the GPU has it
    natively (Ampere or later), fp16 on older GPUs, off on CPU. is_bf16_supported() alone would
    count emulation, which runs a V100 or T4 in slow emulated bf16."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "fp16":
        return torch.float16
    if mode == "auto" and not torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def configure_backends(device: torch.device, *, compiling: bool = False) -> None:
    """On GPU, fast by default: cudnn autotuning (input shapes are fixed per cell) and TF32 matmuls
    and convolutions, so reruns are not bit-identical; RESOMAP_DETERMINISTIC=1 turns both off and
    asks for deterministic kernels, warning (not failing) where torch has none. On CPU,
    deterministic kernels always, and RESOMAP_DETERMINISTIC changes nothing there.

    The TF32 flags are set through the legacy allow_tf32 switches only, which keep torch's newer
    fp32_precision settings in step with them: mixing the two APIs makes torch raise."""
    if device.type == "cuda" and deterministic_mode():
        os.environ.setdefault(CUBLAS_WORKSPACE_ENV, DETERMINISTIC_CUBLAS_WORKSPACE)  # pick_device did, unless bypassed
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        _deterministic_algorithms(compiling, warn_only=True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        _deterministic_algorithms(compiling, warn_only=False)


def _deterministic_algorithms(compiling: bool, *, warn_only: bool) -> None:
    if compiling:
        torch.use_deterministic_algorithms(True, warn_only=warn_only)  # sets the compiler's flag too: its kernels are generated
    else:
        # the same ATen switch that torch.use_deterministic_algorithms sets; that call also imports
        # torch._inductor (1.3 s of every stage's start-up) only to set the compiler's flag
        torch._C._set_deterministic_algorithms(True, warn_only=warn_only)


def numerics(device: torch.device) -> dict[str, bool]:
    """The numerics conditions a stage ran under, to record with its metrics (call it after
    configure_backends): deterministic = deterministic algorithms on (always on CPU; on GPU under
    RESOMAP_DETERMINISTIC=1), deterministic_warn_only = ops without a deterministic kernel warn and
    run anyway (GPU), tf32 = float32 matmuls or convolutions may run in TF32 (allowed, on a GPU
    that has it: compute capability 8.0 or later), cudnn_benchmark = cudnn autotuning picks
    kernels at run time. Only tf32 and cudnn_benchmark are GPU conditions: on CPU they are False."""
    cuda = device.type == "cuda"
    tf32_allowed = torch.backends.cuda.matmul.allow_tf32 or (torch.backends.cudnn.enabled and torch.backends.cudnn.allow_tf32)
    return {
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "tf32": cuda and tf32_allowed and torch.cuda.get_device_capability(device)[0] >= 8,
        "cudnn_benchmark": cuda and torch.backends.cudnn.benchmark,
    }


@contextlib.contextmanager
def true_fp32():
    """Float32 matmuls and convolutions in true fp32 within the block (no TF32, whatever
    configure_backends chose), the TF32 switches restored as they were afterwards, also after an
    error. CPU kernels are untouched: the switches are cuBLAS's and cuDNN's (oneDNN's are left alone)."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    # the legacy switches first (each also sets its fp32_precision), then those strings exactly as they were
    saved = matmul.allow_tf32, cudnn.allow_tf32, matmul.fp32_precision, cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision
    matmul.allow_tf32 = cudnn.allow_tf32 = False
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved[:2]
        matmul.fp32_precision, cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision = saved[2:]


def upload(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on `device` without stalling the host: pinned, then copied asynchronously
    (a plain .to() from pageable memory waits for the GPU to drain its queue). A strided view is
    made contiguous first: pinned as it is, its copy to the GPU would go through a pageable
    contiguous temporary, and wait (contiguous() returns a contiguous tensor itself, at no cost)."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.contiguous().pin_memory().to(device, non_blocking=True)


def memory_format(channels_last: bool) -> torch.memory_format:
    """Channels-last pays on GPUs (tensor cores) and on CPUs too (oneDNN: ~25% faster training here)."""
    return torch.channels_last if channels_last else torch.contiguous_format
