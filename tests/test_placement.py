"""Where the training arrays live, and the host path's double-buffered gather (played on the CPU)."""

import threading
import time

import numpy as np
import pytest
import torch

from resomap.core.errors import ResoMapError
from resomap.data.placement import (
    PLACEMENT_ENV,
    TrainingSplit,
    batch,
    epoch_batches,
    placement_choice,
    training_memory,
)
from resomap.data.prefetch import GatheredBatch, Prefetcher
from resomap.data.prepared import Split

CPU = torch.device("cpu")


def split_of(count: int = 64, side: int = 8, seed: int = 0) -> Split:
    """uint8 images laid out as prepare's are: NHWC on disk, viewed as channels-last NCHW."""
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(0, 256, (count, side, side, 3), dtype=np.uint8)).permute(0, 3, 1, 2)
    labels = torch.from_numpy(rng.integers(0, 10, count)).long()
    return Split(images, labels, None)


class DeferredCopies:
    """A copy stream played on the CPU: a copy reads its host buffer only when its event completes
    (at a wait for it or a later one, or at flush), as an in-flight DMA does. A buffer written
    again before its copy's event was waited for shows up as a wrong batch. The prefetch thread
    waits, the loop copies: a lock keeps the queue whole."""

    def __init__(self):
        self.pending: list[tuple[int, tuple, tuple]] = []
        self.events = 0
        self.waited: list[int] = []
        self.lock = threading.Lock()

    def copy(self, tensors):
        copied = tuple(torch.empty_like(t) for t in tensors)  # the "device" tensors, filled on completion
        with self.lock:
            self.events += 1
            self.pending.append((self.events, tensors, copied))
            return copied, self.events

    def wait(self, event: int) -> None:
        with self.lock:
            self.waited.append(event)
            self.complete(event)

    def complete(self, event: int) -> None:
        while self.pending and self.pending[0][0] <= event:  # a stream completes in order
            _, sources, targets = self.pending.pop(0)
            for source, target in zip(sources, targets):
                target.copy_(source)

    def flush(self) -> None:
        with self.lock:
            if self.pending:
                self.complete(self.pending[-1][0])


def plan_of(split: Split, steps: int) -> list[torch.Tensor]:
    rng = torch.Generator().manual_seed(1)
    sizes = [16] * (steps // 2) + [5, 24] + [16] * (steps - steps // 2 - 2)  # a small batch, then a larger one
    return [torch.randperm(len(split), generator=rng)[:size] for size in sizes]


def gather_many(copies: DeferredCopies, split: Split, steps: int):
    """Every planned batch through a prefetcher with deferred copies, each taken in its planned order
    once the copies completed (on a GPU the compute stream waits for them)."""
    plan = plan_of(split, steps)
    with Prefetcher(split.images, split.labels, plan, copies) as batches:
        gathered = list(batches)
    copies.flush()
    return plan, [batch.take(ids) for ids, batch in zip(plan, gathered)]


def test_the_double_buffered_gather_gives_each_batch_byte_for_byte():
    split = split_of()
    copies = DeferredCopies()
    ids, got = gather_many(copies, split, steps=40)
    for i, (x, y) in zip(ids, got):
        expected = split.images[i]
        assert x.dtype == expected.dtype and x.shape == expected.shape and x.stride() == expected.stride()
        assert torch.equal(x, expected) and torch.equal(y, split.labels[i])
    # a buffer is refilled only after the copy that read it completed: batch n waits for batch n - 2's copy
    assert copies.waited == list(range(1, len(ids) - 1))


def test_a_buffer_overwritten_while_in_flight_would_be_caught():
    """The check above can fail: without the wait, a deferred copy reads a later gather's data."""
    split = split_of()
    copies = DeferredCopies()
    copies.wait = lambda event: None  # noqa: ARG005 - the gather's wait no longer completes anything
    ids, got = gather_many(copies, split, steps=10)
    assert torch.equal(got[-1][0], split.images[ids[-1]])  # the last gather was not overwritten: copies do complete
    assert not all(torch.equal(x, split.images[i]) for i, (x, _) in zip(ids, got))


def test_on_the_cpu_the_batch_in_use_is_never_overwritten():
    """Without copies the loop trains from the buffer itself: the thread refills it only once the
    loop asked for the batch after it, so every batch still holds its images when the next arrives."""
    split = split_of()
    plan = plan_of(split, 12)
    with Prefetcher(split.images, split.labels, plan) as batches:
        for ids, gathered in zip(plan, batches):
            time.sleep(0.02)  # the thread runs ahead as far as it may
            assert torch.equal(gathered.take(ids)[0], split.images[ids])


def test_placement_variable_is_validated(monkeypatch):
    monkeypatch.delenv(PLACEMENT_ENV, raising=False)
    assert placement_choice() == "auto"
    for value in ("auto", "device", "host"):
        monkeypatch.setenv(PLACEMENT_ENV, value)
        assert placement_choice() == value
    monkeypatch.setenv(PLACEMENT_ENV, "pinned")
    with pytest.raises(ResoMapError, match=f"{PLACEMENT_ENV}='pinned' .*auto, device or host"):
        placement_choice()


@pytest.mark.parametrize("choice", ["auto", "host"])
def test_the_cpu_path_is_unchanged(monkeypatch, choice):
    monkeypatch.setenv(PLACEMENT_ENV, choice)
    split = split_of()
    placed = training_memory(split, CPU)
    assert isinstance(placed, TrainingSplit) and placed.copies is None and placed.masks is None
    assert placed.images is split.images and placed.labels is split.labels  # no copy, no pinning
    assert placed.placement.where == "cpu" and (choice in placed.placement.reason) == (choice != "auto")
    ids = torch.tensor([3, 1, 4, 1, 5])
    x, y = batch(placed, ids, CPU)  # outside an epoch (compilation, probes): indexed as it is
    assert torch.equal(x, split.images[ids]) and x.stride() == split.images[ids].stride()
    assert torch.equal(y, split.labels[ids])
    with epoch_batches(placed, [ids]) as sources:  # an epoch: gathered ahead
        (source,) = list(sources)
    assert isinstance(source, GatheredBatch)
    x, y = batch(source, ids, CPU)
    assert torch.equal(x, split.images[ids]) and x.stride() == split.images[ids].stride()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("choice", ["device", "host"])
def test_forced_placement_on_a_gpu_gives_the_same_batches(monkeypatch, choice):
    monkeypatch.setenv(PLACEMENT_ENV, choice)
    device = torch.device("cuda", torch.cuda.current_device())
    split = split_of(count=512, side=32)
    placed = training_memory(split, device)
    assert placed.placement.where == choice
    assert placed.images.device.type == ("cuda" if choice == "device" else "cpu")
    assert not placed.images.is_pinned()  # the split is never pinned whole
    rng = torch.Generator().manual_seed(0)
    ids = [torch.randperm(len(split), generator=rng)[:64] for _ in range(50)]
    got = []
    with epoch_batches(placed, ids) as sources:
        for i, source in zip(ids, sources):
            x, y = batch(source, i, device)
            got.append((x, y, x.float().sum()))  # a kernel reads it on the compute stream
    torch.cuda.synchronize(device)
    for i, (x, y, total) in zip(ids, got):
        assert total.item() == split.images[i].double().sum().item()
        assert x.device.type == "cuda" and torch.equal(x.cpu(), split.images[i]) and torch.equal(y.cpu(), split.labels[i])
