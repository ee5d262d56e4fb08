"""The profile stage's GPU-only paths, run on CPU with NVML and the CUDA allocator faked: NVML reads
that a MIG slice or a vGPU does not support, warm-up left out of the CUDA memory peak, one autocast
context per measurement, and the train stage's optimizer in the profiled training step."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pynvml
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from helpers.env import REPO
from resomap.core.config import load_params
from resomap.models.registry import build_model
from resomap.optim.optimizers import optimizer_for
from resomap.profile import costs
from resomap.profile.costs import ProfileSetup, inference_costs, setup_from_params, training_optimizer
from resomap.profile.energy import MIG_NOTE, measure_energy
from resomap.profile.memory import MB, measure_peak_memory

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)
SETUP = ProfileSetup(
    device=CPU, batch_size=4, train_batch_size=4, optimizer="sgd", momentum=0.9, weight_decay=5e-4, amp="bf16",
    channels_last=True, warmup=1, repeats=4, min_seconds=0.0, batch_repeats=2,
)


def not_supported(*_args):
    raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)


# --- energy: every NVML read guarded; a MIG slice is not charged the whole GPU -----------------------


@pytest.fixture
def nvml(monkeypatch):
    """A GPU as NVML and torch.cuda would show it: 10 J per batch, 80 % utilisation, no MIG."""
    state = SimpleNamespace(energy_mj=0, batches=0)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda _device: SimpleNamespace(pci_domain_id=0, pci_bus_id=0x41, pci_device_id=0))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda _device=None: None)
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByPciBusId", lambda bus_id: f"handle {bus_id}")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMigMode", lambda _h: [pynvml.NVML_DEVICE_MIG_DISABLE] * 2)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", lambda _h: state.energy_mj)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetUtilizationRates", lambda _h: SimpleNamespace(gpu=80, memory=10))

    def run_batch() -> None:
        state.batches += 1
        state.energy_mj += 10_000

    state.run_batch = run_batch
    return state


def test_energy_is_read_around_the_window(nvml):
    result = measure_energy(nvml.run_batch, 8, CUDA, min_seconds=0.02)
    assert result["energy_j_per_img"] == pytest.approx(10 / 8) and result["gpu_util_pct"] == 80
    assert result["energy_note"] == "NVML nvmlDeviceGetTotalEnergyConsumption over the window"


def test_unsupported_utilisation_leaves_it_null_and_energy_measured(nvml, monkeypatch):
    monkeypatch.setattr(pynvml, "nvmlDeviceGetUtilizationRates", not_supported)
    result = measure_energy(nvml.run_batch, 8, CUDA, min_seconds=0.02)
    assert result["energy_j_per_img"] == pytest.approx(10 / 8) and result["gpu_util_pct"] is None
    assert "utilisation unavailable: Not Supported" in result["energy_note"]


def test_unsupported_energy_counter_records_why(nvml, monkeypatch):
    monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", not_supported)
    result = measure_energy(nvml.run_batch, 8, CUDA, min_seconds=0.02)
    assert result["energy_j_per_img"] is None and result["gpu_util_pct"] is None
    assert result["energy_note"] == "NVML energy counter unavailable: Not Supported" and nvml.batches == 0


def test_energy_counter_failing_at_the_end_records_why(nvml, monkeypatch):
    readings = iter([0])

    def counter(_handle):
        try:
            return next(readings)
        except StopIteration:
            not_supported()

    monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", counter)
    result = measure_energy(nvml.run_batch, 8, CUDA, min_seconds=0.02)
    assert result["energy_j_per_img"] is None and "end of the window: Not Supported" in result["energy_note"]


def test_a_gpu_in_mig_mode_is_a_slice_and_gets_no_energy(nvml, monkeypatch):
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMigMode", lambda _h: [pynvml.NVML_DEVICE_MIG_ENABLE] * 2)
    result = measure_energy(nvml.run_batch, 8, CUDA, min_seconds=0.02)
    assert result["energy_j_per_img"] is None and result["energy_note"] == MIG_NOTE and nvml.batches == 0


def test_mig_instances_in_cuda_visible_devices_get_no_energy(nvml, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-4f0c9a2e-1b7d-5c3e-9a8f-0d2b6e7c1a34")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByPciBusId", not_supported)  # not even asked
    assert measure_energy(nvml.run_batch, 8, CUDA, min_seconds=0.02)["energy_note"] == MIG_NOTE


def test_a_gpu_without_mig_support_is_measured(nvml, monkeypatch):
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMigMode", not_supported)  # pre-Ampere GPUs
    assert measure_energy(nvml.run_batch, 8, CUDA, min_seconds=0.02)["energy_j_per_img"] == pytest.approx(10 / 8)


# --- memory: warm-up out of the CUDA peak, allocated and reserved over one baseline --------------------


class FakeAllocator:
    """torch.cuda's caching-allocator statistics, in MB: reserved grows with allocations and keeps
    freed blocks until empty_cache."""

    def __init__(self, allocated: int):
        self.allocated = self.reserved = self.peak_allocated = self.peak_reserved = allocated

    def alloc(self, mb: int) -> None:
        self.allocated += mb
        self.reserved = max(self.reserved, self.allocated)
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        self.peak_reserved = max(self.peak_reserved, self.reserved)

    def free(self, mb: int) -> None:
        self.allocated -= mb

    def install(self, monkeypatch) -> None:
        cuda = torch.cuda
        monkeypatch.setattr(cuda, "synchronize", lambda _device=None: None)
        monkeypatch.setattr(cuda, "empty_cache", lambda: setattr(self, "reserved", self.allocated))
        monkeypatch.setattr(cuda, "memory_allocated", lambda _device=None: self.allocated * MB)
        monkeypatch.setattr(cuda, "memory_reserved", lambda _device=None: self.reserved * MB)
        monkeypatch.setattr(cuda, "max_memory_allocated", lambda _device=None: self.peak_allocated * MB)
        monkeypatch.setattr(cuda, "max_memory_reserved", lambda _device=None: self.peak_reserved * MB)

        def reset(_device=None) -> None:
            self.peak_allocated, self.peak_reserved = self.allocated, self.reserved

        monkeypatch.setattr(cuda, "reset_peak_memory_stats", reset)


def test_cuda_peak_leaves_out_autotuning_trials_but_keeps_state_the_warm_up_made(monkeypatch):
    allocator = FakeAllocator(allocated=100)  # weights, and an earlier block's cache below
    allocator.reserved = 900
    allocator.install(monkeypatch)
    with measure_peak_memory(CUDA) as peak:
        allocator.alloc(500)  # warm-up: cudnn.benchmark's trial workspace...
        allocator.free(500)
        allocator.alloc(10)  # ...and the optimizer's momentum buffers, kept
        peak.warmed_up()
        allocator.alloc(50)  # a measured step's activations and gradients
        allocator.free(50)
    assert peak.method == "cuda_allocator"
    assert peak.allocated_mb == pytest.approx(60) and peak.reserved_mb == pytest.approx(60)


def test_the_measured_calls_follow_the_warm_up_and_the_peak_restart(monkeypatch):
    calls = []
    peak = SimpleNamespace(warmed_up=lambda: calls.append("restart"))
    monkeypatch.setattr(costs, "BATCH_WARMUP", 3)
    costs._batch_call_ms(lambda: calls.append("call"), SETUP, peak)
    # warm-up, restart, one untimed call that takes back what the restart released, then the timed ones
    assert calls == ["call", "call", "restart", "call"] + ["call"] * SETUP.batch_repeats


def test_peak_memory_keys_add_the_weights_to_both_growths():
    model = torch.nn.Linear(256, 256)  # 0.25 MB of weights + 1 KB bias
    weights = (256 * 256 + 256) * 4 / MB
    keys = costs._memory_keys("train_", SimpleNamespace(allocated_mb=3.0, reserved_mb=4.0, method="cuda_allocator"), model)
    assert keys == {"train_peak_memory_mb": round(weights + 3, 4), "train_peak_memory_reserved_mb": round(weights + 4, 4)}


# --- AMP: one autocast context per measurement, so the weights are cast once -------------------------


class CountWeightCasts(TorchDispatchMode):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.weights = {p.data_ptr() for p in model.parameters()}
        self.casts = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._to_copy.default and args[0].data_ptr() in self.weights:
            self.casts += 1
        return func(*args, **(kwargs or {}))


def test_amp_inference_casts_each_weight_once_per_measurement_not_per_call():
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 10).to(memory_format=torch.channels_last)
    forwards = []
    model.register_forward_hook(lambda *_: forwards.append(1))
    with CountWeightCasts(model) as counter:
        metrics, samples = inference_costs(model, 16, SETUP, torch.bfloat16)
    weights = sum(1 for p in model.parameters() if p.ndim > 1)  # conv and linear weights; norms stay fp32
    assert len(forwards) == len(samples) + SETUP.warmup + costs.BATCH_WARMUP + SETUP.batch_repeats
    assert counter.casts <= 2 * len(list(model.parameters()))  # latency and throughput: one context each
    assert counter.casts >= weights and metrics["latency_ms"] > 0


# --- the training step's optimizer is the train stage's --------------------------------------------


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("device", [CPU, CUDA], ids=["cpu", "cuda"])
def test_profile_steps_with_the_train_stages_optimizer(optimizer, device):
    """Same class, parameter groups, momentum, Nesterov and fused flag as optimizer_for builds for
    train from params.train (fused on CUDA: the flag is checked at the first step, so it builds here)."""
    params = load_params(REPO / "params.yaml")
    train = dataclasses.replace(params.train, optimizer=optimizer, momentum=0.9, weight_decay=5e-4)
    setup = setup_from_params(dataclasses.replace(params, train=train), device)
    model = build_model("tiny_cnn", 10)
    ours, theirs = training_optimizer(model, setup), optimizer_for(model, train, device)
    assert type(ours) is type(theirs)
    for key in ("momentum", "nesterov", "fused", "foreach", "weight_decay", "betas", "eps"):
        assert ours.defaults.get(key) == theirs.defaults.get(key), key
    assert len(ours.param_groups) == len(theirs.param_groups)
    for mine, train_group in zip(ours.param_groups, theirs.param_groups, strict=True):
        assert [id(p) for p in mine["params"]] == [id(p) for p in train_group["params"]]
        assert {k: v for k, v in mine.items() if k not in ("params", "lr", "initial_lr")} == {
            k: v for k, v in train_group.items() if k not in ("params", "lr", "initial_lr")}
    if optimizer == "sgd":
        assert ours.defaults["nesterov"] and ours.defaults["momentum"] == 0.9
        assert bool(ours.defaults["fused"]) == (device.type == "cuda")
