"""The epoch's read order: full shuffle as before, block shuffle for slow disks."""

import os

import numpy as np
import pytest
import torch

from helpers.env import shipped
from resomap.core.config import ParamsError, TrainParams, parse_params, validate
from resomap.data.order import block_order, epoch_order, read_unit
from resomap.data.readahead import MappedRows, byte_ranges


def test_full_shuffle_is_the_permutation_it_always_was():
    order = epoch_order(100, TrainParams(), torch.Generator().manual_seed(3))
    assert torch.equal(order, torch.randperm(100, generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("count", [1000, 1003])  # the last block short, or not
def test_block_order_reads_whole_blocks_within_each_window(count):
    block, window = 16, 128
    order = block_order(count, block, window, torch.Generator().manual_seed(0))
    assert torch.equal(order.sort().values, torch.arange(count))  # every image once
    position = torch.empty(count, dtype=torch.long)
    position[order] = torch.arange(count)
    for start in range(0, count, block):  # a block's images are read within one window of the order
        span = position[start : start + block]
        assert span.max() - span.min() < window
    assert not torch.equal(order[:window].sort().values, order[:window])  # shuffled within the window
    again = block_order(count, block, window, torch.Generator().manual_seed(0))
    assert torch.equal(order, again) and not torch.equal(order, block_order(count, block, window, torch.Generator().manual_seed(1)))


def test_a_block_shuffled_window_reads_whole_blocks_where_a_full_shuffle_scatters():
    generator = torch.Generator().manual_seed(0)
    full, blocked = torch.randperm(50_000, generator=generator), block_order(50_000, 64, 1024, generator)
    assert len(byte_ranges(full[:1024].numpy(), 1, 0, gap=0)) > 1000  # scattered: a neighbour now and then
    assert len(byte_ranges(blocked[:1024].numpy(), 1, 0, gap=0)) <= 16  # the window's 16 blocks, each one run


def test_a_window_smaller_than_a_block_is_refused():
    raw = shipped()
    raw["train"].update(shuffle="block", shuffle_block=64, shuffle_window=32)
    with pytest.raises(ParamsError, match=r"train.shuffle_window \(32\) must be at least train.shuffle_block \(64\)"):
        validate(parse_params(raw))
    raw["train"].update(shuffle="blocks")
    with pytest.raises(ParamsError, match="train.shuffle must be one of full, block"):
        parse_params(raw)


def test_byte_ranges_join_consecutive_rows_and_rows_close_together():
    rows = np.array([9, 3, 4, 5, 11, 10, 0])
    assert byte_ranges(rows, 10, 100, gap=0) == [(100, 110), (130, 160), (190, 220)]
    assert byte_ranges(rows, 10, 100, gap=25) == [(100, 160), (190, 220)]  # 20 bytes apart: one read; 30: two
    assert byte_ranges(np.array([], dtype=np.int64), 10, 100) == []


def test_a_block_shuffled_epoch_reads_ahead_whole_blocks(tiny_synthetic, monkeypatch):
    """The advice the kernel gets (the real call on a real file, recorded), for rows of 1 MiB: a
    full shuffle's rows one by one, a block-shuffled epoch's whole aligned blocks, joined."""
    rows = MappedRows(tiny_synthetic / "train" / "images.npy", offset=128, row_bytes=2**20)
    advised = []
    fadvise = os.posix_fadvise

    def recorded(fd, offset, length, advice):
        advised.append((offset, length))
        fadvise(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", recorded)
    ids = torch.tensor([5, 40, 41, 9])
    rows.will_need(ids, read_unit(TrainParams()))
    at = lambda row: 128 + row * 2**20  # noqa: E731
    assert advised == [(at(5), 2**20), (at(9), 2**20), (at(40), 2 * 2**20)]
    advised.clear()
    rows.will_need(ids, read_unit(TrainParams(shuffle="block", shuffle_block=8)))
    assert advised == [(at(0), 16 * 2**20), (at(40), 8 * 2**20)]  # blocks 0-1 as one run, block 5
