"""A folder of class subfolders as a data source, split the same way on every machine."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Literal

from resomap.core.errors import ResoMapError
from resomap.prepare.decode import BadImageError, image_problem, load_rgb
from resomap.prepare.samples import SPLITS, UNKNOWN_LABEL, BadImage, LoadedImage, Sample, SourceData
from resomap.prepare.splits import carve_splits

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
_EXTENSIONS_SHOWN = " ".join(sorted(IMAGE_EXTENSIONS))  # in the messages about a folder without images

OnBadImage = Literal["skip", "error"]
POOL_KEY = "data.unlabeled_path"


def imagefolder_source(
    root: Path, *, seed: int, val_fraction: float, test_fraction: float, on_bad_image: OnBadImage = "skip",
    unlabeled_path: Path | None = None,
) -> SourceData:
    """Read `root/<class>/...` (split here) or `root/{train,val[,test]}/<class>/...` (split as given),
    and the unlabeled pool: every image under `unlabeled_path` (None: no pool), whatever its folders.

    A split missing from the pre-split layout is carved out of train with its fraction. Every
    image file is decoded once first: one that cannot be is left out and listed in `skipped`
    (on_bad_image "skip") or stops here naming the file (on_bad_image "error"), so the splits are
    drawn from the usable files only. Pool images are checked the same way and labelled UNKNOWN_LABEL.
    """
    root = Path(root)
    check_is_dir(root)
    pool_files = unlabeled_files(unlabeled_path) if unlabeled_path is not None else []  # a bad pool stops before the scan
    reader = _Reader(root, on_bad_image)
    classes, given = reader.pre_split_images() if _is_pre_split(root) else reader.unsplit_images()
    pool = reader.pool_images(unlabeled_path, pool_files) if pool_files else []
    fractions = {"val": val_fraction, "test": test_fraction}
    missing = {split: fraction for split, fraction in fractions.items() if split not in given}
    skipped = tuple(sorted(reader.skipped, key=lambda bad: _sort_key(bad.path)))
    return SourceData(classes, carve_splits(given, missing, seed), has_masks=False, skipped=skipped, unlabeled=pool)


def check_is_dir(root: Path, key: str = "data.path", wanted: str = "a folder of class folders") -> None:
    """The folder the param `key` names exists: else one line saying what to set it to."""
    if not root.exists():
        raise ResoMapError(f"image folder {root} does not exist: set {key} to {wanted}")
    if not root.is_dir():
        raise ResoMapError(f"image folder {root} is not a directory: set {key} to {wanted}")


def unlabeled_files(pool: Path) -> list[Path]:
    """The image files at any depth under the pool folder; a missing or empty one stops here, so
    that check and prepare refuse it before anything is written."""
    pool = Path(pool)
    check_is_dir(pool, POOL_KEY, "a folder of unlabeled images, or to null for no pool")
    files = visible_files(pool, IMAGE_EXTENSIONS)
    if not files:
        raise ResoMapError(
            f"{POOL_KEY} {pool} has no images ({_EXTENSIONS_SHOWN}): "
            "add unlabeled images to it, or set it to null for no pool"
        )
    return files


def _visible_subdirs(folder: Path) -> list[str]:
    """Sub-folders (symlinked ones too), hidden ones left out, in a filesystem-independent order."""
    return sorted((p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=_sort_key)


def _sort_key(name: str) -> str:
    """Sort by the NFC form, so a name stored decomposed (macOS) sorts where it does elsewhere."""
    return unicodedata.normalize("NFC", name)


def _is_pre_split(root: Path) -> bool:
    """Pre-split when there is a train/ and every other folder is val/ or test/."""
    names = set(_visible_subdirs(root))
    return "train" in names and names <= set(SPLITS)


class _Reader:
    """Lists and checks the images of one data folder, collecting the files it leaves out."""

    def __init__(self, root: Path, on_bad_image: OnBadImage):
        self.root = root
        self.on_bad_image = on_bad_image
        self.skipped: list[BadImage] = []
        self.labelled_files: list[Path] = []  # every image file of a class folder, bad ones too

    def pre_split_images(self) -> tuple[tuple[str, ...], dict[str, list[Sample]]]:
        classes = self._class_names(self.root / "train")
        present = [split for split in SPLITS if (self.root / split).is_dir()]
        return classes, {split: self._labelled_images(self.root / split, classes) for split in present}

    def unsplit_images(self) -> tuple[tuple[str, ...], dict[str, list[Sample]]]:
        classes = self._class_names(self.root)
        return classes, {"train": self._labelled_images(self.root, classes)}

    def _class_names(self, folder: Path) -> tuple[str, ...]:
        """The class list: the sorted class folders of the training images."""
        names = self._class_folders(folder)
        if len(names) < 2:
            raise ResoMapError(
                f"data.path {self.root}: {folder} has only one class folder ({names[0]}): "
                "add a folder per class, at least two"
            )
        return tuple(names)

    def _class_folders(self, folder: Path) -> list[str]:
        names = _visible_subdirs(folder)
        if not names:
            raise ResoMapError(
                f"data.path {self.root}: {folder} has no class subfolders: "
                f"put each class's images in {folder}/<class name>/, at least two classes"
            )
        return names

    def _labelled_images(self, folder: Path, classes: Sequence[str]) -> list[Sample]:
        """Samples of `folder/<class>/**` in sorted order, labelled by position in `classes`."""
        folders = self._class_folders(folder)
        unknown = sorted(set(folders) - set(classes))
        if unknown:
            raise ResoMapError(
                f"{folder} has class folders that train/ lacks ({', '.join(unknown)}): "
                "add them to train/ or remove them"
            )
        samples = []
        for name in folders:
            images = self._usable_images(folder / name)
            samples.extend(_file_sample(path, self._name(path), classes.index(name)) for path in images)
        return samples

    def _usable_images(self, class_dir: Path) -> list[Path]:
        """The class folder's image files that decode; a class left with none is an error."""
        candidates = visible_files(class_dir, IMAGE_EXTENSIONS)  # other files (.txt, .DS_Store) are ignored
        self.labelled_files.extend(candidates)
        usable, bad = self._decodable(candidates, self._name)
        if not usable:
            raise ResoMapError(_empty_class_message(class_dir, bad))
        return usable

    def pool_images(self, pool: Path, files: list[Path]) -> list[Sample]:
        """The pool's `files` (from unlabeled_files) that decode, of unknown label; read after the
        class folders, whose files the pool must not share: it would hand their labels to training."""
        self._check_apart(files)
        usable, bad = self._decodable(files, _pool_name)
        if not usable:
            raise ResoMapError(f"{POOL_KEY} {pool} has no usable images, {_bad_summary(bad)}: replace them, or set it to null for no pool")
        return [_file_sample(path, _pool_name(path), UNKNOWN_LABEL) for path in usable]

    def _check_apart(self, files: list[Path]) -> None:
        """No pool file is a labelled image, also through a link or another spelling of its path."""
        labelled = {os.path.realpath(path): path for path in self.labelled_files}
        for path in files:
            twin = labelled.get(os.path.realpath(path))
            if twin is not None:
                raise ResoMapError(
                    f"{POOL_KEY}: {_pool_name(path)} is also the labelled image {self._name(twin)} of data.path, "
                    "so the pool would leak its label: keep the unlabeled images out of data.path's class folders"
                )

    def _decodable(self, candidates: list[Path], name: Callable[[Path], str]) -> tuple[list[Path], list[BadImage]]:
        """The `candidates` that decode and the bad ones, which are left out and kept in `skipped`
        (on_bad_image skip) or stop at the first, named by `name` (on_bad_image error)."""
        usable, bad = [], []
        for path in candidates:
            reason = image_problem(path)
            if reason is None:
                usable.append(path)
                continue
            if self.on_bad_image == "error":
                raise ResoMapError(
                    f"bad image {name(path)}: {reason}: "
                    "set data.on_bad_image: skip to leave it out, or delete the file"
                )
            bad.append(BadImage(name(path), reason))
        self.skipped.extend(bad)
        return usable, bad

    def _name(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def _pool_name(path: Path) -> str:
    """A pool file as data.unlabeled_path spells it, then its place there: apart from data.path's names."""
    return path.as_posix()


def _empty_class_message(class_dir: Path, bad: list[BadImage]) -> str:
    """A class with no images would break the stratified split (and the class count): say so."""
    if not bad:
        return (
            f"class folder {class_dir} has no images ({_EXTENSIONS_SHOWN}): "
            "add images or remove the folder"
        )
    return f"class folder {class_dir} has no usable images, {_bad_summary(bad)}: replace them or remove the folder"


def _bad_summary(bad: list[BadImage]) -> str:
    """"all N are bad (...)" with the first three and their reasons: enough to find the pattern."""
    shown = "; ".join(f"{item.path}: {item.reason}" for item in bad[:3])
    more = f"; and {len(bad) - 3} more" if len(bad) > 3 else ""
    return f"all {len(bad)} are bad ({shown}{more})"


def visible_files(folder: Path, suffixes: frozenset[str] | None = None) -> list[Path]:
    """Files under `folder` (with one of `suffixes`, lower case, when given), symlinks followed,
    hidden files and folders left out, in a filesystem-independent order."""
    found = []
    seen_dirs = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a symlink loop, or two links to one folder: read it once
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = [name for name in dirnames if not name.startswith(".")]
        found.extend(
            Path(dirpath, name)
            for name in filenames
            if not name.startswith(".") and (suffixes is None or Path(name).suffix.lower() in suffixes)
        )
    return sorted(found, key=lambda path: _sort_key(path.relative_to(folder).as_posix()))


def _file_sample(path: Path, name: str, label: int) -> Sample:
    return Sample(name=name, label=label, load=partial(_load_without_mask, path, name))


def _load_without_mask(path: Path, name: str) -> LoadedImage:
    try:
        return load_rgb(path), None
    except BadImageError as error:
        raise ResoMapError(f"{name}: {error}, though it decoded when the folder was scanned: rerun prepare") from None
