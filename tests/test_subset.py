"""data.subset_fraction: a stratified share of the train split, seeded, nested, recorded in the
manifest; val and test stay whole; a fraction that empties a class stops before anything is written."""

import json

import numpy as np
import pytest
from PIL import Image

from helpers.env import shipped
from resomap.core.config import DataParams, ImageCounts, ParamsError, parse_params, validate
from resomap.core.errors import ResoMapError
from resomap.data.prepared import load_prepared
from resomap.prepare.resolution import prepare_resolution
from resomap.prepare.samples import Sample
from resomap.prepare.splits import stratified_subset


def samples(counts: dict[int, int]) -> list[Sample]:
    """Samples named label-index, class by class, interleaved as a folder listing would not be."""
    items = [Sample(f"{label}-{i}", label, lambda: None) for label, count in counts.items() for i in range(count)]
    return sorted(items, key=lambda sample: (int(sample.name.split("-")[1]), sample.label))


def per_class(kept: list[Sample]) -> dict[int, int]:
    labels, counts = np.unique([sample.label for sample in kept], return_counts=True)
    return dict(zip(labels.tolist(), counts.tolist()))


def test_each_class_keeps_its_share_rounded_half_up_in_the_original_order():
    given = samples({0: 10, 1: 25, 2: 3})
    kept = stratified_subset(given, ("a", "b", "c"), 0.2, seed=0)
    assert per_class(kept) == {0: 2, 1: 5, 2: 1}  # 3 x 0.2 = 0.6 rounds up to 1
    positions = [given.index(sample) for sample in kept]
    assert positions == sorted(positions)


def test_the_subset_is_seeded_and_smaller_fractions_nest_in_larger_ones():
    given = samples({0: 40, 1: 40})
    small = stratified_subset(given, ("a", "b"), 0.2, seed=3)
    assert small == stratified_subset(given, ("a", "b"), 0.2, seed=3)
    assert small != stratified_subset(given, ("a", "b"), 0.2, seed=4)
    assert {s.name for s in small} <= {s.name for s in stratified_subset(given, ("a", "b"), 0.5, seed=3)}


def test_a_fraction_of_one_keeps_everything():
    given = samples({0: 3, 1: 2})
    assert stratified_subset(given, ("a", "b"), 1.0, seed=0) is given


def test_a_fraction_that_empties_a_class_names_it_and_the_fraction_that_keeps_it():
    with pytest.raises(ResoMapError) as error:
        stratified_subset(samples({0: 50, 1: 4}), ("big", "rare"), 0.1, seed=0)
    assert str(error.value) == (
        "data.subset_fraction 0.1 keeps no train image of class 'rare' (4 images): raise it to at least 0.125, "
        "or add images of that class"
    )


def test_prepare_cuts_train_only_and_records_the_fraction(tmp_path):
    data = DataParams(images=ImageCounts(train=100, val=20, test=20), subset_fraction=0.3)
    manifest = prepare_resolution(data, 16, tmp_path / "sub")
    full = prepare_resolution(DataParams(images=ImageCounts(train=100, val=20, test=20)), 16, tmp_path / "full")
    assert manifest["subset_fraction"] == 0.3 and full["subset_fraction"] == 1.0
    assert manifest["counts"] == {"train": 30, "val": 20, "test": 20}
    assert json.loads((tmp_path / "sub/manifest.json").read_text())["counts"]["train"] == 30
    sub, whole = load_prepared(tmp_path / "sub"), load_prepared(tmp_path / "full")
    assert np.bincount(sub.splits["train"].labels.numpy()).tolist() == [3] * 10  # 10 classes, 10 images each
    for split in ("val", "test"):
        assert (sub.splits[split].images == whole.splits[split].images).all()
    # every kept train image is one of the full split's, unchanged
    full_rows = {bytes(image.numpy().tobytes()) for image in whole.splits["train"].images}
    assert all(bytes(image.numpy().tobytes()) in full_rows for image in sub.splits["train"].images)


def test_an_image_folder_class_the_fraction_empties_stops_before_anything_is_written(tmp_path):
    root = tmp_path / "images"
    for name, count in {"many": 30, "few": 3}.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (8, 8), (i * 8, 0, 0)).save(root / name / f"{i}.png")
    data = DataParams(source="imagefolder", path=str(root), subset_fraction=0.2, val_fraction=0.2, test_fraction=0.2)
    with pytest.raises(ResoMapError, match="keeps no train image of class 'few'"):
        prepare_resolution(data, 8, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", [0, -0.1, 1.5])
def test_the_fraction_is_validated_with_the_key_named(value):
    raw = shipped()
    raw["data"]["subset_fraction"] = value
    with pytest.raises(ParamsError, match=r"data.subset_fraction must be above 0 and at most 1"):
        validate(parse_params(raw))
