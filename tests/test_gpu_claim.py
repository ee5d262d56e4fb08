"""One GPU per stage process: real processes take real file locks (the GPUs themselves are only
named, so this runs on any machine)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers.env import stage_env
from resomap.core.gpu_claim import claim_gpu, visible_gpu_ids

CLAIMER = (
    "import sys, time\nfrom pathlib import Path\nfrom resomap.core.gpu_claim import claim_gpu\n"
    "print(claim_gpu(sys.argv[1].split(','), Path(sys.argv[2])), flush=True)\ntime.sleep(60)\n"
)


def start_claimer(ids: str, lock_dir: Path) -> tuple[subprocess.Popen, str]:
    """A process that claims one of `ids` and holds it; (the process, the index it printed)."""
    process = subprocess.Popen([sys.executable, "-c", CLAIMER, ids, str(lock_dir)], env=stage_env(), stdout=subprocess.PIPE, text=True)
    return process, process.stdout.readline().strip()


@pytest.fixture
def claimers():
    started = []
    yield started
    for process in started:
        process.kill()
        process.wait()


def test_concurrent_stages_get_one_gpu_each_and_a_dead_ones_gpu_comes_back(tmp_path, claimers):
    got = []
    for _ in range(4):
        process, index = start_claimer("0,1,2,3", tmp_path)
        claimers.append(process)
        got.append(index)
    assert got == ["0", "1", "2", "3"]
    assert start_claimer("0,1,2,3", tmp_path)[1] == "None"  # a fifth: every GPU is held
    claimers[2].kill()  # kill -9: the kernel drops its lock
    claimers[2].wait()
    process, index = start_claimer("0,1,2,3", tmp_path)
    claimers.append(process)
    assert index == "2"


def test_gpus_are_claimed_by_their_physical_id_whatever_a_process_calls_them(tmp_path, claimers):
    process, index = start_claimer("4,6", tmp_path)  # CUDA_VISIBLE_DEVICES=4,6: torch's cuda:0 is GPU 4
    claimers.append(process)
    assert index == "0"
    assert claim_gpu(["6", "4"], tmp_path) == 0  # this process sees GPU 6 as its cuda:0, and 6 is free
    assert claim_gpu(["4", "6"], tmp_path) is None  # GPU 4 is the other process's, GPU 6 now this one's


def test_visible_ids_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpu_ids(3) == ["0", "1", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4, 6,7")
    assert visible_gpu_ids(2) == ["4", "6"]
