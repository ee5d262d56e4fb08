import pytest
import torch

from resomap.config import ProfileParams
from resomap.models import build_model
from resomap.profiling import count_flops, profile_model, summarise_latency


@pytest.mark.parametrize("name", ["tiny_cnn", "simple_cnn", "resnet18", "mobilenet_v3_small"])
def test_flops_grow_with_pixel_count(name):
    """A convolutional network's forward cost scales with the number of pixels: 2x side -> ~4x FLOPs
    (a little under 4: the classifier head and squeeze-excitation layers cost the same at any size)."""
    model = build_model(name, 10)
    ratio = count_flops(model, 448) / count_flops(model, 224)
    assert 3.8 < ratio < 4.05


def test_flops_count_a_multiply_add_as_two():
    layer = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_flops(layer, 16) == 2 * (3 * 3 * 3) * 8 * 16 * 16


def test_latency_summary_from_known_samples():
    summary = summarise_latency([float(x) for x in range(1, 12)])  # 1..11 ms
    assert summary["latency_ms"] == 6.0
    assert summary["latency_ms_min"] == 1.0
    assert summary["latency_ms_iqr"] == 5.0
    assert summary["latency_ms_p90"] == 10.0


def test_profile_reports_costs_and_conditions():
    metrics, samples = profile_model(build_model("tiny_cnn", 10), 32, ProfileParams(batch_size=4, warmup=1, repeats=5), torch.device("cpu"))
    assert len(samples) == 5 and all(s > 0 for s in samples)
    assert metrics["params"] == sum(p.numel() for p in build_model("tiny_cnn", 10).parameters())
    assert metrics["latency_ms_min"] <= metrics["latency_ms"] <= metrics["latency_ms_p90"]
    assert metrics["throughput_img_s"] > 0
    assert metrics["device"] == "cpu" and metrics["torch_version"] == torch.__version__
