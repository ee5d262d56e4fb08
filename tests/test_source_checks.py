"""What the check stage and prepare refuse or notice about a data source before writing anything:
splits that cannot hold every class, and any change to an image folder's files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from helpers.env import stage_env
from helpers.study_repo import shipped_params
from resomap.core.config import DataParams
from resomap.core.errors import ResoMapError
from resomap.prepare.fingerprint import source_fingerprint
from resomap.prepare.resolution import prepare_resolution


def photos(folder: Path, counts: dict[str, int]) -> Path:
    for name, count in counts.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", (8, 6), (10 * i, 0, 0)).save(folder / name / f"{i:03d}.png")
    return folder


def folder_params(path: Path, **more) -> DataParams:
    return DataParams(source="imagefolder", path=str(path), **more)


def test_two_classes_of_one_image_each_stop_before_anything_is_written(tmp_path):
    data = folder_params(photos(tmp_path / "photos", {"a": 1, "b": 1}))
    with pytest.raises(ResoMapError, match=r"^the val split is empty \(2 train, 0 val, 0 test\): add images \(each class needs at least 3"):
        prepare_resolution(data, 16, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_class_too_small_for_every_split_is_named_with_its_counts(tmp_path):
    data = folder_params(photos(tmp_path / "photos", {"big": 30, "small": 2}))
    expected = r"^class 'small' has no test image \(1 train, 1 val, 0 test\): each class needs at least one image per split"
    with pytest.raises(ResoMapError, match=expected):
        prepare_resolution(data, 16, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_small_class_of_three_images_is_in_every_split(tmp_path):
    data = folder_params(photos(tmp_path / "photos", {"big": 2000, "small": 3}))
    manifest = prepare_resolution(data, 8, tmp_path / "out")
    assert manifest["missing_classes"] == {}
    assert manifest["counts"] == {"train": 1601, "val": 201, "test": 201}


def test_the_opt_in_goes_on_and_records_the_missing_class(tmp_path):
    data = folder_params(photos(tmp_path / "photos", {"big": 30, "small": 2}), on_missing_class="warn")
    manifest = prepare_resolution(data, 16, tmp_path / "out")
    assert manifest["missing_classes"] == {"test": ["small"]}


def test_a_pre_split_folder_whose_test_split_lacks_a_class_is_refused(tmp_path):
    root = tmp_path / "photos"
    photos(root / "train", {"a": 5, "b": 5})
    photos(root / "val", {"a": 2, "b": 2})
    photos(root / "test", {"a": 2})
    with pytest.raises(ResoMapError, match=r"^class 'b' has no test image \(5 train, 2 val, 0 test\)"):
        prepare_resolution(folder_params(root), 16, tmp_path / "out")


def test_synthetic_splits_smaller_than_the_class_count_name_the_param(tmp_path):
    from resomap.core.config import ImageCounts

    with pytest.raises(ResoMapError, match=r"has no test image .*: raise data.images \(the built-in data has 10 classes\)"):
        prepare_resolution(DataParams(images=ImageCounts(train=20, val=10, test=5)), 16, tmp_path / "out")


@pytest.fixture
def folder(tmp_path) -> Path:
    return photos(tmp_path / "photos", {"cats": 3, "dogs": 3})


def digest(folder: Path, cache: Path) -> str:
    return source_fingerprint(folder_params(folder), cache)["digest"]


def test_the_fingerprint_changes_with_any_image_added_removed_or_edited(folder, tmp_path):
    cache = tmp_path / "hashes.sqlite"
    seen = {digest(folder, cache)}
    photos(folder, {"cats": 4})  # one more image
    seen.add(digest(folder, cache))
    (folder / "dogs/000.png").unlink()
    seen.add(digest(folder, cache))
    before = (folder / "cats/001.png").stat()
    Image.new("RGB", (8, 6), (0, 99, 0)).save(folder / "cats/001.png")  # same size on disk, other pixels
    os.utime(folder / "cats/001.png", ns=(before.st_atime_ns, before.st_mtime_ns + 1))
    seen.add(digest(folder, cache))
    assert len(seen) == 4


def test_the_fingerprint_ignores_what_prepare_ignores_and_depends_on_contents_only(folder, tmp_path):
    cache = tmp_path / "hashes.sqlite"
    first = source_fingerprint(folder_params(folder), cache)
    assert first["files"] == 6 and first["bytes"] == sum(p.stat().st_size for p in folder.rglob("*.png"))
    (folder / "cats/notes.txt").write_text("not an image")
    (folder / "cats/.DS_Store").write_bytes(b"\0")
    os.utime(folder / "cats/000.png")  # touched: same bytes
    assert digest(folder, cache) == first["digest"]
    copy = shutil.copytree(folder, tmp_path / "elsewhere" / "photos")  # other inodes and mtimes: run-cache hits there too
    assert digest(copy, cache) == first["digest"]
    assert digest(folder, tmp_path / "no-cache-yet.sqlite") == first["digest"]


def test_the_synthetic_source_has_a_constant_fingerprint():
    assert source_fingerprint(DataParams()) == {"source": "synthetic"}


def check(cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.check"], cwd=cwd, env=env or stage_env(), capture_output=True, text=True, timeout=60)


def test_the_check_stage_writes_the_fingerprint_for_a_folder(tmp_path, folder):
    done = check(shipped_params(tmp_path, {"data.source": "imagefolder", "data.path": str(folder)}))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("check: params.yaml valid (9 cells); data: imagefolder, 6 files, ")
    assert yaml.safe_load((tmp_path / "data/source.json").read_text())["files"] == 6


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"models": ["resnet_18"]}, "error: unknown model 'resnet_18' in models: did you mean resnet18"),
        ({"models": ["vgg11"], "resolutions": [16, 32]},
         "error: resolution 16 is too small for vgg11: it needs at least 32; remove 16 from resolutions or vgg11 from models"),
        ({"trian.epochs": 20}, "error: unknown key 'trian' in params.yaml: did you mean 'train'?"),
        ({"evaluate.test_resolutions": [2, 16]},
         "error: resolution 2 is too small for tiny_cnn: it needs at least 4; remove 2 from evaluate.test_resolutions or tiny_cnn from models"),
        ({"evaluate.test_resolutions": [16, 48]}, "error: evaluate.test_resolutions lists 48, which no prepare stage makes"),
        ({"resolutions": [8, 16], "evaluate.tta": "views"}, "error: evaluate.tta: views cannot resize-then-centre-crop at 8 px"),
    ],
)
def test_the_check_stage_refuses_the_grid_in_one_line(tmp_path, changes, message):
    done = check(shipped_params(tmp_path, changes))
    assert done.returncode == 2 and done.stderr.strip().startswith(message), done.stderr
    assert not (tmp_path / "data").exists()


def test_the_check_stage_refuses_a_bad_runtime_variable(tmp_path):
    done = check(shipped_params(tmp_path), stage_env(RESOMAP_DEVICE="gpu0"))
    assert done.returncode == 2
    assert done.stderr.strip() == "error: RESOMAP_DEVICE='gpu0' is not a device: use auto, cpu, cuda or cuda:N (N the GPU index), or unset it"


def test_the_check_stage_refuses_a_missing_folder(tmp_path):
    done = check(shipped_params(tmp_path, {"data.source": "imagefolder", "data.path": str(tmp_path / "nowhere")}))
    assert done.returncode == 2 and "does not exist: set data.path to a folder of class folders" in done.stderr
