"""Where the training arrays live, and the host path's double-buffered gather (played on the CPU)."""

import numpy as np
import pytest
import torch

from resomap.core.errors import ResoMapError
from resomap.data.placement import (
    PLACEMENT_ENV,
    HostBatches,
    TrainingSplit,
    batch,
    placement_choice,
    training_memory,
)
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
    again before its copy's event was waited for shows up as a wrong batch."""

    def __init__(self):
        self.pending: list[tuple[int, tuple, tuple]] = []
        self.events = 0
        self.waited: list[int] = []

    def copy(self, tensors):
        copied = tuple(torch.empty_like(t) for t in tensors)  # the "device" tensors, filled on completion
        self.events += 1
        self.pending.append((self.events, tensors, copied))
        return copied, self.events

    def wait(self, event: int) -> None:
        self.waited.append(event)
        self.complete(event)

    def complete(self, event: int) -> None:
        while self.pending and self.pending[0][0] <= event:  # a stream completes in order
            _, sources, targets = self.pending.pop(0)
            for source, target in zip(sources, targets):
                target.copy_(source)

    def flush(self) -> None:
        if self.pending:
            self.complete(self.pending[-1][0])


def gather_many(batches: HostBatches, copies: DeferredCopies, split: Split, steps: int):
    rng = torch.Generator().manual_seed(1)
    sizes = [16] * (steps // 2) + [5, 24] + [16] * (steps - steps // 2 - 2)  # a partial batch, then a larger one
    ids = [torch.randperm(len(split), generator=rng)[:size] for size in sizes]
    got = [batches(i) for i in ids]
    copies.flush()
    return ids, got


def test_the_double_buffered_gather_gives_each_batch_byte_for_byte():
    split = split_of()
    copies = DeferredCopies()
    batches = HostBatches(split.images, split.labels, copies, pin=False)
    ids, got = gather_many(batches, copies, split, steps=40)
    for i, (x, y) in zip(ids, got):
        expected = split.images[i]
        assert x.dtype == expected.dtype and x.shape == expected.shape and x.stride() == expected.stride()
        assert torch.equal(x, expected) and torch.equal(y, split.labels[i])
    # each buffer is reused only after its previous copy completed: batch n waits for batch n - 2's copy
    assert copies.waited == list(range(1, len(ids) - 1))
    assert batches._buffers[0][0].data_ptr() != batches._buffers[1][0].data_ptr()


def test_a_buffer_overwritten_while_in_flight_would_be_caught():
    """The check above can fail: without the wait, a deferred copy reads the next gather's data."""
    split = split_of()
    copies = DeferredCopies()
    batches = HostBatches(split.images, split.labels, copies, pin=False)
    copies.wait = lambda event: None  # noqa: ARG005 - the gather's wait no longer completes anything
    ids, got = gather_many(batches, copies, split, steps=10)
    assert torch.equal(got[-1][0], split.images[ids[-1]])  # the last gather was not overwritten: copies do complete
    assert not all(torch.equal(x, split.images[i]) for i, (x, _) in zip(ids, got))


def test_buffers_are_reused_not_allocated_per_batch():
    split = split_of()
    copies = DeferredCopies()
    batches = HostBatches(split.images, split.labels, copies, pin=False)
    pointers = []
    for step in range(6):
        batches(torch.arange(step, step + 8))
        pointers.append(batches._buffers[step % 2][0].data_ptr())
    assert pointers[0::2] == [pointers[0]] * 3 and pointers[1::2] == [pointers[1]] * 3


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
    assert isinstance(placed, TrainingSplit) and placed.host_batches is None and placed.masks is None
    assert placed.images is split.images and placed.labels is split.labels  # no copy, no pinning
    assert placed.placement.where == "cpu" and (choice in placed.placement.reason) == (choice != "auto")
    ids = torch.tensor([3, 1, 4, 1, 5])
    x, y = batch(placed, ids, CPU)
    assert torch.equal(x, split.images[ids]) and x.stride() == split.images[ids].stride()
    assert torch.equal(y, split.labels[ids])


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
    for i in ids:
        x, y = batch(placed, i, device)
        got.append((x, y, x.float().sum()))  # a kernel reads it on the compute stream
    torch.cuda.synchronize(device)
    for i, (x, y, total) in zip(ids, got):
        assert total.item() == split.images[i].double().sum().item()
        assert x.device.type == "cuda" and torch.equal(x.cpu(), split.images[i]) and torch.equal(y.cpu(), split.labels[i])
