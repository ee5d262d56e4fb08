"""The order an epoch reads the training split in.

`full` is a fresh random permutation (torch.randperm on the cell's generator). `block` is for
splits that stream from a disk whose random reads are slow (spinning or network disks): the split
is cut into blocks of `block` consecutive images, the blocks are put in a random order, and the
images are shuffled within each window of `window` images (window // block whole blocks,
consecutive in that order), like a shuffle buffer. The prefetch thread then reads a window's
blocks ahead as whole runs (`read_unit`, resomap/data/readahead.py) instead of one scattered image
at a time, and the window's later batches find them in the page cache. The cost is batches less
mixed than a full shuffle's: the prepared split keeps the source's order, which for an
image folder is class by class, so a window should span many classes (docs/scaling.md measures it).
"""

from __future__ import annotations

import torch

from resomap.core.config import TrainParams


def epoch_order(count: int, train: TrainParams, generator: torch.Generator) -> torch.Tensor:
    """The ids of `count` images in this epoch's reading order, drawn from `generator`."""
    if train.shuffle == "full":
        return torch.randperm(count, generator=generator)
    return block_order(count, train.shuffle_block, train.shuffle_window, generator)


def read_unit(train: TrainParams) -> int:
    """Images the prefetch thread reads ahead together: a block-shuffled epoch's whole blocks."""
    return train.shuffle_block if train.shuffle == "block" else 1


def block_order(count: int, block: int, window: int, generator: torch.Generator) -> torch.Tensor:
    """Blocks of `block` consecutive ids in a random order, then shuffled within each window of
    window // block blocks."""
    blocks = torch.randperm(-(-count // block), generator=generator)
    windows = []
    for group in blocks.split(max(1, window // block)):
        ids = (group[:, None] * block + torch.arange(block)).flatten()
        ids = ids[ids < count]  # the last block may be short
        windows.append(ids[torch.randperm(len(ids), generator=generator)])
    return torch.cat(windows)

