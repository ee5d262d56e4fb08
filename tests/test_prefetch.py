"""Memory-mapped splits streamed by the prefetch thread: the same weights as in memory, and a
thread that stops when the epoch is left (an exception in the loop or in a gather, Ctrl-C)."""

import dataclasses
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

from resomap.core.config import TrainParams
from resomap.data.placement import training_memory
from resomap.data.prefetch import Prefetcher
from resomap.data.prepared import PreparedData, load_prepared, load_split
from resomap.models.registry import build_model
from resomap.train.fit import fit
from resomap.train.losses import class_counts
from resomap.train.step import make_train_step, train_one_epoch

CPU = torch.device("cpu")
TRAIN = TrainParams(epochs=2, batch_size=24, lr=0.05, warmup_epochs=0)


def in_memory(folder) -> PreparedData:
    mapped = load_prepared(folder, ("train", "val"))
    return dataclasses.replace(mapped, splits={name: load_split(folder / name, in_memory=True) for name in ("train", "val")})


def weights(data: PreparedData, train: TrainParams) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return fit(build_model("tiny_cnn", data.num_classes), data, train, seed=0, device=CPU).best_state


def mapped_files() -> str:
    with open("/proc/self/maps") as maps:
        return maps.read()


def test_splits_are_memory_mapped_and_a_write_never_reaches_the_file(tmp_path, tiny_synthetic):
    folder = tmp_path / "train"
    folder.mkdir()
    for name in ("images.npy", "labels.npy"):
        (folder / name).write_bytes((tiny_synthetic / "train" / name).read_bytes())
    before = np.load(folder / "images.npy")
    split = load_split(folder)
    assert str(folder / "images.npy") in mapped_files()
    split.images[0] += 1  # copy-on-write: this process's page, not the file (nor DVC's cache behind it)
    assert not torch.equal(split.images[0], torch.from_numpy(before[0]).permute(2, 0, 1))
    assert np.array_equal(np.load(folder / "images.npy"), before)
    del split
    in_ram = load_split(folder, in_memory=True)
    assert str(folder / "images.npy") not in mapped_files() and np.array_equal(in_ram.images.permute(0, 2, 3, 1).numpy(), before)


@pytest.mark.parametrize("recipe", [{}, {"mixup_alpha": 0.4, "shuffle": "block", "shuffle_block": 8, "shuffle_window": 32}])
def test_memory_mapped_and_in_memory_training_give_bit_identical_weights(tiny_synthetic, recipe):
    train = dataclasses.replace(TRAIN, **recipe)
    mapped, loaded = weights(load_prepared(tiny_synthetic, ("train", "val")), train), weights(in_memory(tiny_synthetic), train)
    assert mapped.keys() == loaded.keys() and all(torch.equal(mapped[k], loaded[k]) for k in mapped)


def test_gathering_ahead_gives_the_weights_of_gathering_in_the_loop(tiny_synthetic):
    """The prefetch thread (a TrainingSplit) against each batch indexed from the split in the loop."""
    data = load_prepared(tiny_synthetic, ("train", "val"))
    split = data.splits["train"]
    train = dataclasses.replace(TRAIN, cutmix_alpha=1.0)
    states = []
    for source in (training_memory(split, CPU), split):
        torch.manual_seed(0)
        model = build_model("tiny_cnn", data.num_classes)
        step = make_train_step(model, train, CPU, len(split), class_counts=class_counts(split.labels, data.num_classes))
        generator = torch.Generator().manual_seed(0)
        losses = [train_one_epoch(step, source, generator, epoch)[0] for epoch in (1, 2)]
        states.append((losses, model.state_dict()))
    (losses_a, a), (losses_b, b) = states
    assert losses_a == losses_b and all(torch.equal(a[k], b[k]) for k in a)


def idle_prefetchers() -> bool:
    return not any(thread.name == "resomap-prefetch" for thread in threading.enumerate())


def plan(count: int, steps: int) -> list[torch.Tensor]:
    return [torch.arange(i, i + 4) % count for i in range(steps)]


def test_an_exception_in_the_loop_stops_the_thread(tiny_synthetic):
    split = load_split(tiny_synthetic / "train")
    with pytest.raises(RuntimeError, match="step failed"), Prefetcher(split.images, split.labels, plan(len(split), 50)) as batches:
        next(batches)
        raise RuntimeError("step failed")
    assert not batches.running and idle_prefetchers()


def test_an_exception_in_a_gather_reaches_the_loop_and_ends_the_thread(tiny_synthetic):
    split = load_split(tiny_synthetic / "train")
    bad = [torch.arange(4), torch.tensor([0, len(split) + 7])]  # the second batch names an image the split lacks
    with Prefetcher(split.images, split.labels, bad) as batches:
        next(batches)
        with pytest.raises(IndexError, match="out of range"):
            next(batches)
        assert not batches.running
    assert idle_prefetchers()


class SlowCopies:
    """Copies that complete late: the thread, waiting to refill a buffer, keeps the loop waiting."""

    def copy(self, tensors):
        return tuple(t.clone() for t in tensors), "event"

    def wait(self, event) -> None:  # noqa: ARG002
        time.sleep(0.5)


def test_ctrl_c_while_the_loop_waits_for_a_batch_stops_the_thread(tiny_synthetic):
    """A real SIGINT: Python raises KeyboardInterrupt in the loop, blocked on the next batch. The
    handler is set here: a process started in the background (nohup, `cmd &`) inherits SIGINT
    ignored, and Python then installs none."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    split = load_split(tiny_synthetic / "train")
    prefetcher = Prefetcher(split.images, split.labels, plan(len(split), 40), SlowCopies())  # 20 s if never stopped
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt), prefetcher as batches:
            for _ in batches:
                pass
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - started < 5  # the thread was stopped, not run through 40 batches
    assert not prefetcher.running and idle_prefetchers()


def test_each_batch_is_read_ahead_once_before_its_gather(tiny_synthetic):
    split = load_split(tiny_synthetic / "train")
    batches = plan(len(split), 6)
    advised: list[torch.Tensor] = []

    def readahead(ids):
        split.rows_file.will_need(ids)  # the real advice, on the real file
        advised.append(ids)

    with Prefetcher(split.images, split.labels, batches, readahead=readahead) as gathered:
        for ids, _ in zip(batches, gathered):
            assert any(a is ids for a in advised)  # advised before it was gathered
    assert [id(a) for a in advised] == [id(b) for b in batches]
