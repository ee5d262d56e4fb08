"""Usage: python -m benchmarks.augment_throughput [--batch 64] [--resolution 64] [--repeats 30]
           [--out benchmarks/results/augment_throughput.json]

Milliseconds per batch of the train loop's augmentation (crop_flip, then each policy of
`train.augment`, then normalize), draws included, next to kornia's own RandAugment module
(one op per batch) for scale. Each row: the median and the spread (quartiles) of `--repeats`
timed batches after 3 untimed ones, and how many distinct outputs 16 copies of one image get.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import torch

from resomap.core import io
from resomap.core.config import Augment, ResizedCrop
from resomap.data.augment import crop_flip, draw_crop_flip, normalize
from resomap.data.policies import apply_policy, draw_policy

RECIPES = {
    "crop_flip (default)": Augment(),
    "randaugment (n=2, m=9)": Augment(policy="randaugment"),
    "trivialaugment": Augment(policy="trivialaugment"),
    "autoaugment": Augment(policy="autoaugment"),
    "random_resized_crop": Augment(random_resized_crop=ResizedCrop()),
    "color_jitter 0.4": Augment(color_jitter=0.4),
    "random_erasing 0.25": Augment(random_erasing=0.25),
    "randaugment + resized crop + jitter + erasing": Augment(
        policy="randaugment", random_resized_crop=ResizedCrop(), color_jitter=0.4, random_erasing=0.25
    ),
}
KORNIA = "kornia RandAugment(n=2, m=10) module, for scale"


def ours(augment: Augment, generator: torch.Generator):
    """The train loop's per-batch augmentation, as one callable of a uint8 batch."""
    def run(images: torch.Tensor) -> torch.Tensor:
        padding = round(augment.crop_padding * images.shape[-1])
        offsets, flips = draw_crop_flip(len(images), padding, augment.hflip, generator)
        draws = draw_policy(len(images), augment, *images.shape[-2:], generator)
        return normalize(apply_policy(crop_flip(images, padding, offsets, flips), augment, draws), torch.channels_last)

    return run


def kornia_randaugment():
    """kornia's RandAugment(n=2, m=10) module on the float batch: its ops are drawn per batch."""
    from kornia.augmentation.auto import RandAugment

    module = RandAugment(n=2, m=10)
    return lambda images: module(images.float() / 255.0)


def milliseconds(run, images: torch.Tensor, repeats: int) -> list[float]:
    for _ in range(3):
        run(images)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(images)
        times.append((time.perf_counter() - start) * 1000)
    return times


def distinct(run, resolution: int) -> int:
    """Distinct outputs of 16 copies of one image in one batch (crop and flip off): 1 means the
    batch shares its draws."""
    image = torch.randint(0, 256, (1, 3, resolution, resolution), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    out = run(image.expand(16, -1, -1, -1).contiguous())
    return len({row.numpy().tobytes() for row in out})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/augment_throughput.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    images = torch.randint(0, 256, (args.batch, 3, args.resolution, args.resolution), dtype=torch.uint8)
    images = images.contiguous(memory_format=torch.channels_last)
    rows = []
    for name, augment in [*RECIPES.items(), (KORNIA, None)]:
        run, alone = (kornia_randaugment(),) * 2 if augment is None else (
            ours(augment, torch.Generator().manual_seed(0)),
            ours(dataclasses.replace(augment, hflip=False, crop_padding=0.0), torch.Generator().manual_seed(0)),
        )
        times = milliseconds(run, images, args.repeats)
        q1, median, q3 = statistics.quantiles(times, n=4)
        rows.append({"recipe": name, "batch": args.batch, "resolution": args.resolution, "ms_median": round(median, 2),
                     "ms_q1": round(q1, 2), "ms_q3": round(q3, 2), "distinct_of_16_copies": distinct(alone, args.resolution),
                     "threads": torch.get_num_threads(), "device": "cpu"})
        print(f"{name}: {median:.1f} ms per batch of {args.batch} at {args.resolution} px", flush=True)
        io.write_json(args.out, rows)


if __name__ == "__main__":
    main()
