"""The pinned-memory fallback forced on: RESOMAP_DATA_PLACEMENT=host (resomap/data/placement.py:
auto|device|host) keeps the training split in host memory; one bf16 epoch of the train loop; the
page-locked bytes (torch.cuda.host_memory_stats, the caching host allocator's pool) against the
split's bytes. Passes when the split stayed on the host and the pinned pool peaked at no more than
about two batches in flight (LIMIT_BLOCKS power-of-two batch blocks), not the split."""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.gpu_check.common import check_main, cuda_device, prepare, require, result, train_params

PLACEMENT_ENV = "RESOMAP_DATA_PLACEMENT"
MODEL, RESOLUTION, IMAGES = "resnet18", 64, 3072
LIMIT_BLOCKS = 4  # two batches in flight, each rounded up to a power of two, and the labels' and ids' small blocks


def block_bytes(size: int) -> int:
    """The caching host allocator rounds every block up to a power of two."""
    return 1 << max(0, size - 1).bit_length()


def pinned_limit(batch_bytes: int) -> int:
    return LIMIT_BLOCKS * block_bytes(batch_bytes)


def host_stat(stats: dict, name: str, kind: str = "peak") -> int | None:
    for key in (f"{name}.{kind}", f"{name}.all.{kind}"):
        if key in stats:
            return int(stats[key])
    return None


def run(work: Path) -> dict:
    os.environ[PLACEMENT_ENV] = "host"
    import torch

    from resomap.core.device import memory_format
    from resomap.data.placement import training_memory
    from resomap.data.prepared import load_split
    from resomap.models.registry import build_model
    from resomap.train.step import make_train_step, train_one_epoch

    device = cuda_device()
    train = train_params(epochs=1)
    split = load_split(prepare(work, RESOLUTION, train=IMAGES) / "train")
    split_bytes = split.images.numel() * split.images.element_size() + split.labels.numel() * split.labels.element_size()
    batch_bytes = train.batch_size * split.images[0].numel() * split.images.element_size()
    placed = training_memory(split, device)
    require(placed.images.device.type == "cpu",
            f"{PLACEMENT_ENV}=host ignored: the split went to {placed.images.device} (interface missing in resomap/data/placement.py?)")
    torch.manual_seed(0)
    model = build_model(MODEL, 10).to(device, memory_format=memory_format(train.channels_last))
    step = make_train_step(model, train, device, len(placed))
    torch.cuda.reset_peak_host_memory_stats()
    loss, accuracy, seen = train_one_epoch(step, placed, torch.Generator().manual_seed(0), epoch=1)
    torch.cuda.synchronize(device)
    stats = torch.cuda.host_memory_stats()
    pinned = host_stat(stats, "allocated_bytes")
    require(pinned is not None, f"torch.cuda.host_memory_stats() has no allocated_bytes peak: keys {sorted(stats)[:8]}")
    limit = pinned_limit(batch_bytes)
    figure = (f"pinned peak {pinned / 2**20:.1f} MiB = {pinned / batch_bytes:.1f} batches (limit {limit / 2**20:.0f} MiB) "
              f"vs split {split_bytes / 2**20:.1f} MiB; {seen} images, loss {loss:.3f}")
    details = dict(model=MODEL, resolution=RESOLUTION, images=IMAGES, batch_size=train.batch_size, split_bytes=split_bytes,
                   batch_bytes=batch_bytes, pinned_peak_bytes=pinned, pinned_limit_bytes=limit,
                   active_peak_bytes=host_stat(stats, "active_bytes"), split_is_pinned=bool(placed.images.is_pinned()),
                   placement=str(getattr(placed, "placement", None)),
                   device_peak_allocated_bytes=torch.cuda.max_memory_allocated(device), train_loss=loss, train_accuracy=accuracy)
    return result(pinned <= limit and pinned < split_bytes, figure, **details)


if __name__ == "__main__":
    check_main(run, __doc__)
