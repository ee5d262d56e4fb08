"""Image folders as they come: corrupt, odd-mode, rotated, huge, tiny, linked and oddly named files."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers.env import shipped
from resomap.core.config import DataParams, ParamsError, load_params
from resomap.core.errors import ResoMapError
from resomap.data.prepared import load_prepared
from resomap.prepare import decode
from resomap.prepare.decode import load_rgb
from resomap.prepare.imagefolder import imagefolder_source
from resomap.prepare.resolution import prepare_resolution
from resomap.prepare.workers import resize_pool, write_split

REPO = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)


def _noise(height: int, width: int) -> Image.Image:
    return Image.fromarray(RNG.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _good_class(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        _noise(12, 16).save(folder / f"good{i}.png")


def _truncated_jpeg(path: Path) -> None:
    _noise(64, 80).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _rotated_jpeg(path: Path) -> None:
    """40 wide x 20 high, left half red; EXIF orientation 6 = display rotated 90 degrees clockwise."""
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, exif=exif, quality=95)


def _wild_folder(root: Path) -> dict[str, str]:
    """cats/ and dogs/ with good files of every kind, the bad ones, the ignored ones and links.

    Returns the bad files (relative paths) and the start of their reasons.
    """
    cats, dogs, birds = root / "cats", root / "dogs", root / ".birds_real"  # hidden: seen only via the link
    for folder in (cats, dogs, birds):
        _good_class(folder, 3)
    Image.new("RGB", (6, 4), (30, 60, 90)).quantize(4).save(cats / "palette.png")
    Image.new("L", (6, 4), 77).save(cats / "gray.png")
    Image.new("CMYK", (8, 6), (0, 255, 0, 0)).save(cats / "cmyk.jpg")
    Image.new("RGBA", (6, 4), (30, 60, 90, 10)).save(cats / "rgba.png")
    Image.fromarray(np.full((4, 6), 40000, dtype=np.uint16)).save(cats / "gray16.png")
    _rotated_jpeg(dogs / "rotated.jpg")
    Image.new("RGB", (1, 1), (0, 0, 255)).save(dogs / "one_pixel.png")
    _noise(10, 10).save(dogs / "café_ü.png")
    (dogs / "link.png").symlink_to(cats / "good0.png")
    (root / "birds").symlink_to(birds, target_is_directory=True)  # a symlinked class folder
    (cats / "loop").symlink_to(cats, target_is_directory=True)  # a link loop is read once
    # ignored silently: not image extensions, or hidden
    (cats / "notes.txt").write_text("not an image")
    (cats / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    # bad
    _truncated_jpeg(cats / "truncated.jpg")
    (dogs / "empty.jpg").write_bytes(b"")
    (dogs / "fake.png").write_text("a text file with an image extension")
    Image.new("1", (9500, 9500)).save(cats / "bomb.png")  # 90,250,000 pixels: above MAX_PIXELS, 10 kB on disk
    return {
        "cats/bomb.png": "too many pixels, decompression-bomb guard",
        "cats/truncated.jpg": "truncated JPEG (image file is truncated",
        "dogs/empty.jpg": "empty file (0 bytes)",
        "dogs/fake.png": "not an image PIL can read",
    }


def _imagefolder(root: Path, **kwargs) -> DataParams:
    return DataParams(source="imagefolder", path=str(root), val_fraction=0.2, test_fraction=0.2, **kwargs)


@pytest.fixture(scope="module")
def wild(tmp_path_factory):
    root = tmp_path_factory.mktemp("wild") / "photos"
    root.mkdir()
    return root, _wild_folder(root)


def test_skip_mode_prepares_the_good_images_and_lists_the_bad(wild, tmp_path):
    root, bad = wild
    manifest = prepare_resolution(_imagefolder(root), 16, tmp_path / "out")
    assert manifest["classes"] == ["birds", "cats", "dogs"]
    assert sum(manifest["counts"].values()) == 3 + 8 + 7  # birds: 3; cats: 3 + 5 modes; dogs: 3 + 4
    assert [item["path"] for item in manifest["skipped"]] == sorted(bad)
    for item in manifest["skipped"]:
        assert item["reason"].startswith(bad[item["path"]]), item
        assert "\n" not in item["reason"]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest
    prepared = load_prepared(tmp_path / "out")
    assert sum(len(prepared.splits[s].labels) for s in ("train", "val", "test")) == 18


def test_skip_mode_is_reproducible_and_keeps_odd_names(wild):
    root, bad = wild
    first = imagefolder_source(root, seed=0, val_fraction=0.2, test_fraction=0.2)
    again = imagefolder_source(root, seed=0, val_fraction=0.2, test_fraction=0.2)
    names = {split: [sample.name for sample in first.splits[split]] for split in first.splits}
    assert names == {split: [sample.name for sample in again.splits[split]] for split in again.splits}
    assert first.skipped == again.skipped
    every = sum(names.values(), [])
    assert {"dogs/café_ü.png", "dogs/link.png", "birds/good0.png", "dogs/one_pixel.png"} <= set(every)
    assert not set(bad) & set(every)
    assert not [name for name in every if name.endswith((".txt", ".DS_Store"))]


def test_odd_modes_orientation_and_one_pixel_decode(wild):
    root, _ = wild
    cats, dogs = root / "cats", root / "dogs"
    for name in ("palette.png", "gray.png", "cmyk.jpg", "rgba.png", "gray16.png"):
        array = load_rgb(cats / name)
        assert array.shape == ((6, 8, 3) if name == "cmyk.jpg" else (4, 6, 3))
        assert array.dtype == np.uint8
    np.testing.assert_array_equal(load_rgb(cats / "gray16.png")[0, 0], [156, 156, 156])
    cyan_ish = load_rgb(cats / "cmyk.jpg")[3, 4].astype(int)  # CMYK (0, 255, 0, 0): magenta off-white
    assert cyan_ish[1] < 60 and cyan_ish[0] > 200 and cyan_ish[2] > 200
    upright = load_rgb(dogs / "rotated.jpg")
    assert upright.shape == (40, 20, 3), "orientation 6 turns a 40 x 20 landscape into a portrait"
    assert upright[5, 10, 0] > 200 and upright[35, 10, 0] < 60, "the red left half now sits on top"
    from resomap.prepare.resize import resize_image

    tiny = resize_image(load_rgb(dogs / "one_pixel.png"), 16)
    assert tiny.shape == (16, 16, 3) and (tiny == [0, 0, 255]).all()


def test_error_mode_names_the_file_and_the_fix_and_writes_nothing(wild, tmp_path):
    root, _ = wild
    with pytest.raises(ResoMapError, match=r"bad image cats/bomb\.png: too many pixels.*data\.on_bad_image: skip"):
        prepare_resolution(_imagefolder(root, on_bad_image="error"), 16, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_decompression_bomb_limit_is_the_module_constant(tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    Image.new("RGB", (20, 20)).save(path)
    assert decode.image_problem(path) is None
    monkeypatch.setattr(decode, "MAX_PIXELS", 399)
    assert "20 x 20 = 400 pixels, limit 399" in decode.image_problem(path)


def test_class_left_empty_by_skipping_is_an_error_naming_the_folder(tmp_path):
    _good_class(tmp_path / "a", 2)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "broken.jpg").write_bytes(b"")
    (tmp_path / "b" / "readme.txt").write_text("x")
    with pytest.raises(ResoMapError, match=r"class folder .*b has no usable images, all 1 are bad .*b/broken\.jpg"):
        imagefolder_source(tmp_path, seed=0, val_fraction=0.2, test_fraction=0.2)
    (tmp_path / "b" / "broken.jpg").unlink()
    with pytest.raises(ResoMapError, match=r"class folder .*b has no images .*: add images or remove the folder"):
        imagefolder_source(tmp_path, seed=0, val_fraction=0.2, test_fraction=0.2)


@pytest.mark.parametrize(
    "classes, message",
    [
        ([], r"data\.path .*: .* has no class subfolders: put each class's images in"),
        (["only"], r"data\.path .*: .* has only one class folder \(only\): add a folder per class"),
    ],
)
def test_too_few_classes_name_data_path(tmp_path, classes, message):
    for name in classes:
        _good_class(tmp_path / name, 2)
    _noise(4, 4).save(tmp_path / "loose.png")
    with pytest.raises(ResoMapError, match=message):
        imagefolder_source(tmp_path, seed=0, val_fraction=0.2, test_fraction=0.2)


def _params_file(tmp_path: Path, **data) -> Path:
    raw = shipped()
    raw["data"].update(data)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_on_bad_image_is_a_validated_param(tmp_path):
    assert load_params(REPO / "params.yaml").data.on_bad_image == "skip"
    with pytest.raises(ParamsError, match=r"data\.on_bad_image must be one of skip, error; got 'ignore'"):
        load_params(_params_file(tmp_path, on_bad_image="ignore"))
    with pytest.raises(ParamsError, match=r"data\.path is required for data\.source: imagefolder but is empty"):
        load_params(_params_file(tmp_path, source="imagefolder", path="  "))


def test_prepare_stage_prints_each_skipped_file(tmp_path):
    photos = tmp_path / "photos"
    _good_class(photos / "a", 3)
    _good_class(photos / "b", 3)
    _truncated_jpeg(photos / "a" / "x.jpg")
    params = _params_file(tmp_path, source="imagefolder", path=str(photos))
    (tmp_path / "params.yaml").write_text(params.read_text())
    done = subprocess.run(
        [sys.executable, "-m", "stages.prepare", "16"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "skipped a/x.jpg: truncated JPEG (image file is truncated" in done.stdout
    assert "skipped 1 bad image(s)" in done.stdout


def test_file_broken_after_the_scan_stops_a_worker_with_a_one_line_error(tmp_path):
    """A worker process's error reaches prepare as the same ResoMapError, naming the file and the fix."""
    for cls in ("birds", "cats", "dogs"):
        _good_class(tmp_path / cls, 40)  # 72 train images: two chunks, the broken one in the second
    source = imagefolder_source(tmp_path, seed=0, val_fraction=0.2, test_fraction=0.2)
    broken = source.splits["train"][-1]
    _truncated_jpeg(tmp_path / broken.name)  # valid when scanned, truncated now
    scanned_then_broken = f"{broken.name}: .*decoded when the folder was scanned: rerun prepare"
    with resize_pool(source.splits, workers=2) as pool, pytest.raises(ResoMapError, match=scanned_then_broken):
        write_split("train", source.splits["train"], 16, False, tmp_path / "out", pool)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir()), "nothing half-written is left"
