"""Shared fixtures: tiny prepared datasets written by the real prepare code; helpers for the tests
that run stage scripts or servers as subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from resomap.config import DataParams, SplitSizes
from resomap.data.prepare import prepare_resolution

REPO = Path(__file__).resolve().parents[1]


def stage_env(**extra: str) -> dict:
    """The environment to run a stage script (`python -m stages.X`) from any folder, on the CPU
    (GPUs hidden: CPU results are the bit-reproducible ones), plus `extra`."""
    return {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "", **extra}


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports the kernel hands out as free right now (all held open
    together while picking, so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    """data/prepared-style folder at 32 px with 120/40/40 synthetic images."""
    out = tmp_path_factory.mktemp("prepared") / "32"
    prepare_resolution(DataParams(size=SplitSizes(train=120, val=40, test=40)), 32, out)
    return out


@pytest.fixture(scope="session")
def aggregated(tmp_path_factory) -> tuple[Path, str]:
    """The real aggregate stage, run in a folder holding the known study of tests/study_files.py:
    (folder, stage stdout)."""
    from study_files import write_study

    folder = tmp_path_factory.mktemp("aggregate")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        write_study(latency_budget_ms=0.5)
    finally:
        os.chdir(cwd)
    done = subprocess.run([sys.executable, "-m", "stages.aggregate"], cwd=folder, env=stage_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return folder, done.stdout
