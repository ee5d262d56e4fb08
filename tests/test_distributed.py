"""One cell on several processes: DDP over gloo on the CPU, as torchrun would run it on GPUs."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from helpers.env import free_ports
from helpers.recipe import RECIPE
from resomap.core.config import TrainParams
from resomap.core.errors import ResoMapError
from resomap.data.prepared import PreparedData, Split
from resomap.train.distributed import Ranks
from resomap.train.fit import fit

CPU = torch.device("cpu")
TRAIN = TrainParams(epochs=2, batch_size=32, lr=0.05, warmup_epochs=0, label_smoothing=0.0)


class NoNormNet(nn.Module):
    """Without BatchNorm a rank's half batch gives exactly its share of the full batch's gradient,
    so two ranks must reproduce the single process up to float summation order."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def random_data() -> PreparedData:
    generator = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        images = torch.randint(0, 256, (n, 3, 12, 12), dtype=torch.uint8, generator=generator)
        return Split(images, torch.randint(0, 4, (n,), generator=generator), None)

    return PreparedData(["a", "b", "c", "d"], 12, {"train": split(128), "val": split(50)})


def train_no_norm_net(train: TrainParams, ranks: Ranks):
    torch.manual_seed(0)
    return fit(NoNormNet(), random_data(), train, seed=0, device=CPU, ranks=ranks)


def _rank_main(rank: int, world_size: int, port: int, train: TrainParams, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        result = train_no_norm_net(train, Ranks(rank, world_size))
        torch.save({"state": result.best_state, "history": [dataclasses.asdict(s) for s in result.history]}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(("grad_accum_steps", "recipe"), [(1, {}), (2, {}), (2, RECIPE)], ids=["plain", "accumulated", "focal-mixup-cutmix-ema"])
def test_two_ranks_reproduce_the_single_process_training(tmp_path, grad_accum_steps, recipe):
    """Same data order, same augmentation draws, gradients averaged over the shards, metrics
    reduced: weights and curves match one process.  With accumulation only the last micro-batch
    all-reduces (no_sync), which must not change the result either.  With MixUp/CutMix each rank's
    images keep their partners from the whole batch, often another rank's."""
    train = dataclasses.replace(TRAIN, **recipe)
    single = train_no_norm_net(train, Ranks())
    out = str(tmp_path / "result")
    mp.spawn(_rank_main, args=(2, free_ports(1)[0], dataclasses.replace(train, grad_accum_steps=grad_accum_steps), out), nprocs=2)
    ranks = [torch.load(f"{out}.{rank}") for rank in (0, 1)]
    for name, value in single.best_state.items():
        torch.testing.assert_close(ranks[0]["state"][name], value, rtol=1e-4, atol=1e-5)
        assert torch.equal(ranks[0]["state"][name], ranks[1]["state"][name]), "ranks diverged"
    for ours, reference in zip(ranks[0]["history"], single.history, strict=True):
        assert ours["val_accuracy"] == pytest.approx(reference.val_accuracy, abs=1 / 50)
        assert ours["val_loss"] == pytest.approx(reference.val_loss, rel=1e-4)
        assert ours["train_loss"] == pytest.approx(reference.train_loss, rel=1e-4)


def test_a_batch_that_does_not_split_over_the_ranks_is_refused():
    with pytest.raises(ResoMapError, match=r"train.batch_size 32 does not split evenly over 3 processes: launch a divisor"):
        train_no_norm_net(TRAIN, Ranks(0, 3))
