"""Energy per image on NVIDIA GPUs from NVML's cumulative energy counter."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch


def _nvml_handle(device: torch.device):
    """The NVML handle of a torch CUDA device, matched by PCI bus id (indices can differ
    under CUDA_VISIBLE_DEVICES). On a MIG slice this is the whole GPU's handle."""
    import pynvml

    pynvml.nvmlInit()
    props = torch.cuda.get_device_properties(device)
    bus_id = f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"
    return pynvml, pynvml.nvmlDeviceGetHandleByPciBusId(bus_id)


MIG_NOTE = "a MIG slice: NVML's energy counter covers the whole GPU (every slice's work); not measured"


def _mig_visible() -> bool:
    """CUDA_VISIBLE_DEVICES names MIG instances (MIG-<uuid>), as torch parses it."""
    return os.environ.get("CUDA_VISIBLE_DEVICES", "").strip().startswith("MIG-")


def _mig_mode_on(pynvml, handle) -> bool:
    """Whether the GPU has MIG mode on: then CUDA sees only its slices, never the whole GPU, so the
    device being profiled is a slice. A GPU without MIG answers NotSupported; any other NVML error
    is raised (the caller records it)."""
    try:
        current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
    except pynvml.NVMLError_NotSupported:
        return False
    return current == pynvml.NVML_DEVICE_MIG_ENABLE


def unavailable(reason: str) -> dict:
    return {"energy_j_per_img": None, "power_w_mean": None, "gpu_util_pct": None, "energy_note": reason}


def measure_energy(run_batch: Callable[[], None], batch_size: int, device: torch.device, min_seconds: float = 2.0) -> dict:
    """Run `run_batch` for at least `min_seconds` and read the energy counter around it.

    The counter (millijoules since driver load, Volta and newer) integrates power in the driver,
    so short windows lose nothing between samples; the window must still cover several of its
    update periods, hence the 2 s floor. Every NVML read is guarded: a counter NVML does not
    offer (vGPU, some MIG and older boards answer NotSupported) records why instead of failing
    the stage, and utilisation it cannot read is left null. On a MIG slice energy is not
    measured: the counter belongs to the whole GPU, other slices' work included.
    """
    if device.type != "cuda":
        return unavailable("energy needs an NVIDIA GPU (NVML); not measured on CPU")
    if _mig_visible():
        return unavailable(MIG_NOTE)
    try:
        pynvml, handle = _nvml_handle(device)
        if _mig_mode_on(pynvml, handle):
            return unavailable(MIG_NOTE)
        start_mj = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception as error:  # NVML missing, or a GPU without an energy counter: record why
        return unavailable(f"NVML energy counter unavailable: {error}")
    utilisation, util_error, images = [], None, 0
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        run_batch()
        images += batch_size
        if util_error is None:
            try:
                utilisation.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except pynvml.NVMLError as error:  # NotSupported on MIG and vGPU: ask once, energy still counts
                util_error = error
    torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    try:
        joules = (pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) - start_mj) / 1e3
    except pynvml.NVMLError as error:
        return unavailable(f"NVML energy counter unreadable at the end of the window: {error}")
    note = "NVML nvmlDeviceGetTotalEnergyConsumption over the window"
    if util_error is not None:
        note += f"; utilisation unavailable: {util_error}"
    return {
        "energy_j_per_img": round(joules / images, 6),
        "power_w_mean": round(joules / seconds, 2),
        "gpu_util_pct": round(sum(utilisation) / len(utilisation), 1) if utilisation else None,
        "energy_window_s": round(seconds, 3),
        "energy_note": note,
    }


def driver_version(device: torch.device) -> str | None:
    if device.type != "cuda":
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlSystemGetDriverVersion()
    except Exception:  # the version is context, not a result: a missing NVML must not fail the stage
        return None
