"""The interface every data source returns, so `prepare` treats them all alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "val", "test")

# RGB uint8 array (H, W, 3) and, when the source knows where the object is, a bool mask (H, W).
LoadedImage = tuple[np.ndarray, "np.ndarray | None"]


@dataclass(frozen=True)
class Sample:
    """One image, decoded only when prepare reaches it so memory stays flat for large folders."""

    name: str  # a file path or a synthetic id: shown in manifests and error messages
    label: int
    load: Callable[[], LoadedImage]


@dataclass(frozen=True)
class BadImage:
    """A file that looked like an image but could not be decoded, and was left out."""

    path: str  # relative to the data folder, as in Sample.name
    reason: str  # one line, e.g. "truncated JPEG (image file is truncated)"


@dataclass(frozen=True)
class SourceData:
    """The labelled samples of a source, already split into train/val/test."""

    classes: tuple[str, ...]
    splits: dict[str, list[Sample]]  # keys: SPLITS
    has_masks: bool
    skipped: tuple[BadImage, ...] = ()  # sorted by path; only image folders skip files
