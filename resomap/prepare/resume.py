"""Splits written before a kill survive to the next run of prepare.

DVC deletes data/prepared/RES before it reruns prepare, so each split is written into an
undeclared scratch folder, `.resomap/prepare/RES/KEY/SPLIT/` (gitignored), and marked done
(`KEY/SPLIT.done.json`) once its arrays are complete. When every split is, they are moved into
data/prepared/RES and the scratch is removed. KEY hashes everything that decides the arrays, so a
split is reused only by a run that would write the same bytes; other keys' folders are deleted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from resomap.core import io
from resomap.core.config import DataParams
from resomap.core.hashing import code_hash
from resomap.prepare.samples import Sample

SCRATCH_DIR = Path(".resomap/prepare")


def scratch_key(data: DataParams, resolution: int, splits: dict[str, list[Sample]]) -> str:
    """sha256 of the data params, the resolution, the prepare code and every sample's identity."""
    settings = {"data": dataclasses.asdict(data), "resolution": resolution, "code": code_hash()}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for split, samples in splits.items():
        digest.update(f"\0{split}\0{len(samples)}\0".encode())
        for sample in samples:
            digest.update(f"{sample_identity(sample)}\n".encode())
    return digest.hexdigest()


def sample_identity(sample: Sample) -> str:
    """What decides a sample's pixels: its name, label and loader with the loader's arguments
    (a synthetic sample's seed and index, a torchvision dataset and index, an image file by its
    path, size and mtime). A loader that is no functools.partial is named by its repr, which holds
    its address: such a sample never matches another run's and is always written afresh."""
    load = sample.load
    if not isinstance(load, partial):
        return f"{sample.name}\0{sample.label}\0{load!r}"
    arguments = [*map(_argument_identity, load.args), *(f"{k}={_argument_identity(v)}" for k, v in sorted(load.keywords.items()))]
    return "\0".join([sample.name, str(sample.label), f"{load.func.__module__}.{load.func.__qualname__}", *arguments])


def _argument_identity(argument: object) -> str:
    if isinstance(argument, Path):
        stat = argument.stat()
        return f"{argument}:{stat.st_size}:{stat.st_mtime_ns}"
    return repr(argument)  # numbers; a torchvision dataset's repr names it, its split and root


@contextmanager
def scratch_root(out_dir: Path, root: Path | None) -> Iterator[Path]:
    """`root`, kept after a failure for the next run; None: a throwaway folder beside `out_dir`
    (callers that do not resume, such as tests, keep nothing and share nothing)."""
    if root is not None:
        yield root
        return
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.scratch-") as folder:
        yield Path(folder)


class SplitScratch:
    """One resolution's splits in progress under one key."""

    def __init__(self, root: Path, resolution: int, key: str):
        self.resolution_dir = root / str(resolution)
        self.folder = self.resolution_dir / key

    def split_dir(self, split: str) -> Path:
        return self.folder / split

    def _marker(self, split: str) -> Path:
        return self.folder / f"{split}.done.json"

    def is_done(self, split: str) -> bool:
        return self._marker(split).is_file()

    def mark_done(self, split: str, images: int) -> None:
        """Written after the split's arrays, atomically: a marker means a complete split."""
        io.write_json(self._marker(split), {"split": split, "images": images})

    def remove_other_keys(self) -> bool:
        """Delete the scratch of runs with other params, data or code; whether there was any."""
        others = [path for path in self.resolution_dir.glob("*") if path != self.folder] if self.resolution_dir.is_dir() else []
        for path in others:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        return bool(others)

    def clear_unfinished(self, split: str) -> None:
        """A split a kill interrupted starts over: its partial arrays would only hold disk space."""
        shutil.rmtree(self.split_dir(split), ignore_errors=True)

    def move_into(self, out_dir: Path, splits: list[str]) -> None:
        """Each finished split becomes out_dir/SPLIT, replacing what is there. On one disk this is a
        rename (os.replace's, files keep their inodes); onto another disk, a copy."""
        for split in splits:
            target = out_dir / split
            if target.exists():
                shutil.rmtree(target)
            self._marker(split).unlink()  # first: a split folder without its marker is redone, never half-moved
            shutil.move(self.split_dir(split), target)

    def remove(self) -> None:
        shutil.rmtree(self.folder)
        if not any(self.resolution_dir.iterdir()):
            self.resolution_dir.rmdir()
