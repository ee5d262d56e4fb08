"""Usage: python -m benchmarks.profile_quality [--out benchmarks/results/profile_quality.json]

How trustworthy is the profile stage's latency? For a few cells it measures the batch-1 median
twice (run-to-run spread) and compares it with torch.utils.benchmark.Timer's median for the same
model, input and thread count, itself run twice so its own spread shows the machine's noise
floor. Target on CPU: both within 5%.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics

import torch
import torch.utils.benchmark as tbench

from resomap.core import io
from resomap.core.config import load_params
from resomap.core.device import configure_backends, memory_format, pick_device
from resomap.models.registry import build_model
from resomap.profile.costs import ProfileSetup, inference_costs, setup_from_params

CELLS = [("tiny_cnn", 32), ("simple_cnn", 64), ("resnet8", 64), ("resnet18", 64), ("mobilenet_v3_small", 64)]


def timer_median_ms(model: torch.nn.Module, x: torch.Tensor) -> float:
    timer = tbench.Timer(
        stmt="with torch.no_grad(): model(x)",
        globals={"model": model, "x": x, "torch": torch},
        num_threads=torch.get_num_threads(),  # Timer defaults to 1 thread; the profile stage uses all
    )
    return timer.blocked_autorange(min_run_time=2.0).median * 1e3


def measure_cell(name: str, resolution: int, setup: ProfileSetup) -> dict:
    torch.manual_seed(0)
    model = build_model(name, 10).to(setup.device, memory_format=memory_format(setup.channels_last)).eval()
    runs = [inference_costs(model, resolution, setup, None)[0]["latency_ms"] for _ in range(2)]
    x = torch.randn(1, 3, resolution, resolution, device=setup.device).contiguous(
        memory_format=memory_format(setup.channels_last)
    )
    timer_runs = [timer_median_ms(model, x) for _ in range(2)]
    reference = statistics.mean(timer_runs)
    ours = statistics.mean(runs)
    return {
        "model": name,
        "resolution": resolution,
        "device": setup.device.type,
        "threads": torch.get_num_threads(),
        "repeats": setup.repeats,
        "run1_latency_ms": runs[0],
        "run2_latency_ms": runs[1],
        "run_to_run_diff_pct": round(abs(runs[0] - runs[1]) / ours * 100, 2),
        "timer_latency_ms": round(reference, 4),
        "timer_run_to_run_diff_pct": round(abs(timer_runs[0] - timer_runs[1]) / reference * 100, 2),
        "vs_timer_diff_pct": round(abs(ours - reference) / reference * 100, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/profile_quality.json")
    args = parser.parse_args()
    params = load_params()
    device = pick_device()
    configure_backends(device)
    setup = dataclasses.replace(setup_from_params(params, device), amp="off")  # fp32, as the Timer runs
    rows = []
    for name, resolution in CELLS:
        rows.append(measure_cell(name, resolution, setup))
        print(json.dumps(rows[-1]), flush=True)
    io.write_json(args.out, rows)


if __name__ == "__main__":
    main()
