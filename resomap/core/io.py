"""Atomic output writers: a killed stage never leaves a half-written file for DVC to cache."""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np

from resomap.core.errors import ResoMapError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO]:
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def write_json(path: str | Path, data: object) -> None:
    with atomic_open(path) as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")


def read_json(path: str | Path) -> dict:
    with open(path) as f:
        return json.load(f)


def write_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Uncompressed: the arrays load fast and DVC dedups identical files anyway."""
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


def write_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as f:
        np.save(f, array)


def save_state_dict(path: str | Path, state: dict) -> None:
    import torch  # on use: prepare and aggregate write no tensors, and torch is a second of start-up

    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def load_state_dict(path: str | Path) -> dict:
    """weights_only=True: a checkpoint can carry tensors, never code. One that carries a pickled
    object is refused before anything in it runs."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()[0]
        raise ResoMapError(
            f"{path} holds more than tensors, refusing to load it ({reason}): "
            "rebuild it with `dvc repro -f` on the stage that writes it, and never load checkpoints from untrusted sources"
        ) from None
