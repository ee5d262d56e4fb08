"""The runtime variables: where, how wide and how reproducibly a stage runs, never what it computes (docs/params.md).

Each is read here, once, and a bad value stops with one line listing the valid ones. torch is not
imported, so the check stage validates them all in a fraction of a second before any work.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from resomap.core.errors import ResoMapError

DEVICE_ENV = "RESOMAP_DEVICE"
PROCS_ENV = "RESOMAP_NPROC"
STAGE_LOG_ENV = "RESOMAP_STAGE_LOG"
DETERMINISTIC_ENV = "RESOMAP_DETERMINISTIC"
PLACEMENT_ENV = "RESOMAP_DATA_PLACEMENT"
PLACEMENTS = ("auto", "device", "host")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def device_choice() -> str:
    """RESOMAP_DEVICE: auto (default), cpu, cuda or cuda:N."""
    value = os.environ.get(DEVICE_ENV, "auto")
    if not _DEVICE.fullmatch(value):
        raise ResoMapError(f"{DEVICE_ENV}={value!r} is not a device: use auto, cpu, cuda or cuda:N (N the GPU index), or unset it")
    return value


def requested_processes() -> int:
    """RESOMAP_NPROC: how many processes a train cell runs on (1 when unset)."""
    value = os.environ.get(PROCS_ENV, "1")
    if not value.isdigit() or int(value) < 1:
        raise ResoMapError(f"{PROCS_ENV}={value!r} is not a process count: set it to a positive integer, e.g. the GPU count, or unset it")
    return int(value)


def deterministic_mode() -> bool:
    """RESOMAP_DETERMINISTIC: 1 runs GPU stages with deterministic kernels and no TF32 or cudnn
    autotuning (resomap/core/device.py); 0 (default) runs them fast. The CPU is deterministic either way."""
    value = os.environ.get(DETERMINISTIC_ENV, "0")
    if value not in ("0", "1"):
        raise ResoMapError(f"{DETERMINISTIC_ENV}={value!r} is not 0 or 1: set it to 1 for deterministic GPU kernels, 0 or unset for the fast ones")
    return value == "1"


def placement_choice() -> str:
    """RESOMAP_DATA_PLACEMENT: where a GPU run keeps the training images (resomap/data/placement.py):
    auto (default), device or host."""
    value = os.environ.get(PLACEMENT_ENV, "auto")
    if value not in PLACEMENTS:
        raise ResoMapError(f"{PLACEMENT_ENV}={value!r} is not a data placement: use auto, device or host, or unset it")
    return value


def stage_log() -> Path | None:
    """RESOMAP_STAGE_LOG: a file each stage run appends one JSON line of timings to (None when unset)."""
    value = os.environ.get(STAGE_LOG_ENV)
    if not value:
        return None
    path = Path(value)
    if not path.parent.is_dir():
        raise ResoMapError(f"{STAGE_LOG_ENV}={value!r}: its folder {path.parent} does not exist: create it, or unset the variable")
    return path


def check_environment() -> None:
    """Every runtime variable, parsed once: the first bad one raises."""
    device_choice()
    requested_processes()
    deterministic_mode()
    placement_choice()
    stage_log()
