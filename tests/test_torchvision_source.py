"""Real torchvision loading on a tiny MNIST written in its on-disk idx format.

MNIST is used rather than CIFAR10 because torchvision checks CIFAR's batch files against
fixed md5 sums, while MNIST's uncompressed raw files are only checked for existence.
"""

import socket
import struct
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torchvision.datasets

from resomap.core.errors import ResoMapError
from resomap.prepare.samples import Sample
from resomap.prepare.torchvision_source import _DATASETS, SUPPORTED_DATASETS, _class_names, torchvision_source
from resomap.prepare.workers import resize_pool, write_split

PER_CLASS = {"train": 10, "test": 2}


def _write_idx(path: Path, array: np.ndarray) -> None:
    """The idx format: zero, zero, dtype code (0x08 = uint8), ndim, big-endian dims, then the bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _tiny_mnist(root: Path) -> dict[str, np.ndarray]:
    """10 classes; every image is filled with a value that encodes its split, class and index."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        labels = np.repeat(np.arange(10), PER_CLASS[split])
        fill = np.arange(len(labels)) + (100 if split == "test" else 0)
        images[split] = np.broadcast_to(fill[:, None, None], (len(labels), 28, 28))
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images[split])
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return images


def _class_counts(samples):
    return Counter(sample.label for sample in samples)


def test_loads_tiny_mnist_with_official_test_and_stratified_val(tmp_path):
    images = _tiny_mnist(tmp_path)
    source = torchvision_source("MNIST", tmp_path, seed=0, val_fraction=0.2, download=False)
    assert source.classes[0] == "0 - zero" and len(source.classes) == 10
    assert source.has_masks is False
    assert _class_counts(source.splits["train"]) == {label: 8 for label in range(10)}
    assert _class_counts(source.splits["val"]) == {label: 2 for label in range(10)}
    assert _class_counts(source.splits["test"]) == {label: 2 for label in range(10)}
    sample = source.splits["test"][5]
    image, mask = sample.load()
    assert mask is None and image.dtype == np.uint8 and image.shape == (28, 28, 3)
    assert sample.name == "MNIST/test/5" and sample.label == 2
    np.testing.assert_array_equal(image, np.repeat(images["test"][5][:, :, None], 3, axis=2))


def test_val_split_is_deterministic_and_depends_on_seed(tmp_path):
    _tiny_mnist(tmp_path)

    def val_names(seed):
        source = torchvision_source("MNIST", tmp_path, seed=seed, val_fraction=0.2, download=False)
        return [sample.name for sample in source.splits["val"]]

    assert val_names(0) == val_names(0)
    assert val_names(0) != val_names(1)


def test_offline_download_fails_fast_with_the_fix(tmp_path):
    start = time.monotonic()
    with pytest.raises(ResoMapError) as error:
        torchvision_source("CIFAR10", tmp_path, seed=0, val_fraction=0.1, download=True)
    assert time.monotonic() - start < 30
    assert socket.getdefaulttimeout() is None  # the download timeout is put back
    message = str(error.value)
    assert "could not be downloaded" in message and str(tmp_path) in message
    assert "synthetic or imagefolder" in message and "manually" in message
    assert "\n" not in message


def test_unknown_name_lists_the_supported_ones(tmp_path):
    with pytest.raises(ResoMapError, match="CIFAR10, CIFAR100") as error:
        torchvision_source("ImageNet", tmp_path, seed=0, val_fraction=0.1)
    assert "'ImageNet'" in str(error.value)


def test_required_datasets_are_supported():
    required = {"CIFAR10", "CIFAR100", "STL10", "Flowers102", "MNIST", "FashionMNIST", "SVHN", "Food101"}
    assert required <= set(SUPPORTED_DATASETS)


@pytest.mark.parametrize("name", SUPPORTED_DATASETS)
def test_table_arguments_are_accepted_by_torchvision(tmp_path, name):
    """Bad keywords or split names raise TypeError/ValueError; only 'files missing' may remain."""
    for kwargs in _DATASETS[name].splits.values():
        with pytest.raises(RuntimeError, match="(?i)not found"):
            getattr(torchvision.datasets, name)(tmp_path, download=False, **kwargs)


def test_datasets_without_class_names_get_numbered_ones():
    given = {"train": [Sample("a", 0, load=None), Sample("b", 2, load=None)], "test": [Sample("c", 3, load=None)]}
    assert _class_names(SimpleNamespace(), given) == ("class_0", "class_1", "class_2", "class_3")


def test_worker_processes_resize_torchvision_samples(tmp_path):
    """Samples that hold the dataset object reach spawned workers, which write their rows in order."""
    _tiny_mnist(tmp_path)
    source = torchvision_source("MNIST", tmp_path, seed=0, val_fraction=0.2, download=False)
    write_split("train", source.splits["train"], 8, False, tmp_path / "in_process", pool=None)
    with resize_pool(source.splits, workers=2) as pool:
        assert pool is not None
        write_split("train", source.splits["train"], 8, False, tmp_path / "in_workers", pool)
    for name in ("images.npy", "labels.npy"):
        assert (tmp_path / "in_workers" / name).read_bytes() == (tmp_path / "in_process" / name).read_bytes()
    assert not (tmp_path / "in_workers" / "masks.npy").exists()
