"""Usage: python -m stages.profile MODEL RESOLUTION

Measure one model at one resolution (untrained weights: cost does not depend on them).
"""

import torch

from resomap import io
from resomap.config import load_params
from resomap.data.prepared import load_classes
from resomap.device import pick_device
from resomap.errors import ResoMapError
from resomap.models import build_model
from resomap.paths import prepared_dir, profile_metrics_dir
from resomap.profiling import profile_model
from resomap.stage import run_stage


def main(argv: list[str]) -> None:
    if len(argv) != 2 or not argv[1].isdigit():
        raise ResoMapError(f"usage: {__doc__.splitlines()[0]}")
    name, resolution = argv[0], int(argv[1])
    params = load_params()
    torch.manual_seed(0)
    num_classes = len(load_classes(prepared_dir(resolution)))
    metrics, samples = profile_model(build_model(name, num_classes), resolution, params.profile, pick_device())
    out = profile_metrics_dir(name, resolution)
    io.write_json(out / "metrics.json", metrics)
    io.write_json(out / "latency_samples.json", {"latency_ms": [round(s, 4) for s in samples]})
    print(
        f"profile {name}-{resolution}: {metrics['latency_ms']:.2f} ms/img (batch 1), "
        f"{metrics['throughput_img_s']:.0f} img/s, {metrics['flops'] / 1e6:.1f} MFLOPs, {metrics['params']} params"
    )


if __name__ == "__main__":
    run_stage(main)
