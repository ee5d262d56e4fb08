"""The unlabeled pool that pseudo-labelling draws from: prepared beside train/val/test, with the
built-in data's true labels kept aside or an image folder's labels unknown, and never a change to
what a study without a pool prepares."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_imagefolder import _write_png
from test_source_checks import check, folder_params, photos

from helpers.study_repo import shipped_params
from resomap.core.config import DataParams, ImageCounts
from resomap.core.errors import ResoMapError
from resomap.data.prepared import load_prepared, load_unlabeled
from resomap.prepare.fingerprint import source_fingerprint
from resomap.prepare.resolution import prepare_resolution
from resomap.prepare.synthetic import CLASS_NAMES

SPLIT_FILES = ("classes.json", "train/images.npy", "train/labels.npy", "val/images.npy", "val/labels.npy",
               "test/images.npy", "test/labels.npy", "test/masks.npy")


def same_files(a: Path, b: Path, names=SPLIT_FILES) -> bool:
    """Whether the files `names` (those present under `a`) are byte-identical under `b`."""
    return all((a / name).read_bytes() == (b / name).read_bytes() for name in names if (a / name).exists())


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, Path]:
    """The same small synthetic study prepared at 16 px without a pool and with one of 25 images."""
    root = tmp_path_factory.mktemp("synthetic")
    for name, unlabeled in (("plain", 0), ("pool", 25)):
        prepare_resolution(DataParams(images=ImageCounts(train=20, val=10, test=10, unlabeled=unlabeled)), 16, root / name)
    return root / "plain", root / "pool"


def test_no_pool_writes_no_unlabeled_folder_and_no_new_manifest_keys(synthetic):
    plain, _ = synthetic
    manifest = json.loads((plain / "manifest.json").read_text())
    assert not (plain / "unlabeled").exists()
    assert manifest["counts"] == {"train": 20, "val": 10, "test": 10}
    assert "unlabeled_labels_known" not in manifest
    assert load_unlabeled(plain) is None


def test_the_synthetic_pool_holds_balanced_true_labels_and_leaves_the_splits_as_they_were(synthetic):
    plain, pool = synthetic
    manifest = json.loads((pool / "manifest.json").read_text())
    assert manifest["counts"] == {"train": 20, "val": 10, "test": 10, "unlabeled": 25}
    assert manifest["unlabeled_labels_known"] is True
    assert same_files(plain, pool), "train/val/test and classes.json are byte-identical with or without the pool"
    images, labels = np.load(pool / "unlabeled/images.npy"), np.load(pool / "unlabeled/labels.npy")
    assert images.shape == (25, 16, 16, 3) and images.dtype == np.uint8 and labels.dtype == np.int64
    assert not (pool / "unlabeled/masks.npy").exists()
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    assert counts.max() - counts.min() <= 1, "classes balanced by whole blocks, like the other splits"
    seen = {image.tobytes() for split in ("train", "val", "test") for image in np.load(pool / split / "images.npy")}
    assert not any(image.tobytes() in seen for image in images), "the pool shares no image with a split"
    split = load_unlabeled(pool)
    assert split.images.shape == (25, 3, 16, 16) and split.masks is None
    assert split.labels.tolist() == labels.tolist()
    assert set(load_prepared(pool).splits) == {"train", "val", "test"}


@pytest.fixture
def labelled(tmp_path) -> Path:
    return photos(tmp_path / "photos", {"cats": 3, "dogs": 3})


def nested_pool(folder: Path) -> Path:
    """Four unlabeled images at three depths; the folder names look like classes and mean nothing."""
    photos(folder, {"cats": 1, "2024/june": 2})
    _write_png(folder / "top.png", value=200)
    return folder


def test_an_image_folder_pool_is_read_at_any_depth_with_unknown_labels(labelled, tmp_path):
    pool = nested_pool(tmp_path / "pool")
    plain = prepare_resolution(folder_params(labelled), 8, tmp_path / "plain")
    manifest = prepare_resolution(folder_params(labelled, unlabeled_path=str(pool)), 8, tmp_path / "out")
    assert manifest["counts"] == {**plain["counts"], "unlabeled": 4}
    assert manifest["unlabeled_labels_known"] is False
    assert same_files(tmp_path / "plain", tmp_path / "out")
    split = load_unlabeled(tmp_path / "out")
    assert split.images.shape == (4, 3, 8, 8) and split.labels.tolist() == [-1] * 4


def broken_pool(tmp_path: Path) -> Path:
    pool = nested_pool(tmp_path / "pool")
    (pool / "2024/june/broken.png").write_text("a text file with an image extension")
    return pool


def test_a_bad_pool_image_is_skipped_and_listed(labelled, tmp_path):
    pool = broken_pool(tmp_path)
    manifest = prepare_resolution(folder_params(labelled, unlabeled_path=str(pool)), 8, tmp_path / "out")
    assert manifest["counts"]["unlabeled"] == 4
    assert [bad["path"] for bad in manifest["skipped"]] == [f"{pool.as_posix()}/2024/june/broken.png"]
    assert manifest["skipped"][0]["reason"].startswith("not an image PIL can read")


def test_a_bad_pool_image_stops_under_on_bad_image_error(labelled, tmp_path):
    data = folder_params(labelled, unlabeled_path=str(broken_pool(tmp_path)), on_bad_image="error")
    with pytest.raises(ResoMapError, match=r"^bad image .*/pool/2024/june/broken\.png: not an image .*set data\.on_bad_image: skip"):
        prepare_resolution(data, 8, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_pool_of_bad_images_only_is_refused(labelled, tmp_path):
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool/fake.jpg").write_bytes(b"")
    with pytest.raises(ResoMapError, match=r"^data\.unlabeled_path .*pool has no usable images, all 1 are bad .*fake\.jpg: empty file"):
        prepare_resolution(folder_params(labelled, unlabeled_path=str(tmp_path / "pool")), 8, tmp_path / "out")


@pytest.mark.parametrize("make, message", [
    (lambda pool: None, r"^image folder .*pool does not exist: set data\.unlabeled_path to a folder of unlabeled images, or to null"),
    (lambda pool: pool.write_text("a file"), r"^image folder .*pool is not a directory: set data\.unlabeled_path to"),
    (lambda pool: (pool / "sub").mkdir(parents=True) or (pool / "sub/notes.txt").write_text("no image"),
     r"^data\.unlabeled_path .*pool has no images \(.*\): add unlabeled images to it, or set it to null"),
])
def test_a_missing_or_empty_pool_stops_in_one_line_before_anything_is_written(labelled, tmp_path, make, message):
    make(tmp_path / "pool")
    data = folder_params(labelled, unlabeled_path=str(tmp_path / "pool"))
    for refuse in (lambda: prepare_resolution(data, 8, tmp_path / "out"), lambda: source_fingerprint(data, tmp_path / "hashes.sqlite")):
        with pytest.raises(ResoMapError, match=message) as refused:
            refuse()
        assert "\n" not in str(refused.value)
    assert not (tmp_path / "out").exists()


def class_folder(labelled: Path, tmp_path: Path) -> Path:
    return labelled / "dogs"


def link_to_a_labelled_image(labelled: Path, tmp_path: Path) -> Path:
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool/copy.png").symlink_to(labelled / "dogs/001.png")
    return tmp_path / "pool"


@pytest.mark.parametrize("pool_of", [class_folder, link_to_a_labelled_image])
def test_a_pool_file_that_is_a_labelled_image_is_refused(labelled, tmp_path, pool_of):
    data = folder_params(labelled, unlabeled_path=str(pool_of(labelled, tmp_path)))
    leak = r"^data\.unlabeled_path: \S+\.png is also the labelled image dogs/00\d\.png of data\.path, so the pool would leak"
    with pytest.raises(ResoMapError, match=leak):
        prepare_resolution(data, 8, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_fingerprint_follows_the_pool_files(labelled, tmp_path):
    cache, pool = tmp_path / "hashes.sqlite", nested_pool(tmp_path / "pool")
    without = source_fingerprint(folder_params(labelled), cache)
    first = source_fingerprint(folder_params(labelled, unlabeled_path=str(pool)), cache)
    assert "unlabeled" not in without and {k: first[k] for k in without} == without
    assert first["unlabeled"]["files"] == 4
    _write_png(pool / "2024/june/001.png", value=99, size=(9, 6))  # same name, other pixels
    edited = source_fingerprint(folder_params(labelled, unlabeled_path=str(pool)), cache)
    assert edited["unlabeled"]["digest"] != first["unlabeled"]["digest"] and edited["digest"] == first["digest"]


def folder_study(tmp_path: Path, labelled: Path, pool: Path) -> Path:
    """A repo folder whose params.yaml prepares `labelled` with the pool `pool`."""
    return shipped_params(tmp_path / "repo", {"data.source": "imagefolder", "data.path": str(labelled), "data.unlabeled_path": str(pool)})


def test_the_check_stage_writes_the_pool_into_the_fingerprint(labelled, tmp_path):
    repo = folder_study(tmp_path, labelled, nested_pool(tmp_path / "pool"))
    done = check(repo)
    assert done.returncode == 0, done.stderr
    assert json.loads((repo / "data/source.json").read_text())["unlabeled"]["files"] == 4


def test_the_check_stage_refuses_a_missing_pool_in_one_line(labelled, tmp_path):
    done = check(folder_study(tmp_path, labelled, tmp_path / "nowhere"))
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "does not exist: set data.unlabeled_path to a folder of unlabeled images" in done.stderr
