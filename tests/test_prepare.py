import json

import numpy as np
import pytest
import torch
from PIL import Image

from resomap.core.config import DataParams, ImageCounts
from resomap.data.prepared import load_prepared
from resomap.prepare.resize import resize_image, resize_mask
from resomap.prepare.resolution import prepare_resolution


def test_prepared_arrays_keep_order_across_resolutions(tmp_path):
    data = DataParams(images=ImageCounts(train=20, val=10, test=10))
    for resolution in (16, 32):
        prepare_resolution(data, resolution, tmp_path / str(resolution))
    low, high = load_prepared(tmp_path / "16"), load_prepared(tmp_path / "32")
    assert low.splits["test"].images.shape == (10, 3, 16, 16)
    assert high.splits["test"].images.shape == (10, 3, 32, 32)
    assert (low.splits["test"].labels == high.splits["test"].labels).all()
    # the same image at both resolutions: downsampling the 32 px one lands near the 16 px one
    big = high.splits["test"].images[3].permute(1, 2, 0).numpy()
    small = low.splits["test"].images[3].permute(1, 2, 0).numpy().astype(int)
    assert np.abs(resize_image(big, 16).astype(int) - small).mean() < 12
    assert low.splits["test"].masks.any(axis=(1, 2)).all(), "every test image has its object mask"


def test_manifest_and_classes_are_written(tmp_path):
    manifest = prepare_resolution(DataParams(images=ImageCounts(10, 10, 10)), 24, tmp_path)
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["counts"] == {"train": 10, "val": 10, "test": 10}
    assert json.loads((tmp_path / "classes.json").read_text()) == manifest["classes"]
    assert not list(tmp_path.rglob(".*.tmp")), "atomic writes leave no temp files"


def test_resize_takes_the_shorter_side_and_centre_crops():
    image = np.zeros((40, 80, 3), dtype=np.uint8)
    image[:, 20:60] = 255  # a white centre square 40x40 inside a black 40x80 frame
    out = resize_image(image, 20)
    assert out.shape == (20, 20, 3)
    assert out[2:-2, 2:-2].min() > 240, "the centre crop keeps the white middle"


def test_mask_resize_uses_area_coverage():
    mask = np.zeros((64, 64), dtype=bool)
    mask[:32] = True
    out = resize_mask(mask, 8)
    assert out[:4].all() and not out[4:].any()


@pytest.mark.parametrize("layout", ["flat", "presplit"])
def test_image_folders_prepare_into_arrays(tmp_path, layout):
    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for split in (["train", "val"] if layout == "presplit" else [""]):
        for cls in ("cat", "dog"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(6):
                pixels = rng.integers(0, 256, (30 + i, 50, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    data = DataParams(source="imagefolder", path=str(root), val_fraction=0.2, test_fraction=0.2)
    manifest = prepare_resolution(data, 16, tmp_path / "out")
    prepared = load_prepared(tmp_path / "out")
    assert manifest["classes"] == ["cat", "dog"]
    assert sum(manifest["counts"].values()) == (24 if layout == "presplit" else 12)
    assert prepared.splits["train"].images.shape[1:] == (3, 16, 16)
    assert prepared.splits["test"].masks is None


def test_synthetic_renders_natively_above_256_px():
    """At 512 px the scene is rendered at 512, not upsampled: same layout, finer detail."""
    from resomap.prepare.synthetic import synthetic_source

    at_256 = synthetic_source({"train": 0, "val": 0, "test": 1}, seed=0).splits["test"][0].load()
    at_512 = synthetic_source({"train": 0, "val": 0, "test": 1}, seed=0, native_size=512).splits["test"][0].load()
    assert at_512[0].shape == (512, 512, 3)
    overlap = (resize_mask(at_512[1], 256) & at_256[1]).sum() / at_256[1].sum()
    assert overlap > 0.95, "the object sits in the same place at both native sizes"


def test_worker_processes_write_the_same_bytes_as_one_process(tmp_path):
    """Three chunks of train images over two spawned workers: order and content do not depend on them."""
    data = DataParams(images=ImageCounts(train=150, val=10, test=70))
    for workers in (1, 2):
        prepare_resolution(data, 16, tmp_path / str(workers), workers=workers)
    written = sorted(path.relative_to(tmp_path / "1") for path in (tmp_path / "1").rglob("*") if path.is_file())
    assert [str(path) for path in written] == [
        "classes.json", "manifest.json", "test/images.npy", "test/labels.npy", "test/masks.npy",
        "train/images.npy", "train/labels.npy", "val/images.npy", "val/labels.npy"]
    for path in written:
        assert (tmp_path / "1" / path).read_bytes() == (tmp_path / "2" / path).read_bytes(), path


def test_object_masks_are_kept_for_the_test_split_only(tmp_path):
    manifest = prepare_resolution(DataParams(images=ImageCounts(10, 10, 10)), 16, tmp_path)
    prepared = load_prepared(tmp_path)
    assert manifest["masks_for"] == ["test"]
    assert prepared.splits["train"].masks is None and prepared.splits["val"].masks is None
    assert prepared.splits["test"].masks.shape == (10, 16, 16)


def test_prepared_images_load_channels_last_without_a_copy(tmp_path):
    prepare_resolution(DataParams(images=ImageCounts(10, 10, 10)), 16, tmp_path)
    images = load_prepared(tmp_path).splits["train"].images
    assert images.shape == (10, 3, 16, 16) and images.is_contiguous(memory_format=torch.channels_last)
