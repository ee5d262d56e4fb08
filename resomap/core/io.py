"""Atomic output writers: a killed stage never leaves a half-written file for DVC to cache.

A write that fails (disk full, read-only folder, file-size limit) is one line naming the path and
the fix, and its temp file is gone; the temp files of a killed process are removed the next time
the same path is written.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np

from resomap.core.errors import ResoMapError

_FIXES = {
    errno.ENOSPC: "free disk space there",
    errno.EDQUOT: "free space within your disk quota",
    errno.EFBIG: "raise the file-size limit (ulimit -f)",
    errno.EACCES: "make the folder writable (chmod u+w)",
    errno.EPERM: "make the folder writable (chmod u+w)",
    errno.EROFS: "the filesystem is read-only: run where it is writable",
}


def write_error(path: str | Path, error: OSError) -> ResoMapError:
    """The one line for an OSError while writing `path`."""
    fix = _FIXES.get(error.errno, "check the folder and the disk")
    return ResoMapError(f"cannot write {path}: {error.strerror or error}: {fix}; nothing was replaced")


def _writer_prefix(path: Path) -> str:
    """Temp files name their writer (host and pid), so a later writer can tell which are orphans."""
    return f".{path.name}.{socket.gethostname()}-"


def _temp_prefix(path: Path) -> str:
    return f"{_writer_prefix(path)}{os.getpid()}."


def _remove_orphan_temps(path: Path) -> None:
    """Delete temp files of `path` left by a process of this host that no longer runs (kill -9)."""
    start = _writer_prefix(path)
    for name in os.listdir(path.parent):
        if not (name.startswith(start) and name.endswith(".tmp")):
            continue
        pid = name[len(start) :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):  # removed already
                os.unlink(path.parent / name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_orphan_temps(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
        os.close(fd)
    except OSError as error:
        raise write_error(path, error) from None
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as error:
        if error.errno not in _FIXES:
            raise
        raise write_error(path, error) from None
    finally:
        with contextlib.suppress(FileNotFoundError):  # removed already
            os.unlink(tmp)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO]:
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def reserve(path: Path, nbytes: int, shown_as: Path) -> None:
    """Allocate `nbytes` for the file `path` on disk now, so a full disk is one line here rather
    than a SIGBUS later, when a memory map writes into a hole, or a short write numpy cannot name
    (Linux; elsewhere a no-op). Errors name `shown_as`, the file the user will look for."""
    if not hasattr(os, "posix_fallocate") or nbytes == 0:
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as error:
        raise write_error(shown_as, error) from None
    finally:
        os.close(fd)


def check_free_space(folder: Path, nbytes: int, what: str) -> None:
    """Stop before writing when the disk under `folder` has less than `nbytes` free."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if free < nbytes:
        raise ResoMapError(
            f"{what} needs {_gb(nbytes)} in {folder} but only {_gb(free)} is free there: free disk space, "
            "or move the repository to a larger disk"
        )


def _gb(nbytes: int) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"


def check_writable(*folders: Path) -> None:
    """Each folder exists (made if not) and takes a new file: run before any work, so a stage that
    cannot write its outputs stops with one line instead of after the work, with some of them new."""
    for folder in folders:
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=folder, prefix=_temp_prefix(Path("probe")), suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        except OSError as error:
            raise write_error(folder, error) from None


def write_json(path: str | Path, data: object) -> None:
    with atomic_open(path) as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")


def read_json(path: str | Path) -> dict:
    with open(path) as f:
        return json.load(f)


def write_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Uncompressed: the arrays load fast and DVC dedups identical files anyway."""
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


NPY_HEADER_MAX = 65_536  # a .npy header is padded to 64-byte blocks and is far smaller than this


def write_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        reserve(tmp, array.nbytes + NPY_HEADER_MAX, shown_as=path)
        with open(tmp, "r+b") as f:  # not "wb": that would free the reservation
            np.save(f, array)
            f.truncate()


def save_state_dict(path: str | Path, state: dict) -> None:
    import torch  # on use: prepare and aggregate write no tensors, and torch is a second of start-up

    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def load_state_dict(path: str | Path) -> dict:
    """weights_only=True: a checkpoint can carry tensors, never code. One that carries a pickled
    object is refused before anything in it runs."""
    import torch

    if not Path(path).is_file():
        raise ResoMapError(f"{path} not found: run `dvc repro` (or `dvc checkout {path}`) to make it")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError) as error:  # a truncated or overwritten zip: torch's reader says so
        reason = " ".join(str(error).split()).split(". ")[0] or f"{Path(path).stat().st_size} bytes, {type(error).__name__}"
        raise ResoMapError(
            f"{path} is truncated or corrupt ({reason}): restore it with `dvc checkout {path}`, "
            "or rebuild it with `dvc repro -f` on the stage that writes it"
        ) from None
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()[0]
        raise ResoMapError(
            f"{path} holds more than tensors, refusing to load it ({reason}): "
            "rebuild it with `dvc repro -f` on the stage that writes it, and never load checkpoints from untrusted sources"
        ) from None
