"""Usage: python -m benchmarks.explore_timing [--images 10] [--out benchmarks/results/explore.json]

The explorer on the study in the workspace (run from the repository root after `dvc repro`): its
cold start (process start to serving, `python -m resomap.explore`, three times) and the time to
show one test image at every trained resolution of a model (top-5 and the three maps per cell,
nothing cached), per model.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.stage_overhead import conditions
from resomap.core import io
from resomap.core.config import load_params
from resomap.core.device import pick_device
from resomap.explore.looks import Looker
from resomap.explore.study import Source, load_explored_study, seen_at

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers.env import free_ports  # noqa: E402


def cold_start_seconds() -> float:
    """Process start to the line the explorer prints once it serves."""
    (port,) = free_ports(1)
    start = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "resomap.explore", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        if not line.startswith("explore:"):
            raise SystemExit(f"the explorer did not start: {line!r}")
        return time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)


def seconds_per_image(images: int) -> dict[str, float]:
    """Per model: mean seconds to look at one test image at all of its resolutions, a fresh Looker
    (models loaded and the first image's imports paid on a warm-up image first)."""
    params = load_params()
    study = load_explored_study(params)
    device = pick_device()
    result = {}
    for model in study.models:
        looker = Looker(params, len(study.classes), device)
        cells = study.cells_of(model, study.seeds[0])
        for resolution, explored in cells.items():  # warm-up: weights, grad-cam's and captum's imports
            looker.look(explored.cell, seen_at(study, Source(index=0), resolution), "warm-up")
        start = time.perf_counter()
        for index in range(1, images + 1):
            for resolution, explored in cells.items():
                looker.look(explored.cell, seen_at(study, Source(index=index), resolution), f"test-{index}")
        result[model] = round((time.perf_counter() - start) / images, 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/explore.json"))
    args = parser.parse_args()
    starts = [round(cold_start_seconds(), 2) for _ in range(3)]
    per_image = seconds_per_image(args.images)
    print(f"explore: cold start {statistics.median(starts):.1f} s (runs {starts}); seconds per image, all resolutions: {per_image}")
    io.write_json(args.out, {**conditions(), "cold_start_s": starts, "seconds_per_image_all_resolutions": per_image,
                             "images": args.images})


if __name__ == "__main__":
    main()
