"""The interface every data source returns, so `prepare` treats them all alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from resomap.core.grid import UNLABELED

SPLITS = ("train", "val", "test")
# The pseudo-labelling pool, UNLABELED, is written like a split but kept out of SPLITS, so it is
# never checked for class coverage nor scored; its labels are the true ones kept aside (synthetic)
# or UNKNOWN_LABEL (an image folder's).
UNKNOWN_LABEL = -1

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
    """The labelled samples of a source, already split into train/val/test, and its unlabeled pool."""

    classes: tuple[str, ...]
    splits: dict[str, list[Sample]]  # keys: SPLITS
    has_masks: bool
    skipped: tuple[BadImage, ...] = ()  # sorted by path; only image folders skip files
    unlabeled: list[Sample] = field(default_factory=list)  # the pseudo-labelling pool; empty: none

    def written_splits(self) -> dict[str, list[Sample]]:
        """What prepare writes, in order: SPLITS, then the pool when there is one (so a study
        without one writes exactly what it did before pools existed)."""
        return {**self.splits, UNLABELED: self.unlabeled} if self.unlabeled else dict(self.splits)
