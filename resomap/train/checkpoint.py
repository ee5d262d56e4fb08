"""Checkpoints of an interrupted training: what a fit saves after every epoch, where it is kept,
and when it may be reused (an undeclared scratch folder, reused only on an exact match).

DVC deletes a stage's outputs before it reruns it, so the state lives outside them, in
`.resomap/resume/MODEL/RES/SEED/state.pt` (gitignored).  It is keyed by hashes of everything
that decides the result: the train params, the cell, the prepared train/val data, the source
of every project module the stage has loaded, the torch version, device type and process count,
and the autocast dtype train.amp resolves to on this device (`auto` is bf16 on one GPU, fp16 on
another).  Any difference and the state is ignored (with a line saying why) and training starts
fresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from resomap.core import io
from resomap.core.config import TrainParams
from resomap.core.device import amp_dtype, numerics
from resomap.core.grid import Cell
from resomap.core.hashing import code_hash
from resomap.core.hashing import sha256 as _sha256
from resomap.data.prepared import PreparedData
from resomap.train.records import EarlyStopper, EpochStats, FitResult, KeptEpoch

if TYPE_CHECKING:  # fit builds it; a checkpoint only reads and fills it
    from torch import nn

    from resomap.train.step import TrainStep

RESUME_DIR = Path(".resomap/resume")
STATE_FILE = "state.pt"


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


def resume_key(cell: Cell, train: TrainParams, data: PreparedData, device: torch.device, processes: int = 1) -> dict[str, str]:
    """What must match for a saved state to be reused, part by part (so a mismatch can say which)."""
    return {
        "train params": params_hash(train),
        "cell": str(cell),
        "prepared data": data_hash(data),
        "code": code_hash(),
        "runtime": f"torch {torch.__version__} on {device.type} x {processes} processes",
        # train.amp is in the params, but what it resolves to depends on the device
        "autocast": str(amp_dtype(train.amp, device) or "off"),
        # RESOMAP_DETERMINISTIC and the GPU's TF32 choose other kernels (call after configure_backends)
        "numerics": ", ".join(f"{key} {value}" for key, value in numerics(device).items()),
    }


class Checkpointer:
    """What fit resumes from and where it saves each epoch's state; this one keeps nothing."""

    def __init__(self, resumed: dict | None = None):
        self.resumed = resumed

    def save(self, state: dict) -> None:
        pass


class ResumeStore(Checkpointer):
    """One cell's resume state: loaded when its key matches, saved atomically after every epoch
    (by the writing rank only), removed when the cell finishes."""

    def __init__(self, cell: Cell, key: dict[str, str], root: Path = RESUME_DIR, *, writes: bool = True):
        self.cell, self.key, self.writes = cell, key, writes
        self.path = root / cell.key / STATE_FILE
        super().__init__(self._load())

    def _load(self) -> dict | None:
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
        if self.writes:
            io.save_state_dict(self.path, {**state, "key": self.key})

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
        for folder in self.path.parents[: len(self.cell.key.parts)]:  # seed, resolution, model folders
            try:
                folder.rmdir()
            except OSError:  # not empty: another cell's state is in it
                break


def capture(epoch: int, model: nn.Module, step: TrainStep, stopper: EarlyStopper, generator, result: FitResult) -> dict:
    """Everything a resumed fit needs to continue as if never stopped; tensors and plain values only."""
    state = {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": step.optimizer.state_dict(),
        "scheduler": step.schedule.scheduler.state_dict() if step.schedule.scheduler is not None else None,
        "scaler": step.scaler.state_dict(),
        "ema": step.ema.averaged.state_dict() if step.ema is not None else None,
        "stopper": {"best": stopper.best, "epochs_since_best": stopper.epochs_since_best},
        "best_state": result.best_state,
        "best_epoch": result.best_epoch,
        "top": [vars(kept) for kept in result.top],
        "history": [dataclasses.asdict(stats) for stats in result.history],
        "micro_batch_size": step.micro_batch_size,
        "oom_backoffs": step.oom_backoffs,
        "rng": {"generator": generator.get_state(), "torch": torch.get_rng_state()},
    }
    if step.device.type == "cuda":
        state["rng"]["cuda"] = torch.cuda.get_rng_state(step.device)
    return state


def restore(state: dict, model: nn.Module, step: TrainStep, stopper: EarlyStopper, generator, result: FitResult) -> int:
    """Load a capture() into a freshly built fit; returns the epoch it was taken after."""
    model.load_state_dict(state["model"])
    step.optimizer.load_state_dict(state["optimizer"])
    if step.schedule.scheduler is not None:
        step.schedule.scheduler.load_state_dict(state["scheduler"])
    step.scaler.load_state_dict(state["scaler"])
    if step.ema is not None:
        step.ema.averaged.load_state_dict(state["ema"])
    stopper.best, stopper.epochs_since_best = state["stopper"]["best"], state["stopper"]["epochs_since_best"]
    result.best_state, result.best_epoch = state["best_state"], state["best_epoch"]
    result.top = [KeptEpoch(**kept) for kept in state["top"]]
    result.history = [EpochStats(**stats) for stats in state["history"]]
    step.micro_batch_size, step.oom_backoffs = state["micro_batch_size"], state["oom_backoffs"]
    generator.set_state(state["rng"]["generator"])
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and step.device.type == "cuda":
        torch.cuda.set_rng_state(state["rng"]["cuda"], step.device)
    return state["epoch"]
