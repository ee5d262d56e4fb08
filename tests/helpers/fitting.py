"""In-process fits of tiny_cnn on the CPU, shared by the training tests, and how they compare two."""

from __future__ import annotations

import dataclasses

import torch

from resomap.models.registry import build_model
from resomap.train.fit import fit

CPU = torch.device("cpu")
TIMINGS = {"epoch_seconds", "images_per_s", "train_seconds"}


def run_fit(data, train, **kwargs):
    """fit() from the same initial weights every time (seed 0)."""
    torch.manual_seed(0)
    return fit(build_model("tiny_cnn", data.num_classes), data, train, seed=0, device=CPU, **kwargs)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def without_timings(history) -> list[dict]:
    return [{k: v for k, v in dataclasses.asdict(s).items() if k not in TIMINGS} for s in history]
