"""Read what prepare wrote: uint8 arrays per split, class names, masks where known.

Images and masks are memory-mapped, never read whole: a stage touches only the pages it reads,
the kernel's page cache keeps what memory allows (shared by every process reading the same file,
DDP's ranks included), and a split larger than host memory still trains (resomap/data/prefetch.py
streams its batches). The maps are copy-on-write: nothing a stage does can write into the
prepared files, which DVC's cache may share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from resomap.core import io
from resomap.core.errors import ResoMapError
from resomap.core.grid import UNLABELED
from resomap.data.readahead import MappedRows


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 (N, 3, R, R), channels-last in memory: as prepare wrote it
    labels: torch.Tensor  # int64 (N,)
    masks: torch.Tensor | None  # bool (N, R, R)
    rows_file: MappedRows | None = None  # where memory-mapped images lie on disk, for readahead

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


def load_split(folder: Path, *, in_memory: bool = False) -> Split:
    """The split memory-mapped (`in_memory`: read whole into memory, for comparisons). No NCHW copy:
    the models run channels-last anyway, and at 30k x 512 px a transpose would hold a second 24 GB in
    memory for seconds; `normalize` gives each batch the layout it needs. Labels are read whole
    (8 bytes an image)."""
    mode = None if in_memory else "c"
    images, masks = np.load(folder / "images.npy", mmap_mode=mode), folder / "masks.npy"
    return Split(
        images=torch.from_numpy(images).permute(0, 3, 1, 2),
        labels=torch.from_numpy(np.load(folder / "labels.npy")),
        masks=torch.from_numpy(np.load(masks, mmap_mode=mode)) if masks.is_file() else None,
        rows_file=None if in_memory else MappedRows.of(folder / "images.npy", images),
    )


def load_classes(directory: Path) -> list[str]:
    path = directory / "classes.json"
    if not path.is_file():
        raise ResoMapError(f"{path} not found: run `dvc repro prepare@{directory.name}` first")
    return io.read_json(path)


def load_unlabeled(directory: Path) -> Split | None:
    """The pseudo-labelling pool prepare wrote beside the splits, or None when it wrote none. Its
    labels are the true ones kept aside (the built-in data) or UNKNOWN_LABEL (-1, an image folder's):
    training may only score pseudo-labels against them, never learn from them."""
    folder = directory / UNLABELED
    return load_split(folder) if folder.is_dir() else None


def load_prepared(directory: Path, splits: tuple[str, ...] = ("train", "val", "test")) -> PreparedData:
    return PreparedData(
        classes=load_classes(directory),
        resolution=io.read_json(directory / "manifest.json")["resolution"],
        splits={name: load_split(directory / name) for name in splits},
    )
