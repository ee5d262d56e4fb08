"""The runtime variables: a bad value is one line listing the valid ones."""

import pytest
import torch

from resomap.core.device import pick_device
from resomap.core.environment import check_environment, deterministic_mode, device_choice, requested_processes
from resomap.core.errors import ResoMapError
from resomap.train.distributed import check_process_count


@pytest.mark.parametrize("value", ["gpu", "cuda:x", "CPU", "cuda:", "cuda:0,1", ""])
def test_a_bad_device_lists_the_valid_ones(monkeypatch, value):
    monkeypatch.setenv("RESOMAP_DEVICE", value)
    with pytest.raises(ResoMapError, match=r"RESOMAP_DEVICE=.* is not a device: use auto, cpu, cuda or cuda:N"):
        check_environment()


@pytest.mark.parametrize("value", ["auto", "cpu", "cuda", "cuda:3"])
def test_valid_devices_pass_the_check(monkeypatch, value):
    monkeypatch.setenv("RESOMAP_DEVICE", value)
    assert device_choice() == value


def test_a_gpu_index_beyond_the_visible_gpus_is_one_line(monkeypatch):
    monkeypatch.setenv("RESOMAP_DEVICE", "cuda:7")
    expected = "only" if torch.cuda.is_available() else "no CUDA device is visible"
    with pytest.raises(ResoMapError, match=expected):
        pick_device()


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_process_count_is_one_line(monkeypatch, value):
    monkeypatch.setenv("RESOMAP_NPROC", value)
    with pytest.raises(ResoMapError, match=r"RESOMAP_NPROC=.* is not a process count: set it to a positive integer"):
        requested_processes()


def test_more_processes_than_gpus_stop_before_torchrun_starts():
    with pytest.raises(ResoMapError, match=r"RESOMAP_NPROC=4 processes but only 2 GPU\(s\) visible"):
        check_process_count(4, torch.device("cuda"), gpus=2)
    check_process_count(2, torch.device("cuda"), gpus=2)
    check_process_count(8, torch.device("cpu"), gpus=0)  # gloo ranks share the CPU


def test_a_stage_log_in_a_missing_folder_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("RESOMAP_STAGE_LOG", str(tmp_path / "nowhere" / "stages.jsonl"))
    with pytest.raises(ResoMapError, match=r"RESOMAP_STAGE_LOG=.*: its folder .*nowhere does not exist: create it, or unset"):
        check_environment()


@pytest.mark.parametrize("value", ["true", "yes", "2", "on", "", " 1"])
def test_a_bad_deterministic_switch_is_one_line(monkeypatch, value):
    monkeypatch.setenv("RESOMAP_DETERMINISTIC", value)
    with pytest.raises(ResoMapError, match=r"^RESOMAP_DETERMINISTIC=.* is not 0 or 1: set it to 1 for deterministic GPU kernels") as error:
        check_environment()
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("value,expected", [("0", False), ("1", True), (None, False)])
def test_the_deterministic_switch_is_0_or_1_and_off_when_unset(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("RESOMAP_DETERMINISTIC", raising=False)
    else:
        monkeypatch.setenv("RESOMAP_DETERMINISTIC", value)
    assert deterministic_mode() is expected
    check_environment()
