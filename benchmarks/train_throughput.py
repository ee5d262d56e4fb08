"""Usage: python -m benchmarks.train_throughput [--models ...] [--resolutions ...] [--images N]
           [--batch-size B] [--steps S] [--warmup W] [--compile] [--out benchmarks/results/train_throughput.json]

Training images per second of the train stage's loop against a textbook PyTorch loop, in one run on
one machine, on the same images. The textbook loop is the one in most tutorials: a Dataset over
image files decoded with PIL, RandomCrop + RandomHorizontalFlip + ToTensor + Normalize per image, a
DataLoader with workers and pinned memory, fp32, NCHW, `loss.item()` every step. Ours is
`resomap.train.fit.train_one_epoch` exactly as the train stage runs it: uint8 arrays in device
memory, batched augmentation on the device, channels-last, bf16 autocast and fused optimizers on
GPU, no host synchronisation inside the epoch.

Both loops train the same model from the same initial weights with the same optimizer settings
(params.yaml's train section: SGD, momentum, weight decay); each runs `--warmup` steps (cudnn
autotuning, DataLoader workers starting, compilation) before `--steps` timed steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from resomap.core import io
from resomap.core.config import DataParams, ImageCounts, TrainParams, load_params
from resomap.core.device import configure_backends, memory_format, pick_device
from resomap.data.augment import MEAN, STD
from resomap.data.placement import training_memory
from resomap.data.prepared import Split, load_split
from resomap.models.registry import build_model
from resomap.prepare.resolution import prepare_resolution
from resomap.train.fit import compile_now
from resomap.train.step import make_train_step, train_one_epoch

MODELS = ["resnet18", "resnet50", "mobilenet_v3_small", "simple_cnn"]
RESOLUTIONS = [32, 64, 128, 224, 512]
NUM_CLASSES = 10


def write_images(resolution: int, count: int, root: Path) -> tuple[Split, Path]:
    """`count` built-in synthetic images at `resolution`: as uint8 arrays (what prepare writes) and
    as JPEG files in class folders (what a textbook loop reads); the arrays hold the decoded JPEGs,
    so both loops see the same pixels."""
    prepared = root / f"prepared_{resolution}"
    prepare_resolution(DataParams(images=ImageCounts(train=count, val=NUM_CLASSES, test=NUM_CLASSES)), resolution, prepared)
    split = load_split(prepared / "train")
    folder = root / f"files_{resolution}"
    decoded = []
    for index, (image, label) in enumerate(zip(split.images.permute(0, 2, 3, 1).numpy(), split.labels.tolist())):
        path = folder / str(label) / f"{index:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, quality=90)
        with Image.open(path) as saved:
            decoded.append(np.asarray(saved.convert("RGB")))
    images = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2)  # channels-last, as load_split gives the stage
    return Split(images, split.labels, None), folder


class ImageFiles(Dataset):
    """The textbook Dataset: one PIL decode and one transform pipeline per image."""

    def __init__(self, folder: Path, transform):
        self.items = sorted((path, int(path.parent.name)) for path in folder.glob("*/*.jpg"))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        path, label = self.items[index]
        with Image.open(path) as image:
            return self.transform(image.convert("RGB")), label


def textbook_img_s(name: str, folder: Path, resolution: int, train: TrainParams, device: torch.device, args) -> float:
    padding = round(train.augment.crop_padding * resolution)
    transform = T.Compose([T.RandomCrop(resolution, padding=padding), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    loader = DataLoader(
        ImageFiles(folder, transform), batch_size=train.batch_size, shuffle=True, drop_last=True,
        num_workers=args.workers, pin_memory=device.type == "cuda", persistent_workers=True,
    )
    torch.manual_seed(0)
    model = build_model(name, NUM_CLASSES).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
    running_loss, done, start = 0.0, 0, None
    while done < args.warmup + args.steps:
        for images, labels in loader:
            if done == args.warmup:
                start = time.perf_counter()
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            done += 1
            if done == args.warmup + args.steps:
                break
    return args.steps * train.batch_size / (time.perf_counter() - start)


def ours_img_s(name: str, images: Split, train: TrainParams, device: torch.device, args) -> tuple[float, float | None]:
    """The train stage's epoch loop: `warmup` batches, then `steps` timed ones; returns img/s and,
    with --compile, the compilation seconds (as the train stage reports them: apart)."""
    torch.manual_seed(0)
    model = build_model(name, NUM_CLASSES).to(device, memory_format=memory_format(train.channels_last))
    split = training_memory(images, device)
    step = make_train_step(model, train, device, len(split))
    compile_seconds = compile_now(step, model, split) if train.compile else None
    generator = torch.Generator().manual_seed(0)
    train_one_epoch(step, first(split, args.warmup * train.batch_size), generator, epoch=0)
    start = time.perf_counter()
    # train_one_epoch ends by reading the loss: the GPU has drained when it returns
    _, _, seen = train_one_epoch(step, first(split, args.steps * train.batch_size), generator, epoch=1)
    return seen / (time.perf_counter() - start), compile_seconds


def first(split: Split, count: int) -> Split:
    """The first `count` images, placed as `split` is (a TrainingSplit streams them as the stage does)."""
    return dataclasses.replace(split, images=split.images[:count], labels=split.labels[:count], masks=None)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--resolutions", nargs="+", type=int, default=RESOLUTIONS)
    parser.add_argument("--batch-size", type=int, default=None, help="default: params.yaml train.batch_size")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per loop")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (cudnn autotuning, workers starting)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="textbook DataLoader workers")
    parser.add_argument("--compile", action="store_true", help="ours with torch.compile (compile time reported apart)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/train_throughput.json"))
    args = parser.parse_args()

    device = pick_device()
    configure_backends(device)
    train = load_params().train
    # the rate does not change a step's cost: a study's lr: auto times as its hand-set default
    lr = TrainParams.lr if train.lr == "auto" else train.lr
    train = dataclasses.replace(train, batch_size=args.batch_size or train.batch_size, compile=args.compile, lr=lr)
    count = max(args.warmup, args.steps) * train.batch_size
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for resolution in args.resolutions:
            images, folder = write_images(resolution, count, Path(tmp))
            for name in args.models:
                ours, compile_seconds = ours_img_s(name, images, train, device, args)
                textbook = textbook_img_s(name, folder, resolution, train, device, args)
                rows.append({"model": name, "resolution": resolution, "ours_img_s": round(ours, 1),
                             "textbook_img_s": round(textbook, 1), "device": describe(device)})
                extra = f", compile {compile_seconds:.1f} s" if compile_seconds is not None else ""
                print(f"{name} {resolution}px: ours {ours:.1f} img/s, textbook {textbook:.1f} img/s, "
                      f"{ours / textbook:.2f}x{extra}", flush=True)
                io.write_json(args.out, rows)  # after every cell: a long run keeps what it measured


if __name__ == "__main__":
    main()
