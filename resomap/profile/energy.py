"""Energy per image on NVIDIA GPUs from NVML's cumulative energy counter."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def _nvml_handle(device: torch.device):
    """The NVML handle of a torch CUDA device, matched by PCI bus id (indices can differ
    under CUDA_VISIBLE_DEVICES)."""
    import pynvml

    pynvml.nvmlInit()
    props = torch.cuda.get_device_properties(device)
    bus_id = f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"
    return pynvml, pynvml.nvmlDeviceGetHandleByPciBusId(bus_id)


def unavailable(reason: str) -> dict:
    return {"energy_j_per_img": None, "power_w_mean": None, "gpu_util_pct": None, "energy_note": reason}


def measure_energy(run_batch: Callable[[], None], batch_size: int, device: torch.device, min_seconds: float = 2.0) -> dict:
    """Run `run_batch` for at least `min_seconds` and read the energy counter around it.

    The counter (millijoules since driver load, Volta and newer) integrates power in the driver,
    so short windows lose nothing between samples; the window must still cover several of its
    update periods, hence the 2 s floor.
    """
    if device.type != "cuda":
        return unavailable("energy needs an NVIDIA GPU (NVML); not measured on CPU")
    try:
        pynvml, handle = _nvml_handle(device)
        start_mj = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception as error:  # NVML missing, or a GPU without an energy counter: record why
        return unavailable(f"NVML energy counter unavailable: {error}")
    utilisation, images = [], 0
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        run_batch()
        images += batch_size
        utilisation.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    joules = (pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) - start_mj) / 1e3
    return {
        "energy_j_per_img": round(joules / images, 6),
        "power_w_mean": round(joules / seconds, 2),
        "gpu_util_pct": round(sum(utilisation) / len(utilisation), 1),
        "energy_window_s": round(seconds, 3),
        "energy_note": "NVML nvmlDeviceGetTotalEnergyConsumption over the window",
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
