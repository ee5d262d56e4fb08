"""Resume state for an interrupted training: an undeclared scratch folder, reused only on an exact match.

DVC deletes a stage's outputs before it reruns it, so the state lives outside them, in
`.resomap/resume/MODEL/RES/SEED/state.pt` (gitignored).  It is keyed by hashes of everything
that decides the result: the train params, the cell, the prepared train/val data, the source
of every project module the stage has loaded, and the torch version and device type.  Any
difference and the state is ignored (with a line saying why) and training starts fresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import signal
import sys
from pathlib import Path
from types import FrameType

import numpy as np
import torch

from resomap import io
from resomap.config import TrainParams
from resomap.data.prepared import PreparedData
from resomap.paths import Cell

RESUME_DIR = Path(".resomap/resume")
STATE_FILE = "state.pt"
_PROJECT_PACKAGES = ("resomap", "stages")


def _sha256(*chunks: bytes) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def params_hash(train: TrainParams) -> str:
    return _sha256(json.dumps(dataclasses.asdict(train), sort_keys=True).encode())


def data_hash(data: PreparedData, splits: tuple[str, ...] = ("train", "val")) -> str:
    """Exact: the bytes of the arrays training reads (one pass over memory, cheap next to an epoch)."""
    digest = hashlib.sha256(json.dumps([data.classes, data.resolution]).encode())
    for name in splits:
        split = data.splits[name]
        images = split.images.permute(0, 2, 3, 1).numpy()  # N x R x R x 3 as prepared: no 24 GB NCHW copy
        for array in (np.ascontiguousarray(images), split.labels.numpy()):
            digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
            digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def code_hash() -> str:
    """Source of every loaded project module: the code the stage runs (dvc.yaml's deps, as imported)."""
    root = Path(__file__).resolve().parents[1]
    files = set()
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name.split(".")[0] in _PROJECT_PACKAGES and path and path.endswith(".py"):
            files.add(Path(path).resolve())
    chunks = []
    for path in sorted(files):
        chunks += [str(path.relative_to(root) if path.is_relative_to(root) else path).encode(), b"\0", path.read_bytes()]
    return _sha256(*chunks)


def resume_key(cell: Cell, train: TrainParams, data: PreparedData, device: torch.device, processes: int = 1) -> dict[str, str]:
    """What must match for a saved state to be reused, part by part (so a mismatch can say which)."""
    return {
        "train params": params_hash(train),
        "cell": str(cell),
        "prepared data": data_hash(data),
        "code": code_hash(),
        "runtime": f"torch {torch.__version__} on {device.type} x {processes} processes",
    }


class ResumeStore:
    """One cell's resume state: saved atomically after every epoch, removed when the cell finishes."""

    def __init__(self, cell: Cell, key: dict[str, str], root: Path = RESUME_DIR):
        self.cell, self.key = cell, key
        self.path = root / cell.key / STATE_FILE

    def load(self) -> dict | None:
        """The saved state when its key matches; None (and a line saying why) otherwise."""
        if not self.path.is_file():
            return None
        try:
            state = io.load_state_dict(self.path)
        except Exception as error:  # a state from an older layout or a damaged file: never fatal
            print(f"ignoring resume state for train {self.cell} (unreadable: {error}); training from scratch", flush=True)
            return None
        saved = state.get("key", {})
        changed = [part for part in self.key if saved.get(part) != self.key[part]]
        if changed:
            print(
                f"ignoring resume state for train {self.cell} ({', '.join(changed)} changed); training from scratch",
                flush=True,
            )
            return None
        return state

    def save(self, state: dict) -> None:
        io.save_state_dict(self.path, {**state, "key": self.key})

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
        for folder in self.path.parents[: len(self.cell.key.parts)]:  # seed, resolution, model folders
            try:
                folder.rmdir()
            except OSError:  # not empty: another cell's state is in it
                break


class StopSignals:
    """SIGINT/SIGTERM set a flag that training polls at safe points; a second signal acts as usual."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __call__(self) -> bool:
        return self.received is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else ""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __enter__(self) -> "StopSignals":
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
