"""RESOMAP_DETERMINISTIC and the numerics a stage records: the GPU settings are checked as flags (no GPU
needed: torch sets and reads them on any build), the CPU ones as unchanged by the mode."""

from __future__ import annotations

import os

import pytest
import torch

from resomap.core.device import amp_dtype, configure_backends, numerics, pick_device, true_fp32, upload

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)
CUBLAS = "CUBLAS_WORKSPACE_CONFIG"


def backend_state() -> tuple:
    """Every global numerics switch configure_backends or true_fp32 may touch, legacy and new API alike."""
    b = torch.backends
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        b.cudnn.benchmark,
        b.cudnn.deterministic,
        b.cuda.matmul.allow_tf32,
        b.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
        b.fp32_precision,
        b.cuda.matmul.fp32_precision,
        b.cudnn.conv.fp32_precision,
        b.cudnn.rnn.fp32_precision,
        b.mkldnn.fp32_precision,
        b.mkldnn.matmul.fp32_precision,
        b.mkldnn.conv.fp32_precision,
    )


@pytest.fixture(autouse=True)
def restored_backends(monkeypatch):
    """Each test sees, and leaves, the process's switches as they were, and no cuBLAS workspace variable."""
    monkeypatch.delenv(CUBLAS, raising=False)
    monkeypatch.delenv("RESOMAP_DETERMINISTIC", raising=False)
    b = torch.backends
    saved = backend_state()
    yield
    torch._C._set_deterministic_algorithms(saved[0], warn_only=saved[1])
    b.cudnn.benchmark, b.cudnn.deterministic = saved[2:4]
    b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32 = saved[4:6]
    b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision, b.cudnn.rnn.fp32_precision = saved[8:11]
    assert backend_state() == saved


@pytest.fixture
def ampere(monkeypatch):
    """numerics() on a GPU asks its compute capability; this one is an A100's."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))


def test_the_mode_changes_nothing_on_cpu(monkeypatch):
    configure_backends(CPU)
    default = backend_state()
    monkeypatch.setenv("RESOMAP_DETERMINISTIC", "1")
    configure_backends(CPU)
    assert backend_state() == default
    assert CUBLAS not in os.environ
    assert default[:2] == (True, False)  # deterministic kernels, errors (not warnings) where there are none


def test_numerics_on_cpu_are_deterministic_without_gpu_conditions(monkeypatch):
    for mode in ("0", "1"):
        monkeypatch.setenv("RESOMAP_DETERMINISTIC", mode)
        configure_backends(CPU)
        assert numerics(CPU) == {"deterministic": True, "deterministic_warn_only": False, "tf32": False, "cudnn_benchmark": False}


def test_the_gpu_default_is_fast_and_says_so(ampere):
    configure_backends(CUDA)
    b = torch.backends
    assert b.cudnn.benchmark and b.cuda.matmul.allow_tf32 and b.cudnn.allow_tf32
    assert CUBLAS not in os.environ
    assert numerics(CUDA) == {"deterministic": False, "deterministic_warn_only": False, "tf32": True, "cudnn_benchmark": True}


def test_the_gpu_deterministic_mode_turns_autotuning_and_tf32_off(monkeypatch, ampere):
    configure_backends(CUDA)  # the fast settings first: the mode must undo them, not rely on torch's defaults
    monkeypatch.setenv("RESOMAP_DETERMINISTIC", "1")
    configure_backends(CUDA)
    b = torch.backends
    assert not b.cudnn.benchmark and b.cudnn.deterministic
    assert not b.cuda.matmul.allow_tf32 and not b.cudnn.allow_tf32
    assert b.cuda.matmul.fp32_precision != "tf32" and b.cudnn.conv.fp32_precision != "tf32"  # the new API agrees
    assert os.environ[CUBLAS] == ":4096:8"
    assert numerics(CUDA) == {"deterministic": True, "deterministic_warn_only": True, "tf32": False, "cudnn_benchmark": False}


def test_a_cublas_workspace_the_user_chose_is_kept(monkeypatch):
    monkeypatch.setenv("RESOMAP_DETERMINISTIC", "1")
    monkeypatch.setenv(CUBLAS, ":16:8")
    configure_backends(CUDA)
    assert os.environ[CUBLAS] == ":16:8"


def test_tf32_is_not_recorded_on_a_gpu_without_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))  # V100: the flags allow, the GPU has none
    configure_backends(CUDA)
    assert numerics(CUDA)["tf32"] is False


@pytest.mark.parametrize("fast", [False, True])
def test_true_fp32_turns_tf32_off_inside_and_restores_every_setting(ampere, fast):
    if fast:
        configure_backends(CUDA)
    before = backend_state()
    with true_fp32():
        b = torch.backends
        assert not b.cuda.matmul.allow_tf32 and not b.cudnn.allow_tf32
        assert torch.get_float32_matmul_precision() == "highest"
        assert numerics(CUDA)["tf32"] is False
    assert backend_state() == before


def test_true_fp32_restores_after_an_error():
    before = backend_state()
    with pytest.raises(RuntimeError, match="inside"), true_fp32():
        raise RuntimeError("inside")
    assert backend_state() == before


def test_true_fp32_leaves_cpu_results_alone():
    gen = torch.Generator().manual_seed(0)
    a, w = torch.randn(64, 3, 16, 16, generator=gen), torch.randn(8, 3, 3, 3, generator=gen)
    expected = torch.nn.functional.conv2d(a, w), a.flatten(1) @ a.flatten(1).T
    with true_fp32():
        got = torch.nn.functional.conv2d(a, w), a.flatten(1) @ a.flatten(1).T
    assert all(torch.equal(x, y) for x, y in zip(expected, got))


def fake_gpu(monkeypatch, *, native: bool) -> None:
    """A GPU whose bf16 is native (Ampere+) or emulation only (V100, T4), as torch.cuda.is_bf16_supported answers."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native or including_emulation)


def test_auto_amp_takes_fp16_where_bf16_is_only_emulated(monkeypatch):
    fake_gpu(monkeypatch, native=False)
    assert amp_dtype("auto", CUDA) is torch.float16
    assert amp_dtype("bf16", CUDA) is torch.bfloat16  # asked for by name: given
    assert amp_dtype("fp16", CUDA) is torch.float16
    assert amp_dtype("off", CUDA) is None


def test_auto_amp_takes_bf16_where_it_is_native(monkeypatch):
    fake_gpu(monkeypatch, native=True)
    assert amp_dtype("auto", CUDA) is torch.bfloat16
    assert amp_dtype("auto", CPU) is None


def test_upload_to_the_cpu_leaves_a_strided_tensor_as_it_is():
    base = torch.arange(60).reshape(3, 4, 5)
    view = base[:, ::2].transpose(1, 2)
    moved = upload(view, CPU)
    assert moved is view and moved.stride() == view.stride() and not moved.is_contiguous()


def test_upload_to_a_gpu_pins_a_contiguous_copy(monkeypatch):
    """The GPU path, with pinning and the copy recorded: a strided view is pinned only once contiguous."""
    pinned = []

    def pin_memory(self):
        pinned.append((self.is_contiguous(), self.clone()))
        return self

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *args, **kwargs: self)
    view = torch.arange(60).reshape(3, 4, 5)[:, ::2].transpose(1, 2)
    upload(view, CUDA)
    assert len(pinned) == 1 and pinned[0][0] and torch.equal(pinned[0][1], view)


def fake_gpus(monkeypatch, count: int) -> list[tuple[int, str | None]]:
    """`count` visible GPUs; each set_device call recorded with the cuBLAS workspace variable at that moment."""
    calls: list[tuple[int, str | None]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: calls.append((index, os.environ.get(CUBLAS))))
    return calls


@pytest.mark.parametrize("choice,index", [("cuda:0", 0), ("cuda:2", 2), ("cuda:3", 3)])
def test_a_chosen_gpu_becomes_the_current_device(monkeypatch, choice, index):
    calls = fake_gpus(monkeypatch, 4)
    monkeypatch.setenv("RESOMAP_DEVICE", choice)
    assert pick_device() == torch.device("cuda", index)
    assert calls == [(index, None)]


def test_the_deterministic_mode_fixes_cublas_before_the_first_gpu_call(monkeypatch):
    calls = fake_gpus(monkeypatch, 1)
    monkeypatch.setenv("RESOMAP_DEVICE", "auto")
    monkeypatch.setenv("RESOMAP_DETERMINISTIC", "1")
    assert pick_device() == CUDA
    assert calls == [(0, ":4096:8")]


def test_the_cpu_gets_no_cublas_variable(monkeypatch):
    monkeypatch.setenv("RESOMAP_DEVICE", "cpu")
    monkeypatch.setenv("RESOMAP_DETERMINISTIC", "1")
    assert pick_device() == CPU
    assert CUBLAS not in os.environ
