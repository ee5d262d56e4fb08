"""train.lr: auto (resomap/train/lr_range_test.py): the range test on a problem whose stable
learning rates are known, its isolation from the real run, and its one-line error."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from helpers.env import free_ports
from resomap.core.config import LRRange, TrainParams
from resomap.core.errors import ResoMapError
from resomap.data.prepared import PreparedData, Split, load_prepared
from resomap.models.heads import Head
from resomap.models.registry import initial_model
from resomap.train.distributed import Ranks
from resomap.train.lr_range_test import CURVE_FIELDS, find_lr, write_curve

CPU = torch.device("cpu")
PLAIN = dataclasses.replace(TrainParams().augment, hflip=False, crop_padding=0.0)
# plain SGD on the bowl: no momentum or weight decay to move the stability limit off 2 / curvature
SGD = TrainParams(batch_size=16, momentum=0.0, weight_decay=0.0, label_smoothing=0.0, amp="off", augment=PLAIN)


class Bowl(nn.Module):
    """A quadratic through the real loss: the class-0 cross-entropy of logits (0, z) with
    z = q + log(1 - exp(-q)) is exactly q = 1 + curvature / 2 * |w - t|^2, t an image's first four
    (normalised) pixels.  The Hessian is curvature * I, so SGD converges for lr below
    2 / curvature and diverges above it; the images' spread keeps the steps noisy, as real ones are."""

    def __init__(self, curvature: float):
        super().__init__()
        self.curvature = curvature
        self.w = nn.Parameter(torch.full((4,), 3.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = 1 + self.curvature / 2 * ((self.w - x.flatten(1)[:, :4]) ** 2).sum(1)
        z = q + torch.log1p(-torch.exp(-q))
        return torch.stack([torch.zeros_like(z), z], 1)


def bowl_data(images: int = 256) -> PreparedData:
    pixels = torch.randint(0, 256, (images, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    split = Split(pixels, torch.zeros(images, dtype=torch.long), None)
    return PreparedData(["a", "b"], 4, {"train": split, "val": split})


def bowl_test(curvature: float, train: TrainParams = SGD, ranks: Ranks = Ranks()):
    return find_lr(Bowl(curvature), bowl_data(), train, seed=0, device=CPU, ranks=ranks)


@pytest.mark.parametrize("curvature", [1.0, 10.0, 100.0])
def test_the_lr_found_lies_in_the_stable_region_of_a_quadratic(curvature):
    """SGD on the bowl is stable below 2 / curvature and fastest at 1 / curvature; the lr found is
    within a decade below the fastest (measured: 0.29 to 0.33 / curvature)."""
    result = bowl_test(curvature)
    assert 0.1 / curvature < result.lr_found < 1 / curvature
    assert result.rule == "lr_min"
    lowest = min(result.rows, key=lambda row: row["smoothed_loss"])
    assert result.lr_found == lowest["lr"] / 10
    assert len(result.rows) < SGD.lr_range.steps, "the loss blew up past 2 / curvature: the test stopped early"
    assert result.rows[-1]["smoothed_loss"] > 4 * lowest["smoothed_loss"]


def test_the_ramp_is_exponential_from_start_to_end_and_loops_over_the_data():
    """16 batches a pass and 100 steps, all stable (lr at most 0.5 / curvature): every step is run."""
    result = bowl_test(1.0, dataclasses.replace(SGD, lr_range=LRRange(1e-4, 0.5, 100)))
    lrs = [row["lr"] for row in result.rows]
    assert len(lrs) == 100 and lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(0.5)
    assert lrs[50] / lrs[49] == pytest.approx(lrs[1] / lrs[0])
    assert result.rows[0]["smoothed_loss"] == result.rows[0]["loss"]  # bias-corrected from the first step


def test_two_runs_are_bit_identical_on_cpu():
    assert bowl_test(10.0) == bowl_test(10.0)


def test_the_model_and_the_global_random_state_are_left_as_they_were(tiny_synthetic):
    """tiny_cnn has BatchNorm, whose running statistics must not move either; the MLP head's
    dropout draws from torch's global generator, which must be where it was."""
    data = load_prepared(tiny_synthetic, ("train", "val"))
    torch.manual_seed(0)
    model = initial_model("tiny_cnn", data.num_classes, Head("mlp", 32, 0.5))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    rng = torch.random.get_rng_state()
    assert 0 < find_lr(model, data, TrainParams(batch_size=32), seed=0, device=CPU).lr_found < 1
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert torch.equal(torch.random.get_rng_state(), rng)


def test_a_loss_that_rises_from_the_start_stops_with_one_line():
    """The ramp starts at 10 / curvature, five times past the stability limit."""
    diverging = dataclasses.replace(SGD, lr_range=LRRange(1.0, 100.0, 100))
    with pytest.raises(ResoMapError) as error:
        bowl_test(10.0, diverging)
    message = str(error.value)
    assert "\n" not in message
    assert message == ("train.lr: auto: the range test's loss never fell (it rose from lr 1): "
                       "lower train.lr_range.start, or set train.lr to a number")


def test_the_curve_file_without_a_test_is_its_header(tmp_path):
    write_curve(tmp_path / "curve.csv", [])
    assert (tmp_path / "curve.csv").read_text() == ",".join(CURVE_FIELDS) + "\n"


def _rank_main(rank: int, world_size: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        torch.save(bowl_test(10.0, ranks=Ranks(rank, world_size)), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_every_rank_finds_the_same_lr_as_one_process(tmp_path):
    """Each rank trains on its half of every batch; the summed loss gives every rank the same
    curve (the single process's up to float summation order) and so the same lr."""
    out = str(tmp_path / "result")
    mp.spawn(_rank_main, args=(2, free_ports(1)[0], out), nprocs=2)
    first, second = (torch.load(f"{out}.{rank}", weights_only=False) for rank in (0, 1))
    assert first == second
    single = bowl_test(10.0)
    assert first.lr_found == single.lr_found
    assert all(math.isclose(a["loss"], b["loss"], rel_tol=1e-5) for a, b in zip(first.rows, single.rows, strict=True))
