"""Usage: python -m stages.profile MODEL RESOLUTION

Measure one model at one resolution (untrained weights: cost does not depend on them):
metrics/profile/MODEL/RESOLUTION/metrics.json and the raw latency samples beside it.
"""

import torch

from resomap.core import io
from resomap.core.config import load_params
from resomap.core.device import configure_backends, pick_device
from resomap.core.grid import prepared_dir, profile_metrics_dir
from resomap.core.stage import run_stage, usage_error
from resomap.data.prepared import load_classes
from resomap.models.heads import head_from
from resomap.models.registry import build_model, check_model
from resomap.profile.costs import profile_model, setup_from_params


def main(argv: list[str]) -> None:
    params = load_params()
    if len(argv) != 2 or not argv[1].isdigit():
        raise usage_error(__doc__)
    name, resolution = argv[0], int(argv[1])
    check_model(name, resolution)
    io.check_writable(profile_metrics_dir(name, resolution))
    device = pick_device()
    configure_backends(device)
    torch.manual_seed(0)
    setup = setup_from_params(params, device)
    model = build_model(name, len(load_classes(prepared_dir(resolution))), head_from(params.train))
    metrics, samples = profile_model(model, resolution, setup)
    out = profile_metrics_dir(name, resolution)
    io.write_json(out / "latency_samples.json", {k: [round(s, 4) for s in v] for k, v in samples.items()})
    io.write_json(out / "metrics.json", metrics)
    print(
        f"profile {name}-{resolution} on {device.type}: {metrics['latency_ms']:.2f} ms/img (batch 1), "
        f"{metrics['throughput_img_s']:.0f} img/s inference, {metrics['train_throughput_img_s']:.0f} img/s training, "
        f"{metrics['flops'] / 1e6:.1f} MFLOPs, peak {metrics['peak_memory_mb']:.1f} MB"
    )


if __name__ == "__main__":
    run_stage(main)
