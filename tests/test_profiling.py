import subprocess
import sys

import pytest
import torch

from helpers.env import REPO
from resomap.core.oom import with_oom_backoff
from resomap.models.registry import build_model, registered_names
from resomap.profile.costs import ProfileSetup, profile_model
from resomap.profile.flops import count_flops
from resomap.profile.timing import summarise_latency

CPU = torch.device("cpu")
SETUP = ProfileSetup(
    device=CPU, batch_size=4, train_batch_size=4, optimizer="sgd", momentum=0.9, weight_decay=5e-4, amp="auto",
    channels_last=True, warmup=1, repeats=4, min_seconds=0.0, batch_repeats=2,
)
REQUIRED_KEYS = {
    "latency_ms", "latency_ms_p90", "latency_ms_min", "latency_ms_iqr",
    "throughput_img_s", "throughput_batch_size", "throughput_backoffs",
    "train_throughput_img_s", "train_batch_size",
    "peak_memory_mb", "peak_memory_reserved_mb", "train_peak_memory_mb", "activation_memory_mb", "memory_method",
    "flops", "params", "model_size_mb", "flops_convention",
    "energy_j_per_img", "power_w_mean", "gpu_util_pct", "energy_note",
    "device", "device_name", "driver_version", "cuda_version", "torch_version", "threads", "dtype",
    "channels_last", "latency_batch_size", "warmup", "repeats",
}


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
    assert summary == {"latency_ms": 6.0, "latency_ms_p90": 10.0, "latency_ms_min": 1.0, "latency_ms_iqr": 5.0}


@pytest.mark.parametrize("name", registered_names())
def test_every_registered_model_profiles_on_cpu(name):
    torch.manual_seed(0)
    metrics, samples = profile_model(build_model(name, 10), 32, SETUP)
    assert set(metrics) >= REQUIRED_KEYS
    assert len(samples["fp32"]) == SETUP.repeats and min(samples["fp32"]) > 0
    assert metrics["latency_ms_min"] <= metrics["latency_ms"] <= metrics["latency_ms_p90"]
    assert metrics["throughput_img_s"] > 0 and metrics["train_throughput_img_s"] > 0
    assert metrics["params"] == sum(p.numel() for p in build_model(name, 10).parameters())
    assert metrics["peak_memory_mb"] >= metrics["model_size_mb"]


def test_cpu_has_no_energy_reading_and_says_why():
    metrics, _ = profile_model(build_model("tiny_cnn", 10), 16, SETUP)
    assert metrics["energy_j_per_img"] is None and metrics["power_w_mean"] is None
    assert "NVIDIA GPU" in metrics["energy_note"]
    assert metrics["device"] == "cpu" and metrics["torch_version"] == torch.__version__
    assert "amp" not in metrics, "train.amp auto is off on CPU: only fp32 is profiled"


def test_bf16_is_profiled_beside_fp32_when_amp_is_on():
    setup = ProfileSetup(**{**SETUP.__dict__, "amp": "bf16"})
    metrics, samples = profile_model(build_model("tiny_cnn", 10), 16, setup)
    assert set(samples) == {"fp32", "bfloat16"}
    assert metrics["dtype"] == "float32" and metrics["amp"]["dtype"] == "bfloat16"
    assert metrics["amp"]["latency_ms"] > 0


def test_out_of_memory_halves_the_batch_and_records_it():
    def measure(batch: int) -> dict:
        if batch > 8:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated by the measured function)")
        return {"ran_with": batch}

    result, batch, backoffs = with_oom_backoff(measure, 32, CPU)
    assert result == {"ran_with": 8} and batch == 8 and backoffs == 2


def test_cpu_peak_memory_sees_a_large_allocation():
    """In a fresh process, as the profile stage runs: memory freed earlier in the same process
    stays resident and would hide the growth (the limit of RSS-based measurement)."""
    code = (
        "import torch\n"
        "from resomap.profile.memory import measure_peak_memory\n"
        "with measure_peak_memory(torch.device('cpu')) as peak:\n"
        "    block = torch.ones(64 * 2**20 // 4)\n"
        "    del block\n"
        "print(peak.method, peak.allocated_mb)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    method, megabytes = out.split()
    assert method == "rss_growth"
    assert 48 < float(megabytes) < 200


def test_setup_reads_exactly_the_train_keys_profile_declares():
    """dvc.yaml declares train.batch_size/optimizer/momentum/weight_decay/amp/channels_last for profile:
    the setup must use them (the optimizer's state is part of a training step's memory)."""
    import dataclasses

    from resomap.core.config import load_params
    from resomap.profile.costs import setup_from_params

    params = load_params(REPO / "params.yaml")
    train = dataclasses.replace(
        params.train, batch_size=48, optimizer="adamw", momentum=0.5, weight_decay=0.1, amp="bf16", channels_last=False
    )
    setup = setup_from_params(dataclasses.replace(params, train=train), CPU)
    assert (setup.train_batch_size, setup.optimizer, setup.amp, setup.channels_last) == (48, "adamw", "bf16", False)
    assert (setup.momentum, setup.weight_decay) == (0.5, 0.1)
    assert (setup.batch_size, setup.repeats, setup.batch_repeats) == (
        params.profile.batch_size, params.profile.repeats, params.profile.batch_repeats)
