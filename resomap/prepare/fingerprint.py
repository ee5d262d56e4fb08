"""One digest of the data source's files, so that DVC reruns prepare when an image changes.

dvc.yaml cannot list an image folder as a dependency (data.path is null for the built-in data, and
DVC has no optional dependencies), so the check stage, which DVC runs on every `dvc repro`, writes
the digest to data/source.json and prepare depends on that file. Adding, removing or editing an
image (of data.path, or of the unlabeled pool data.unlabeled_path) then reruns prepare at every
resolution, also for a folder outside the repository.

A file's contents are hashed once: the hash is kept in .resomap/source-hashes.sqlite under its
path, size, mtime and inode (what DVC's own state keeps), so a rescan of an unchanged folder only
stats it. The digest depends on names and contents only, so a copy of the folder on another
machine has the same one, and DVC's run-cache can serve prepare there.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from contextlib import closing
from pathlib import Path

from tqdm import tqdm

from resomap.core.config import DataParams
from resomap.core.errors import ResoMapError
from resomap.prepare.imagefolder import IMAGE_EXTENSIONS, check_is_dir, unlabeled_files, visible_files

HASH_CACHE = Path(".resomap/source-hashes.sqlite")


def source_fingerprint(data: DataParams, cache: Path = HASH_CACHE) -> dict:
    """What identifies the source's files: nothing for the synthetic data (params.yaml says it
    all), else the count, bytes and digest of the files prepare may read under data.path, and
    under `unlabeled` those of data.unlabeled_path's pool when one is set."""
    if data.source == "synthetic":
        return {"source": "synthetic"}
    root = Path(data.path)
    if data.source == "imagefolder":
        check_is_dir(root)
        files = visible_files(root, IMAGE_EXTENSIONS)
    else:  # torchvision: its download root, whatever the dataset keeps there
        if not root.is_dir():
            raise ResoMapError(f"torchvision root {root} is not a folder: set data.path to where the dataset was downloaded")
        files = visible_files(root)
    pool = None if data.unlabeled_path is None else Path(data.unlabeled_path)
    pool_files = unlabeled_files(pool) if pool is not None else []
    with _HashCache(cache) as hashes:
        fingerprint = {"source": data.source, "path": str(data.path), **_digest(root, files, hashes)}
        if pool is not None:
            fingerprint["unlabeled"] = {"path": str(pool), **_digest(pool, pool_files, hashes)}
    return fingerprint


def _digest(root: Path, files: list[Path], hashes: _HashCache) -> dict:
    """The count, bytes and digest of `files` under `root`, by their names there and contents."""
    digest = hashlib.sha256()
    total = 0
    for path in tqdm(files, desc=f"hash {root}", unit="file", leave=False, mininterval=1.0):
        size, content = hashes.content_hash(path)
        total += size
        digest.update(f"{path.relative_to(root).as_posix()}\0{size}\0{content}\n".encode())
    return {"files": len(files), "bytes": total, "digest": digest.hexdigest()}


class _HashCache:
    """File content hashes by (path, size, mtime, inode); a cache that cannot be written is skipped."""

    def __init__(self, path: Path):
        self.path = path
        self.db: sqlite3.Connection | None = None

    def __enter__(self) -> _HashCache:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path)
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INT, mtime_ns INT, inode INT, blake2b TEXT)"
            )
        except (OSError, sqlite3.Error):
            self.db = None  # hash every file: slower, never wrong
        return self

    def content_hash(self, path: Path) -> tuple[int, str]:
        """(size, blake2b of the bytes) of `path`."""
        try:
            stat = path.stat()
        except OSError as error:  # a broken symlink, or gone since the listing: prepare says which
            return 0, f"unreadable ({error.strerror})"
        key = os.path.abspath(path)
        if self.db is not None:
            row = self.db.execute("SELECT size, mtime_ns, inode, blake2b FROM hashes WHERE path = ?", (key,)).fetchone()
            if row is not None and row[:3] == (stat.st_size, stat.st_mtime_ns, stat.st_ino):
                return stat.st_size, row[3]
        try:
            with path.open("rb") as f:
                content = hashlib.file_digest(f, "blake2b").hexdigest()
        except OSError as error:
            return stat.st_size, f"unreadable ({error.strerror})"
        if self.db is not None:
            self.db.execute(
                "INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?)", (key, stat.st_size, stat.st_mtime_ns, stat.st_ino, content)
            )
        return stat.st_size, content

    def __exit__(self, *exc) -> None:
        if self.db is None:
            return
        with closing(self.db), contextlib.suppress(sqlite3.Error):  # the hashes are recomputed next time
            self.db.commit()
