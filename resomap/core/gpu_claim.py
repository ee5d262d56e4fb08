"""One GPU per stage process, claimed with an OS file lock, so concurrent stages spread over a host's GPUs.

DVC's queue (`dvc queue start -j 4`) starts its workers with the same environment, and no tool
pins a GPU per worker, so every stage would pick cuda:0. Instead a stage that sees several GPUs
takes the first one whose lock file it can lock (`flock`, non-blocking) and keeps the lock for
the life of its process: the kernel drops it when the process exits or dies, even by kill -9,
so a claim never outlives its holder. The lock files are named by the GPU's CUDA_VISIBLE_DEVICES
entry (its physical id when that is unset), so processes that see the same GPUs under different
indices still agree. `RESOMAP_DEVICE=cuda:N` picks a GPU by hand and claims nothing.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

LOCK_DIR = Path(tempfile.gettempdir()) / "resomap-gpu-claims"
_held: list[int] = []  # open descriptors of this process's claims: closing one would drop its lock


def visible_gpu_ids(count: int) -> list[str]:
    """The ids of the `count` GPUs torch sees, as CUDA_VISIBLE_DEVICES names them (or 0..count-1)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(index) for index in range(count)]
    return [entry.strip() for entry in listed.split(",")][:count]


def claim_gpu(ids: list[str], lock_dir: Path = LOCK_DIR) -> int | None:
    """The index (into `ids`) of the first GPU no other live process holds, now held by this one;
    None when every GPU is held."""
    lock_dir.mkdir(parents=True, exist_ok=True, mode=0o1777)
    for index, gpu in enumerate(ids):
        fd = os.open(lock_dir / f"gpu-{gpu.replace('/', '_')}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _held.append(fd)
        return index
    return None
