"""prepare: decode and resize a data source once per resolution into uint8 arrays."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from tqdm import tqdm

from resomap.core import io
from resomap.core.config import DataParams
from resomap.prepare.resume import SplitScratch, scratch_key, scratch_root
from resomap.prepare.samples import SPLITS, UNKNOWN_LABEL, UNLABELED, Sample, SourceData
from resomap.prepare.splits import check_class_coverage, stratified_subset
from resomap.prepare.workers import default_workers, resize_pool, split_bytes, write_split

RESIZE_POLICY = "shorter side to R (bicubic, antialiased), centre crop R x R; masks by area coverage >= 0.5"
# Object masks are kept for the test split alone: explain scores localisation on test images, and
# train masks would add a third to the images' size on disk and in memory (18 GB for a 30k study).
MASKED_SPLITS = ("test",)


def open_source(data: DataParams, resolution: int) -> SourceData:
    """The configured source; imports are local so each source's dependencies load only when used."""
    if data.source == "synthetic":
        from resomap.prepare.synthetic import NATIVE_SIZE, synthetic_source

        images = data.images
        sizes = {"train": images.train, "val": images.val, "test": images.test, UNLABELED: images.unlabeled}
        return synthetic_source(sizes, seed=data.seed, native_size=max(NATIVE_SIZE, resolution))
    if data.source == "imagefolder":
        from resomap.prepare.imagefolder import imagefolder_source

        return imagefolder_source(
            Path(data.path),
            seed=data.seed,
            val_fraction=data.val_fraction,
            test_fraction=data.test_fraction,
            on_bad_image=data.on_bad_image,
            unlabeled_path=None if data.unlabeled_path is None else Path(data.unlabeled_path),
        )
    from resomap.prepare.torchvision_source import torchvision_source

    return torchvision_source(data.name, Path(data.path), seed=data.seed, val_fraction=data.val_fraction)


def subset_train(source: SourceData, data: DataParams) -> SourceData:
    """The source with its train split cut to data.subset_fraction of each class (val and test
    stay whole, so scores remain comparable with the full data's)."""
    train = stratified_subset(source.splits["train"], source.classes, data.subset_fraction, data.seed)
    return dataclasses.replace(source, splits={**source.splits, "train": train})


def prepare_resolution(
    data: DataParams, resolution: int, out_dir: Path, workers: int | None = None, scratch_dir: Path | None = None
) -> dict:
    """Write train/val/test arrays (.npy files in a folder per split), the unlabeled pool's when
    the source has one, and a manifest for one resolution; return the manifest.

    Bad image files stop or are skipped when the source is opened, and splits missing a class stop
    (or warn), before anything is written.
    `workers` processes decode and resize (default: `default_workers`); the arrays are the same
    whatever their number. Splits are written under `scratch_dir` (resomap/prepare/resume.py), where
    a killed run's finished splits wait for the next; None: a throwaway folder, nothing resumes."""
    source = subset_train(open_source(data, resolution), data)
    how_to_add = f"raise data.images (the built-in data has {len(source.classes)} classes)" if data.source == "synthetic" else "add images"
    missing = check_class_coverage(source, data.on_missing_class, how_to_add)
    masked = [split for split in SPLITS if source.has_masks and split in MASKED_SPLITS]
    splits = source.written_splits()
    counts = {split: len(samples) for split, samples in splits.items()}
    manifest = {
        "source": data.source,
        "resolution": resolution,
        "classes": list(source.classes),
        "counts": counts,
        "subset_fraction": data.subset_fraction,  # of each class of the train split (counts are after it)
        "masks_for": masked,  # splits with a masks.npy
        "resize_policy": RESIZE_POLICY,
        "skipped": [{"path": bad.path, "reason": bad.reason} for bad in source.skipped],
        "missing_classes": missing,  # split -> classes it has no image of (data.on_missing_class: warn)
    }
    if UNLABELED in splits:  # false for an image folder's pool: its labels.npy holds UNKNOWN_LABEL
        manifest["unlabeled_labels_known"] = all(sample.label != UNKNOWN_LABEL for sample in source.unlabeled)
    with scratch_root(out_dir, scratch_dir) as root:
        scratch = SplitScratch(root, resolution, scratch_key(data, resolution, splits))
        todo = splits_to_write(scratch, splits, resolution)
        nbytes = {split: split_bytes(counts[split], resolution, split in masked) for split in splits}
        check_space(scratch, out_dir, counts, nbytes, list(todo), resolution)
        write_splits(todo, resolution, masked, scratch, out_dir, workers)
        scratch.move_into(out_dir, list(splits))
        io.write_json(out_dir / "classes.json", list(source.classes))  # its own file: profile depends on it alone
        io.write_json(out_dir / "manifest.json", manifest)
        scratch.remove()
    return manifest


def splits_to_write(scratch: SplitScratch, splits: dict[str, list[Sample]], resolution: int) -> dict[str, list[Sample]]:
    """The splits a killed run did not finish (all of them on a first run), a line for those it did."""
    if scratch.remove_other_keys():
        print(f"prepare {resolution}px: removed the scratch of an earlier run with other data params, images or code (not reusable)")
    done = [split for split in splits if scratch.is_done(split)]
    todo = {split: samples for split, samples in splits.items() if split not in done}
    for split in todo:
        scratch.clear_unfinished(split)
    if done:
        left = f"{len(todo)} split{'' if len(todo) == 1 else 's'} left"
        print(f"prepare {resolution}px: {', '.join(done)} already prepared (resumed), {left}", flush=True)
    return todo


def check_space(
    scratch: SplitScratch, out_dir: Path, counts: dict[str, int], nbytes: dict[str, int], todo: list[str], resolution: int
) -> None:
    """Room on the scratch's disk for the splits still to write; and on out_dir's for every split
    when that is another disk (the splits are then copied there, not renamed)."""

    def check(folder: Path, splits: list[str]) -> None:
        images = sum(counts[split] for split in splits)
        io.check_free_space(folder, sum(nbytes[split] for split in splits), f"prepare {resolution}px ({images} images)")

    io.check_writable(scratch.folder, out_dir)
    check(scratch.resolution_dir, todo)
    if out_dir.stat().st_dev != scratch.folder.stat().st_dev:
        check(out_dir, list(counts))


def write_splits(
    todo: dict[str, list[Sample]], resolution: int, masked: list[str], scratch: SplitScratch, out_dir: Path, workers: int | None
) -> None:
    """Each split into the scratch, then its done marker; one progress bar over them all, and a
    line with the throughput."""
    if not todo:
        return
    images = sum(map(len, todo.values()))
    workers = workers or default_workers(images)
    start = time.perf_counter()
    with resize_pool(todo, workers) as pool, tqdm(total=images, unit="img", leave=False, mininterval=1.0) as bar:
        for split, samples in todo.items():
            bar.set_description(f"prepare {resolution}px {split}")
            write_split(
                split, samples, resolution, split in masked, scratch.split_dir(split), pool, progress=bar.update, shown_in=out_dir / split
            )
            scratch.mark_done(split, len(samples))
    seconds = time.perf_counter() - start
    processes = f"{workers} worker processes" if workers > 1 else "1 process"
    print(f"prepare {resolution}px: {images:,} images in {seconds:.1f} s ({images / max(seconds, 1e-6):,.0f} img/s, {processes})", flush=True)
