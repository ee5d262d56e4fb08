"""Decode, resize and write a split on every core: prepare of 30k images at 512 px takes minutes on one.

A split's arrays are .npy files filled in place through memory maps, in chunks of consecutive
samples: each row is written by position, so the files are byte-identical whatever the number of
workers, no image travels between processes, and a split never has to fit in memory. Workers are
spawned, not forked (a forked child inherits locks held by the parent's threads); each gets the
source's samples once, when it starts.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from itertools import repeat
from pathlib import Path

import numpy as np

from resomap.core import io
from resomap.prepare.resize import resize_image, resize_mask
from resomap.prepare.samples import Sample

CHUNK = 64  # images per task
# A spawned worker imports what the stage imports (torch among it), a second or two of CPU: the
# work of about a thousand images. One worker per 2000 images keeps small studies in one process.
MIN_IMAGES_PER_WORKER = 2000

_worker_splits: dict[str, list[Sample]] = {}  # a worker process's copy of the source's samples


def available_cores() -> int:
    """The cores this process may run on (fewer than the machine has when it is pinned)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers(images: int) -> int:
    """Every available core, but no more workers than pay for their start."""
    return max(1, min(available_cores(), images // MIN_IMAGES_PER_WORKER))


def _adopt(splits: dict[str, list[Sample]]) -> None:
    """Worker start: keep the samples, and leave Ctrl-C to the parent, which stops the pool."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_splits.update(splits)


def _resize_rows(samples: list[Sample], start: int, stop: int, resolution: int, files: dict[str, Path]) -> int:
    """Decode and resize samples[start:stop] into the same rows of the split's .npy files."""
    images = np.load(files["images"], mmap_mode="r+")
    masks = np.load(files["masks"], mmap_mode="r+") if "masks" in files else None
    for i in range(start, stop):
        rgb, mask = samples[i].load()
        images[i] = resize_image(rgb, resolution)
        if masks is not None:
            masks[i] = resize_mask(mask, resolution)
    return stop - start


def _resize_rows_in_worker(split: str, start: int, stop: int, resolution: int, files: dict[str, Path]) -> int:
    return _resize_rows(_worker_splits[split], start, stop, resolution, files)


@contextmanager
def resize_pool(splits: dict[str, list[Sample]], workers: int) -> Iterator[Executor | None]:
    """`workers` processes for `write_split`, or None (work in this process) for one."""
    if workers <= 1:
        yield None
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_adopt, initargs=(splits,)) as pool:
        yield pool


LABELS = np.int64  # labels.npy: one per image, written whole once the images are in


def split_arrays(count: int, resolution: int, with_masks: bool) -> dict[str, tuple[tuple[int, ...], type]]:
    """The shape and dtype of each array write_split fills row by row for `count` images."""
    arrays = {"images": ((count, resolution, resolution, 3), np.uint8)}
    if with_masks:
        arrays["masks"] = ((count, resolution, resolution), np.bool_)
    return arrays


def split_bytes(count: int, resolution: int, with_masks: bool) -> int:
    """What write_split puts on disk for `count` images, headers aside."""
    arrays = split_arrays(count, resolution, with_masks).values()
    return sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in arrays) + count * np.dtype(LABELS).itemsize


def _allocate(path: Path, shape: tuple[int, ...], dtype: type, shown_as: Path) -> None:
    """An .npy file of `shape` whose every byte is on disk now: a full disk is one line naming
    `shown_as` here, not a SIGBUS later, when a memory map writes into a hole."""
    try:
        np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)  # header + full size, sparse
    except OSError as error:
        raise io.write_error(shown_as, error) from None
    io.reserve(path, path.stat().st_size, shown_as=shown_as)


def write_split(
    split: str, samples: list[Sample], resolution: int, with_masks: bool, folder: Path, pool: Executor | None,
    *, progress: Callable[[int], object] = lambda images: None, shown_in: Path | None = None,
) -> None:
    """folder/images.npy (uint8 N x R x R x 3), labels.npy (int64 N) and, with masks, masks.npy
    (bool N x R x R), in the source's order (image i stays image i); each file appears complete or
    not at all. `pool` comes from `resize_pool` over the same splits: workers look samples up by name.
    `progress` is called with the images of each chunk done; a full disk names the file as in
    `shown_in` (default `folder`): the output the scratch folder is moved to."""
    shapes = split_arrays(len(samples), resolution, with_masks)
    starts = range(0, len(samples), CHUNK)
    stops = [min(start + CHUNK, len(samples)) for start in starts]
    with ExitStack() as files_in_progress:
        files = {name: files_in_progress.enter_context(io.atomic_path(folder / f"{name}.npy")) for name in shapes}
        for name, (shape, dtype) in shapes.items():
            _allocate(files[name], shape, dtype, shown_as=(shown_in or folder) / f"{name}.npy")
        if pool is None:
            done = (_resize_rows(samples, start, stop, resolution, files) for start, stop in zip(starts, stops))
        else:
            done = pool.map(_resize_rows_in_worker, repeat(split), starts, stops, repeat(resolution), repeat(files))
        for count in done:
            progress(count)
    io.write_npy(folder / "labels.npy", np.array([s.label for s in samples], dtype=LABELS))
