"""NVML energy against nvidia-smi: resomap.profile.energy.measure_energy (the profile stage's
measurement) over a busy matmul loop, while a thread samples
`nvidia-smi --query-gpu=power.draw --format=csv,noheader,nounits` for the same GPU. Passes when the
energy counter's mean power is within TOLERANCE of nvidia-smi's mean."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from pathlib import Path

from benchmarks.gpu_check.common import check_main, cuda_device, require, result

SECONDS, TOLERANCE, SIDE = 6.0, 0.25, 8192


def relative_gap(measured: float, reference: float) -> float:
    return abs(measured - reference) / reference if reference else float("inf")


def sample_power(bus_id: str, stop: threading.Event, samples: list[float]) -> None:
    while not stop.is_set():
        done = subprocess.run(["nvidia-smi", "-i", bus_id, "--query-gpu=power.draw", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True)
        with contextlib.suppress(ValueError, IndexError):  # "[N/A]" or an error line: not a sample
            samples.append(float(done.stdout.strip().splitlines()[0]))
        time.sleep(0.1)


def run(work: Path) -> dict:
    import torch

    from resomap.profile.energy import measure_energy

    require(shutil.which("nvidia-smi") is not None, "nvidia-smi is not on PATH")
    device = cuda_device()
    props = torch.cuda.get_device_properties(device)
    bus_id = f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"
    a = torch.randn(SIDE, SIDE, device=device, dtype=torch.bfloat16)
    for _ in range(20):  # warm-up: clocks up, cuBLAS picked
        a @ a
    torch.cuda.synchronize(device)

    def run_batch() -> None:
        for _ in range(4):
            a @ a

    samples: list[float] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_power, args=(bus_id, stop, samples), daemon=True)
    sampler.start()
    try:
        measured = measure_energy(run_batch, 4, device, min_seconds=SECONDS)
    finally:
        stop.set()
        sampler.join(timeout=10)
    nvml_w = measured.get("power_w_mean")
    require(nvml_w is not None, f"no NVML energy: {measured.get('energy_note')}")
    require(len(samples) >= 3, f"nvidia-smi gave {len(samples)} power samples in {SECONDS:g} s")
    smi_w = sum(samples) / len(samples)
    gap = relative_gap(nvml_w, smi_w)
    figure = f"NVML {nvml_w:.0f} W vs nvidia-smi {smi_w:.0f} W ({len(samples)} samples): {gap:.1%} apart (limit {TOLERANCE:.0%})"
    return result(gap <= TOLERANCE, figure, nvml=measured, nvidia_smi_mean_w=round(smi_w, 2), nvidia_smi_samples=samples,
                  relative_gap=round(gap, 4), tolerance=TOLERANCE)


if __name__ == "__main__":
    check_main(run, __doc__)
