"""Standard torchvision classification sets as a data source, on their official splits."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torchvision.datasets

from resomap.core.errors import ResoMapError
from resomap.prepare.decode import pil_to_rgb
from resomap.prepare.samples import LoadedImage, Sample, SourceData
from resomap.prepare.splits import carve_splits

# torchvision opens URLs with no timeout; a firewalled network would otherwise hang for minutes.
NETWORK_TIMEOUT_S = 15


@dataclass(frozen=True)
class _Dataset:
    """How one torchvision class names its shipped splits, and where it keeps its labels."""

    splits: dict[str, dict[str, Any]]  # our split name -> constructor keyword arguments
    labels_attr: str


def _train_flag(labels_attr: str) -> _Dataset:
    return _Dataset({"train": {"train": True}, "test": {"train": False}}, labels_attr)


def _split_names(labels_attr: str, train: str = "train", with_val: bool = False) -> _Dataset:
    names = {"train": train, "test": "test"} | ({"val": "val"} if with_val else {})
    return _Dataset({split: {"split": name} for split, name in names.items()}, labels_attr)


_DATASETS = {
    "CIFAR10": _train_flag("targets"),
    "CIFAR100": _train_flag("targets"),
    "MNIST": _train_flag("targets"),
    "FashionMNIST": _train_flag("targets"),
    "STL10": _split_names("labels"),
    "SVHN": _split_names("labels"),
    "Food101": _split_names("_labels"),
    "Flowers102": _split_names("_labels", with_val=True),
    "DTD": _split_names("_labels", with_val=True),
    "FGVCAircraft": _split_names("_labels", with_val=True),
    "OxfordIIITPet": _split_names("_labels", train="trainval"),
}
SUPPORTED_DATASETS = tuple(_DATASETS)


def torchvision_source(name: str, root: Path, *, seed: int, val_fraction: float, download: bool = True) -> SourceData:
    """The dataset's own train/test (and val, where it ships one); else val is carved from train.

    Images stay in the dataset object and are decoded only when a sample is loaded.
    """
    if name not in _DATASETS:
        raise ResoMapError(f"unknown torchvision dataset {name!r}: use one of {', '.join(SUPPORTED_DATASETS)}")
    spec, root = _DATASETS[name], Path(root)
    shipped = {split: _open(name, root, kwargs, download) for split, kwargs in spec.splits.items()}
    given = {split: _samples(name, split, dataset, spec.labels_attr) for split, dataset in shipped.items()}
    missing = {} if "val" in given else {"val": val_fraction}
    return SourceData(_class_names(shipped["train"], given), carve_splits(given, missing, seed), has_masks=False)


def _open(name: str, root: Path, kwargs: dict[str, Any], download: bool) -> Any:
    """Construct one split, turning torchvision's missing-file and network errors into a fix."""
    try:
        with _network_timeout(NETWORK_TIMEOUT_S):
            return getattr(torchvision.datasets, name)(root, download=download, **kwargs)
    except (RuntimeError, OSError) as error:
        reason = " ".join(str(error).split())
        problem = f"could not be downloaded to {root}" if download else f"is not in {root} and download is off"
        raise ResoMapError(
            f"torchvision dataset {name} {problem} ({reason}): ResoMap runs offline only with "
            f"data.source: synthetic or imagefolder; otherwise place the {name} files in {root} manually"
        ) from error


@contextmanager
def _network_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _samples(name: str, split: str, dataset: Any, labels_attr: str) -> list[Sample]:
    """Labels come from the dataset's own array, so listing samples decodes no image."""
    labels = np.asarray(getattr(dataset, labels_attr), dtype=np.int64).tolist()
    return [
        Sample(name=f"{name}/{split}/{index}", label=label, load=partial(_load_item, dataset, index))
        for index, label in enumerate(labels)
    ]


def _load_item(dataset: Any, index: int) -> LoadedImage:
    image, _ = dataset[index]
    return pil_to_rgb(image), None


def _class_names(dataset: Any, given: dict[str, list[Sample]]) -> tuple[str, ...]:
    """The dataset's own class names; numbered ones for sets like SVHN that have none."""
    names = getattr(dataset, "classes", None)
    if names:
        return tuple(names)
    num_classes = 1 + max(sample.label for samples in given.values() for sample in samples)
    return tuple(f"class_{i}" for i in range(num_classes))
