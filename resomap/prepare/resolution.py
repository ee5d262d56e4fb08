"""prepare: decode and resize a data source once per resolution into uint8 arrays."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from resomap.core import io
from resomap.core.config import DataParams
from resomap.prepare.samples import SPLITS, UNKNOWN_LABEL, UNLABELED, SourceData
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


def prepare_resolution(data: DataParams, resolution: int, out_dir: Path, workers: int | None = None) -> dict:
    """Write train/val/test arrays (.npy files in a folder per split), the unlabeled pool's when
    the source has one, and a manifest for one resolution; return the manifest.

    Bad image files stop or are skipped when the source is opened, and splits missing a class stop
    (or warn), before anything is written.
    `workers` processes decode and resize (default: `default_workers`); the arrays are the same
    whatever their number."""
    source = subset_train(open_source(data, resolution), data)
    how_to_add = f"raise data.images (the built-in data has {len(source.classes)} classes)" if data.source == "synthetic" else "add images"
    missing = check_class_coverage(source, data.on_missing_class, how_to_add)
    masked = [split for split in SPLITS if source.has_masks and split in MASKED_SPLITS]
    splits = source.written_splits()
    counts = {split: len(samples) for split, samples in splits.items()}
    needed = sum(split_bytes(counts[split], resolution, split in masked) for split in splits)
    io.check_free_space(out_dir, needed, f"prepare {resolution}px ({sum(counts.values())} images)")
    with resize_pool(splits, workers or default_workers(sum(counts.values()))) as pool:
        for split, samples in splits.items():
            write_split(split, samples, resolution, split in masked, out_dir / split, pool)
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
    io.write_json(out_dir / "classes.json", list(source.classes))  # its own file: profile depends on it alone
    io.write_json(out_dir / "manifest.json", manifest)
    return manifest
