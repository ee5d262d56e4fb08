"""The repository root and the environments and ports of the tests that run subprocesses or servers."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def shipped() -> dict:
    """The repository's params.yaml as a mapping, for tests that change one key and validate."""
    return yaml.safe_load((REPO / "params.yaml").read_text())


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
