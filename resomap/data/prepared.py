"""Read what prepare wrote: uint8 arrays per split, class names, masks where known."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from resomap import io
from resomap.errors import ResoMapError


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 (N, 3, R, R)
    labels: torch.Tensor  # int64 (N,)
    masks: torch.Tensor | None  # bool (N, R, R)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class PreparedData:
    classes: list[str]
    resolution: int
    splits: dict[str, Split]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load_split(path: Path) -> Split:
    with np.load(path) as arrays:
        images = torch.from_numpy(arrays["images"]).permute(0, 3, 1, 2).contiguous()
        masks = torch.from_numpy(arrays["masks"]) if "masks" in arrays else None
        return Split(images, torch.from_numpy(arrays["labels"]), masks)


def load_classes(directory: Path) -> list[str]:
    path = directory / "classes.json"
    if not path.is_file():
        raise ResoMapError(f"{path} not found: run `dvc repro prepare@{directory.name}` first")
    return io.read_json(path)


def load_prepared(directory: Path, splits: tuple[str, ...] = ("train", "val", "test")) -> PreparedData:
    return PreparedData(
        classes=load_classes(directory),
        resolution=io.read_json(directory / "manifest.json")["resolution"],
        splits={name: load_split(directory / f"{name}.npz") for name in splits},
    )
