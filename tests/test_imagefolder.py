from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resomap.core.errors import ResoMapError
from resomap.prepare.decode import load_rgb
from resomap.prepare.imagefolder import imagefolder_source
from resomap.prepare.splits import stratified_split

SPLIT_ARGS = {"seed": 0, "val_fraction": 0.2, "test_fraction": 0.2}


def _write_png(path: Path, value: int = 0, size=(6, 4)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 0, 0)).save(path)
    return path


def _make_classes(folder: Path, counts: dict[str, int]) -> None:
    for name, count in counts.items():
        for i in range(count):
            _write_png(folder / name / f"img{i:02d}.png", value=i)


def _names(source, split):
    return [sample.name for sample in source.splits[split]]


def _label_counts(source, split):
    return Counter(source.classes[sample.label] for sample in source.splits[split])


# --- load_rgb -------------------------------------------------------------------------------


def _save(tmp_path, name, image, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def test_load_rgb_jpeg_and_png(tmp_path):
    for name in ("a.jpg", "a.png"):
        array = load_rgb(_save(tmp_path, name, Image.new("RGB", (6, 4), (200, 10, 10))))
        assert array.shape == (4, 6, 3) and array.dtype == np.uint8
        assert abs(int(array[0, 0, 0]) - 200) <= 3  # JPEG is lossy


@pytest.mark.parametrize(
    "image",
    [
        Image.new("RGB", (6, 4), (30, 60, 90)).quantize(4),  # palette
        Image.new("L", (6, 4), 77),
        Image.new("RGBA", (6, 4), (30, 60, 90, 10)),
    ],
    ids=["palette", "grayscale", "rgba"],
)
def test_load_rgb_converts_png_modes(tmp_path, image):
    array = load_rgb(_save(tmp_path, "x.png", image))
    assert array.shape == (4, 6, 3) and array.dtype == np.uint8
    expected = np.asarray(image.convert("RGB"))[0, 0]
    np.testing.assert_array_equal(array[0, 0], expected)


def test_load_rgb_palette_with_transparency_does_not_warn(tmp_path, recwarn):
    image = Image.new("P", (6, 4), 1)
    image.putpalette([0, 0, 0, 250, 20, 20] + [0] * 762)
    path = _save(tmp_path, "t.png", image, transparency=b"\x00\x80")  # partial alpha stays bytes
    np.testing.assert_array_equal(load_rgb(path)[0, 0], [250, 20, 20])
    assert not [w for w in recwarn if "Transparency" in str(w.message)]


def test_load_rgb_scales_16_bit_gray(tmp_path):
    gray16 = Image.fromarray(np.full((4, 6), 40000, dtype=np.uint16))
    array = load_rgb(_save(tmp_path, "g16.png", gray16))
    np.testing.assert_array_equal(array[0, 0], [156, 156, 156])  # 40000 / 257, not clipped to 255


def test_load_rgb_applies_exif_orientation(tmp_path):
    image = Image.new("RGB", (40, 20), (0, 128, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    array = load_rgb(_save(tmp_path, "rot.jpg", image, exif=exif))
    assert array.shape == (40, 20, 3)


# --- layout A: root/<class>/<images> --------------------------------------------------------


def test_unsplit_layout_is_split_stratified(tmp_path):
    _make_classes(tmp_path, {"zebra": 10, "apple": 10, "Mango": 10})
    source = imagefolder_source(tmp_path, **SPLIT_ARGS)
    assert source.classes == ("Mango", "apple", "zebra")
    assert source.has_masks is False
    for split, per_class in {"train": 6, "val": 2, "test": 2}.items():
        assert _label_counts(source, split) == {name: per_class for name in source.classes}
    all_names = sum((_names(source, split) for split in ("train", "val", "test")), [])
    assert len(set(all_names)) == 30
    assert "apple/img00.png" in all_names


def test_samples_load_rgb_without_mask(tmp_path):
    _make_classes(tmp_path, {"a": 3, "b": 3})
    sample = imagefolder_source(tmp_path, **SPLIT_ARGS).splits["train"][0]
    image, mask = sample.load()
    assert image.shape == (4, 6, 3) and mask is None
    assert sample.label == 0 and sample.name.startswith("a/")


def test_split_is_deterministic_and_depends_on_seed(tmp_path):
    _make_classes(tmp_path, {"a": 20, "b": 20})
    first = imagefolder_source(tmp_path, **SPLIT_ARGS)
    again = imagefolder_source(tmp_path, **SPLIT_ARGS)
    other = imagefolder_source(tmp_path, **{**SPLIT_ARGS, "seed": 1})
    for split in ("train", "val", "test"):
        assert _names(first, split) == _names(again, split)
        assert _names(first, split) == sorted(_names(first, split))
    assert _names(first, "val") != _names(other, "val")


def test_tiny_class_keeps_one_training_image(tmp_path):
    _make_classes(tmp_path, {"a": 1, "b": 10})
    source = imagefolder_source(tmp_path, seed=0, val_fraction=0.45, test_fraction=0.45)
    assert _label_counts(source, "train")["a"] == 1
    assert _label_counts(source, "train")["b"] >= 1


def test_ignores_hidden_and_non_image_files_and_reads_upper_case_extensions(tmp_path):
    _make_classes(tmp_path, {"a": 2, "b": 2})
    _write_png(tmp_path / "a" / "UPPER.PNG")
    _write_png(tmp_path / "a" / ".hidden.png")
    _write_png(tmp_path / "a" / ".cache" / "inside.png")
    _write_png(tmp_path / ".ipynb_checkpoints" / "x.png")
    (tmp_path / "a" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    source = imagefolder_source(tmp_path, seed=0, val_fraction=0.0, test_fraction=0.0)
    assert source.classes == ("a", "b")
    assert _names(source, "train") == ["a/UPPER.PNG", "a/img00.png", "a/img01.png", "b/img00.png", "b/img01.png"]


def test_stratified_split_cuts_each_class():
    labels = [0] * 10 + [1] * 5 + [2] * 1
    rest, val, test = stratified_split(labels, [0.2, 0.2], seed=3)
    assert sorted(rest + val + test) == list(range(16))
    assert Counter(labels[i] for i in val) == {0: 2, 1: 1}
    assert Counter(labels[i] for i in test) == {0: 2, 1: 1}
    assert Counter(labels[i] for i in rest) == {0: 6, 1: 3, 2: 1}


# --- layout B: root/{train,val,test}/<class>/<images> -----------------------------------------


def test_pre_split_layout_is_used_as_given(tmp_path):
    _make_classes(tmp_path / "train", {"cat": 4, "dog": 3})
    _make_classes(tmp_path / "val", {"dog": 2})
    _make_classes(tmp_path / "test", {"cat": 1, "dog": 1})
    source = imagefolder_source(tmp_path, **SPLIT_ARGS)
    assert source.classes == ("cat", "dog")
    assert len(source.splits["train"]) == 7
    assert _names(source, "val") == ["val/dog/img00.png", "val/dog/img01.png"]
    assert [s.label for s in source.splits["val"]] == [1, 1]
    assert _names(source, "test") == ["test/cat/img00.png", "test/dog/img00.png"]


def test_pre_split_without_test_carves_test_from_train(tmp_path):
    _make_classes(tmp_path / "train", {"cat": 10, "dog": 10})
    _make_classes(tmp_path / "val", {"cat": 1, "dog": 1})
    source = imagefolder_source(tmp_path, **SPLIT_ARGS)
    assert len(source.splits["val"]) == 2
    assert _label_counts(source, "test") == {"cat": 2, "dog": 2}
    assert _label_counts(source, "train") == {"cat": 8, "dog": 8}
    assert all(name.startswith("train/") for name in _names(source, "test"))
    assert _names(source, "test") == _names(imagefolder_source(tmp_path, **SPLIT_ARGS), "test")


def test_pre_split_val_class_missing_from_train_is_an_error(tmp_path):
    _make_classes(tmp_path / "train", {"cat": 2, "dog": 2})
    _make_classes(tmp_path / "val", {"cat": 1, "emu": 1})
    with pytest.raises(ResoMapError, match="emu") as error:
        imagefolder_source(tmp_path, **SPLIT_ARGS)
    assert str(tmp_path / "val") in str(error.value)


# --- errors -------------------------------------------------------------------------------------


def _expect_error(root: Path, path_in_message: Path, **split_args):
    with pytest.raises(ResoMapError) as error:
        imagefolder_source(root, **{**SPLIT_ARGS, **split_args})
    message = str(error.value)
    assert str(path_in_message) in message and "\n" not in message


def test_missing_root(tmp_path):
    _expect_error(tmp_path / "nope", tmp_path / "nope")


def test_root_is_a_file(tmp_path):
    _expect_error(_write_png(tmp_path / "x.png"), tmp_path / "x.png")


def test_no_class_folders(tmp_path):
    _write_png(tmp_path / "loose.png")
    _expect_error(tmp_path, tmp_path)


def test_single_class(tmp_path):
    _make_classes(tmp_path, {"only": 3})
    _expect_error(tmp_path, tmp_path)


def test_class_folder_without_images(tmp_path):
    _make_classes(tmp_path, {"a": 2})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / ".DS_Store").write_bytes(b"\0")
    _expect_error(tmp_path, tmp_path / "b")
