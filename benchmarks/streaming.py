"""Usage: python -m benchmarks.streaming [--part memory|fits|cold|decode|accuracy|all] [--work DIR] [--images N]
           [--resolution R] [--out benchmarks/results/streaming.json]

Training from a prepared split larger than it is comfortable to hold, on this machine:

- memory: prepares the built-in data at --resolution (256) with --images (50,000) train images, a
  ~10 GB split, and trains one epoch of mobilenet_v3_small from its memory map as the train stage
  does (prefetch thread, readahead), every image read at 256 px and resized to 64 px on the device
  before the model (progressive resizing's first epoch: on 2 CPU cores a 256 px forward pass would
  make the epoch take 20 minutes without changing what is read), sampling the process's anonymous resident memory (RssAnon in
  /proc/self/status: what the process holds itself, not the page cache's file pages) every 0.2 s.
- fits: on a split that fits in memory, epochs from the memory map against epochs from the split
  read whole into memory, interleaved: images/s and RssAnon of each.
- cold: the gather alone (the prefetch thread, no training) from the 10 GB split with its pages
  dropped from the page cache first (posix_fadvise DONTNEED): full shuffle with and without
  readahead, block shuffle with readahead. This is the disk's side of a GPU epoch.
- decode: prepare's images/s on one core from JPEG files of ImageNet's typical size (500 x 375,
  quality 90, written here from the built-in renders) at 128, 160, 224, 288 and 384 px: the
  per-core rate docs/scaling.md's ImageNet table divides by.
- accuracy: what block-shuffled reading costs in test accuracy, on the default study's prepared
  32 px data (run `dvc repro` first), in the order prepare wrote it and sorted by class (the order an
  image folder's prepare writes), against a full shuffle; 3 seeds each.

Results go to --out (merged by part), summarised in docs/benchmarks.md and docs/scaling.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from resomap.core import io
from resomap.core.config import DataParams, ImageCounts, TrainParams, load_params
from resomap.core.device import configure_backends
from resomap.data.order import epoch_order, read_unit
from resomap.data.placement import epoch_batches, training_memory
from resomap.data.prepared import PreparedData, Split, load_prepared, load_split
from resomap.evaluate.evaluation import evaluate_model
from resomap.models.registry import build_model
from resomap.prepare.resolution import prepare_resolution
from resomap.train.fit import fit
from resomap.train.losses import class_counts
from resomap.train.step import make_train_step, train_one_epoch

CPU = torch.device("cpu")
GIB = 2**30


def rss_kib() -> dict[str, int]:
    """RssAnon and RssFile of this process, in KiB."""
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status if line.startswith(("RssAnon", "RssFile")))
    return {name: int(value.split()[0]) for name, value in fields.items()}


@contextmanager
def sampled_rss(period: float = 0.2) -> Iterator[list[dict[str, int]]]:
    """RssAnon/RssFile samples every `period` seconds while the block runs."""
    samples: list[dict[str, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(period):
            samples.append(rss_kib())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        done.set()
        thread.join()


def rss_summary(samples: list[dict[str, int]]) -> dict[str, float]:
    anon, file = [s["RssAnon"] / 2**20 for s in samples], [s["RssFile"] / 2**20 for s in samples]
    return {"rss_anon_peak_gib": round(max(anon), 2), "rss_anon_median_gib": round(statistics.median(anon), 2),
            "rss_file_peak_gib": round(max(file), 2), "samples": len(samples)}


def prepared_split(work: Path, resolution: int, images: int) -> tuple[Path, float | None]:
    """The built-in data prepared at `resolution` with `images` train images (kept between runs);
    the seconds prepare took, None when it was there already."""
    folder = work / f"{resolution}px_{images}"
    if (folder / "manifest.json").is_file():
        return folder, None
    start = time.perf_counter()
    prepare_resolution(DataParams(images=ImageCounts(train=images, val=100, test=100)), resolution, folder)
    return folder, time.perf_counter() - start


def one_epoch(model_name: str, split: Split, classes: int, train: TrainParams, side: int | None = None) -> dict:
    """One epoch of the train stage's loop (no validation) on `split`, trained at `side` px
    (None: as prepared); time, images/s and memory."""
    torch.manual_seed(0)
    model = build_model(model_name, classes)
    placed = training_memory(split, CPU)
    step = make_train_step(model, train, CPU, len(split), class_counts=class_counts(split.labels, classes))
    step.resolution = side
    with sampled_rss() as samples:
        start = time.perf_counter()
        loss, _, seen = train_one_epoch(step, placed, torch.Generator().manual_seed(0), epoch=1)
        seconds = time.perf_counter() - start
    return {"model": model_name, "trained_at_px": side or split.images.shape[-1], "images": seen,
            "seconds": round(seconds, 1), "img_s": round(seen / seconds, 1),
            "train_loss": round(loss, 4), **rss_summary(samples)}


def split_gib(split: Split) -> float:
    return round(split.images.numel() / GIB, 2)


def part_memory(args) -> dict:
    folder, prepare_seconds = prepared_split(args.work, args.resolution, args.images)
    split = load_split(folder / "train")
    result = {"resolution": args.resolution, "split_gib": split_gib(split), "train_images": len(split),
              "machine_ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1)}
    if prepare_seconds is not None:
        result["prepare"] = {"seconds": round(prepare_seconds, 1), "img_s": round((len(split) + 200) / prepare_seconds, 1),
                             "workers": os.cpu_count()}
    drop_from_page_cache(folder / "train" / "images.npy")
    result["epoch"] = one_epoch("mobilenet_v3_small", split, 10, TrainParams(batch_size=128, lr=0.05), side=64)
    return result


def part_fits(args) -> dict:
    """Each path twice, interleaved (mapped, in memory, mapped, in memory): the first epoch of a
    process also pays for oneDNN's kernel set-up, which would otherwise count against one path."""
    folder, _ = prepared_split(args.work, 128, 8000)
    train = TrainParams(batch_size=64, lr=0.05)
    splits = {"mapped": load_split(folder / "train"), "in_memory": load_split(folder / "train", in_memory=True)}
    gather = {name: gather_rate(split, TrainParams(batch_size=256), batches=31) for name, split in splits.items()}
    epochs = {name: [] for name in splits}
    for _ in range(2):
        for name, split in splits.items():
            epochs[name].append(one_epoch("tiny_cnn", split, 10, train))
    return {"resolution": 128, "split_gib": split_gib(splits["mapped"]), "train_images": len(splits["mapped"]),
            "epoch": epochs, "gather": gather}


def drop_from_page_cache(path: Path) -> None:
    """Evict the file's pages from the page cache (clean pages; no privileges needed), so it is read from disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def gather_rate(split: Split, train: TrainParams, batches: int, *, readahead: bool = True) -> dict:
    """The prefetch thread alone, over the first `batches` batches of an epoch: images/s and MB/s."""
    placed = training_memory(split if readahead else dataclasses.replace(split, rows_file=None), CPU)
    order = epoch_order(len(split), train, torch.Generator().manual_seed(0))
    plan = [order[i * train.batch_size : (i + 1) * train.batch_size] for i in range(batches)]
    start = time.perf_counter()
    with epoch_batches(placed, plan, read_unit(train)) as gathered:
        for _ in gathered:
            pass
    seconds = time.perf_counter() - start
    images = sum(map(len, plan))
    image_bytes = split.images[0].numel()
    return {"images": images, "seconds": round(seconds, 2), "img_s": round(images / seconds, 1),
            "mb_s": round(images * image_bytes / seconds / 1e6, 1)}


def part_cold(args) -> dict:
    """Each run maps the split afresh after its pages were dropped: pages a live map of this
    process still holds would stay in the page cache (DONTNEED skips mapped pages)."""
    folder, _ = prepared_split(args.work, args.resolution, args.images)
    images = folder / "train" / "images.npy"
    runs = {}
    for name, train, readahead in (
        ("full shuffle, no readahead", TrainParams(batch_size=256), False),
        ("full shuffle, readahead", TrainParams(batch_size=256), True),
        ("block shuffle (64 / 4096), readahead", TrainParams(batch_size=256, shuffle="block"), True),
    ):
        gc.collect()  # the last run's map is gone
        drop_from_page_cache(images)
        runs[name] = gather_rate(load_split(folder / "train"), train, batches=32, readahead=readahead)  # two 4096-image windows
    return {"resolution": args.resolution, "split_gib": split_gib(load_split(folder / "train")), "runs": runs}


DECODE_RESOLUTIONS = (128, 160, 224, 288, 384)
JPEG_SIZE = (500, 375)  # ImageNet's most common photo size


def jpeg_folder(folder: Path, per_class: int) -> Path:
    """An image folder of `per_class` JPEGs per built-in class at JPEG_SIZE (kept between runs)."""
    import numpy as np
    from PIL import Image

    from resomap.prepare.synthetic import CLASS_NAMES, render_image

    if folder.is_dir():
        return folder
    for label, name in enumerate(CLASS_NAMES):
        (folder / name).mkdir(parents=True)
        for index in range(per_class):
            rgb, _ = render_image(label, np.random.default_rng([label, index]), size=max(JPEG_SIZE))
            Image.fromarray(rgb).resize(JPEG_SIZE).save(folder / name / f"{index:04d}.jpg", quality=90)
    return folder


def part_decode(args) -> dict:
    folder = jpeg_folder(args.work / "jpeg", per_class=40)
    data = DataParams(source="imagefolder", path=str(folder))
    rows = []
    for resolution in DECODE_RESOLUTIONS:
        start = time.perf_counter()
        manifest = prepare_resolution(data, resolution, args.work / f"jpeg_{resolution}", workers=1)
        seconds = time.perf_counter() - start
        images = sum(manifest["counts"].values())
        rows.append({"resolution": resolution, "images": images, "seconds": round(seconds, 2),
                     "img_s_per_core": round(images / seconds, 1)})
    return {"jpeg": f"{JPEG_SIZE[0]}x{JPEG_SIZE[1]}, quality 90", "rows": rows}


def class_sorted(data: PreparedData) -> PreparedData:
    """The same data with the train split in class order (stable), as an image folder's prepare writes it."""
    train = data.splits["train"]
    order = torch.argsort(train.labels, stable=True)
    return dataclasses.replace(data, splits={**data.splits, "train": Split(train.images[order], train.labels[order], None)})


def part_accuracy(args) -> dict:
    params = load_params()
    data = load_prepared(Path("data/prepared/32"), ("train", "val", "test"))
    rows = []
    for order_name, ordered in (("as prepared", data), ("class-sorted", class_sorted(data))):
        for shuffle in ("full", "block"):
            train = dataclasses.replace(params.train, shuffle=shuffle, shuffle_block=16, shuffle_window=256)
            for model_name in ("tiny_cnn", "simple_cnn"):
                accuracies = []
                for seed in (0, 1, 2):
                    torch.manual_seed(seed)
                    model = build_model(model_name, data.num_classes)
                    result = fit(model, ordered, train, seed=seed, device=CPU)
                    model.load_state_dict(result.best_state)
                    accuracies.append(evaluate_model(model, ordered, params.evaluate, CPU)[0]["accuracy"])
                rows.append({"order": order_name, "shuffle": shuffle, "model": model_name, "accuracy": accuracies,
                             "mean": round(statistics.mean(accuracies), 4)})
                print(rows[-1], flush=True)
    return {"resolution": 32, "train_images": len(data.splits["train"]), "block": 16, "window": 256, "rows": rows}


PARTS = {"memory": part_memory, "fits": part_fits, "cold": part_cold, "decode": part_decode, "accuracy": part_accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    parser.add_argument("--work", type=Path, default=Path("/tmp/resomap-streaming"))
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/streaming.json"))
    args = parser.parse_args()
    configure_backends(CPU)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for name in PARTS if args.part == "all" else [args.part]:
        results[name] = {**PARTS[name](args), "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
        print(json.dumps({name: results[name]}, indent=1), flush=True)
        io.write_json(args.out, results)


if __name__ == "__main__":
    main()
