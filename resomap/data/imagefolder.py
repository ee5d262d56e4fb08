"""A folder of class subfolders as a data source, split the same way on every machine."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Sequence

from resomap.data.decode import load_rgb
from resomap.data.samples import SPLITS, LoadedImage, Sample, SourceData
from resomap.data.splits import carve_splits
from resomap.errors import ResoMapError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


def imagefolder_source(root: Path, *, seed: int, val_fraction: float, test_fraction: float) -> SourceData:
    """Read `root/<class>/...` (split here) or `root/{train,val[,test]}/<class>/...` (split as given).

    A split missing from the pre-split layout is carved out of train with its fraction.
    """
    root = Path(root)
    _check_is_dir(root)
    classes, given = _pre_split_images(root) if _is_pre_split(root) else _unsplit_images(root)
    fractions = {"val": val_fraction, "test": test_fraction}
    missing = {split: fraction for split, fraction in fractions.items() if split not in given}
    return SourceData(classes, carve_splits(given, missing, seed), has_masks=False)


def _check_is_dir(root: Path) -> None:
    if not root.exists():
        raise ResoMapError(f"image folder {root} does not exist: set data.path to a folder of class folders")
    if not root.is_dir():
        raise ResoMapError(f"image folder {root} is not a directory: set data.path to a folder of class folders")


def _visible_subdirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_pre_split(root: Path) -> bool:
    """Pre-split when there is a train/ and every other folder is val/ or test/."""
    names = set(_visible_subdirs(root))
    return "train" in names and names <= set(SPLITS)


def _pre_split_images(root: Path) -> tuple[tuple[str, ...], dict[str, list[Sample]]]:
    classes = _class_names(root / "train")
    present = [split for split in SPLITS if (root / split).is_dir()]
    return classes, {split: _labelled_images(root / split, root, classes) for split in present}


def _unsplit_images(root: Path) -> tuple[tuple[str, ...], dict[str, list[Sample]]]:
    classes = _class_names(root)
    return classes, {"train": _labelled_images(root, root, classes)}


def _class_names(folder: Path) -> tuple[str, ...]:
    """The class list: the sorted class folders of the training images."""
    names = _class_folders(folder)
    if len(names) < 2:
        raise ResoMapError(f"{folder} has only one class folder ({names[0]}): add a folder per class, at least two")
    return tuple(names)


def _class_folders(folder: Path) -> list[str]:
    names = _visible_subdirs(folder)
    if not names:
        raise ResoMapError(f"{folder} has no class subfolders: put images in {folder}/<class name>/")
    return names


def _labelled_images(folder: Path, root: Path, classes: Sequence[str]) -> list[Sample]:
    """Samples of `folder/<class>/**` in sorted order, labelled by position in `classes`."""
    folders = _class_folders(folder)
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise ResoMapError(
            f"{folder} has class folders that train/ lacks ({', '.join(unknown)}): add them to train/ or remove them"
        )
    samples = []
    for name in folders:
        images = _image_files(folder / name)
        if not images:
            raise ResoMapError(
                f"class folder {folder / name} has no images ({' '.join(sorted(IMAGE_EXTENSIONS))}): "
                "add images or remove the folder"
            )
        samples.extend(_file_sample(path, root, classes.index(name)) for path in images)
    return samples


def _image_files(class_dir: Path) -> list[Path]:
    """Image files under class_dir, hidden files and folders skipped, in a filesystem-independent order."""
    found = (
        path
        for path in class_dir.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(class_dir).parts)
    )
    return sorted(found, key=lambda path: path.relative_to(class_dir).as_posix())


def _file_sample(path: Path, root: Path, label: int) -> Sample:
    return Sample(name=path.relative_to(root).as_posix(), label=label, load=partial(_load_without_mask, path))


def _load_without_mask(path: Path) -> LoadedImage:
    return load_rgb(path), None
