"""prepare: decode and resize a data source once per resolution into uint8 arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from resomap import io
from resomap.config import DataParams
from resomap.data.resize import resize_image, resize_mask
from resomap.data.samples import SPLITS, Sample, SourceData

RESIZE_POLICY = "shorter side to R (bicubic, antialiased), centre crop R x R; masks by area coverage >= 0.5"


def open_source(data: DataParams, resolution: int) -> SourceData:
    """The configured source; imports are local so each source's dependencies load only when used."""
    if data.source == "synthetic":
        from resomap.data.synthetic import NATIVE_SIZE, synthetic_source

        sizes = {"train": data.size.train, "val": data.size.val, "test": data.size.test}
        return synthetic_source(sizes, seed=data.seed, native_size=max(NATIVE_SIZE, resolution))
    if data.source == "imagefolder":
        from resomap.data.imagefolder import imagefolder_source

        return imagefolder_source(
            Path(data.path),
            seed=data.seed,
            val_fraction=data.val_fraction,
            test_fraction=data.test_fraction,
            on_bad_image=data.on_bad_image,
        )
    from resomap.data.torchvision_source import torchvision_source

    return torchvision_source(data.name, Path(data.path), seed=data.seed, val_fraction=data.val_fraction)


def resize_split(samples: list[Sample], resolution: int, with_masks: bool, desc: str) -> dict[str, np.ndarray]:
    """Decode and resize every sample of a split, keeping the source's order (image i stays image i)."""
    images = np.empty((len(samples), resolution, resolution, 3), dtype=np.uint8)
    masks = np.empty((len(samples), resolution, resolution), dtype=bool) if with_masks else None
    for i, sample in enumerate(tqdm(samples, desc=desc, unit="img", leave=False, mininterval=1.0)):
        rgb, mask = sample.load()
        images[i] = resize_image(rgb, resolution)
        if masks is not None:
            masks[i] = resize_mask(mask, resolution)
    arrays = {"images": images, "labels": np.array([s.label for s in samples], dtype=np.int64)}
    if masks is not None:
        arrays["masks"] = masks
    return arrays


def prepare_resolution(data: DataParams, resolution: int, out_dir: Path) -> dict:
    """Write train/val/test arrays and a manifest for one resolution; return the manifest.

    Bad image files stop or are skipped when the source is opened, before anything is written."""
    source = open_source(data, resolution)
    for split in SPLITS:
        arrays = resize_split(source.splits[split], resolution, source.has_masks, desc=f"prepare {resolution}px {split}")
        io.write_npz(out_dir / f"{split}.npz", **arrays)  # one split in memory at a time
    counts = {split: len(source.splits[split]) for split in SPLITS}
    manifest = {
        "source": data.source,
        "resolution": resolution,
        "classes": list(source.classes),
        "counts": counts,
        "has_masks": source.has_masks,
        "resize_policy": RESIZE_POLICY,
        "skipped": [{"path": bad.path, "reason": bad.reason} for bad in source.skipped],
    }
    io.write_json(out_dir / "classes.json", list(source.classes))  # its own file: profile depends on it alone
    io.write_json(out_dir / "manifest.json", manifest)
    return manifest
