"""Usage: python -m benchmarks.prepare_throughput [--resolutions ...] [--images N] [--workers ...]
           [--out benchmarks/results/prepare_throughput.json]

Images per second of the prepare stage (render or decode, resize, write the npz) on one process and
on several, for the built-in synthetic data. A large study prepares 30k images at each of several
resolutions, so on one core prepare alone would eat much of a half-hour GPU budget. Each row holds
the wall time of one `prepare_resolution` over a train split of `--images` images (no val or test),
the img/s it makes and whether its arrays match the one-process run byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

from resomap.core import io
from resomap.core.config import DataParams, ImageCounts
from resomap.prepare.resolution import prepare_resolution
from resomap.prepare.synthetic import CLASS_NAMES
from resomap.prepare.workers import available_cores

NUM_CLASSES = len(CLASS_NAMES)


def prepare_seconds(resolution: int, images: int, workers: int, out_dir: Path) -> tuple[float, str]:
    """Wall seconds of one prepare and the sha256 of the train arrays it wrote. val and test get one
    image per class, the least a split may hold (prepare refuses a split without every class)."""
    data = DataParams(images=ImageCounts(train=images, val=NUM_CLASSES, test=NUM_CLASSES))
    start = time.perf_counter()
    prepare_resolution(data, resolution, out_dir, workers=workers)
    seconds = time.perf_counter() - start
    return seconds, hashlib.sha256((out_dir / "train" / "images.npy").read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", nargs="+", type=int, default=[224, 512])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--workers", nargs="+", type=int, default=sorted({1, available_cores()}))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/prepare_throughput.json"))
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for resolution in args.resolutions:
            reference = None
            for workers in args.workers:
                seconds, digest = prepare_seconds(resolution, args.images, workers, Path(tmp) / f"{resolution}_{workers}")
                reference = reference or digest
                rows.append({"resolution": resolution, "images": args.images, "workers": workers,
                             "seconds": round(seconds, 2), "img_s": round(args.images / seconds, 1),
                             "identical_to_first": digest == reference, "cores": available_cores()})
                print(f"{resolution}px, {workers} worker(s): {args.images / seconds:.0f} img/s ({seconds:.1f} s)", flush=True)
                io.write_json(args.out, rows)


if __name__ == "__main__":
    main()
