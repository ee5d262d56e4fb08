"""One cell on several processes: DDP over gloo on the CPU, as torchrun would run it on GPUs."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from torch import nn

from conftest import REPO, free_ports, stage_env
from resomap.config import DataParams, SplitSizes, TrainParams
from resomap.data.prepare import prepare_resolution
from resomap.data.prepared import PreparedData, Split
from resomap.distributed import Ranks
from resomap.errors import ResoMapError
from resomap.training import fit

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


@pytest.mark.parametrize("grad_accum_steps", [1, 2])
def test_two_ranks_reproduce_the_single_process_training(tmp_path, grad_accum_steps):
    """Same data order, same augmentation draws, gradients averaged over the shards, metrics
    reduced: weights and curves match one process.  With accumulation only the last micro-batch
    all-reduces (no_sync), which must not change the result either."""
    single = train_no_norm_net(TRAIN, Ranks())
    out = str(tmp_path / "result")
    mp.spawn(_rank_main, args=(2, free_ports(1)[0], dataclasses.replace(TRAIN, grad_accum_steps=grad_accum_steps), out), nprocs=2)
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


def run_train_stage(folder: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stages.train", "simple_cnn", "16", "0"], cwd=folder, env=stage_env(**env), capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def study_folder(tmp_path_factory) -> Path:
    """params.yaml and prepared 16 px data, as the train stage finds them under `dvc repro`."""
    folder = tmp_path_factory.mktemp("cell")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"].update(epochs=4, batch_size=32, warmup_epochs=0)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    prepare_resolution(DataParams(size=SplitSizes(train=320, val=100, test=10)), 16, folder / "data/prepared/16")
    return folder


def outputs(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and "data" not in p.parts}


@pytest.mark.slow
def test_train_stage_under_torchrun_writes_once_and_stays_close_to_one_process(study_folder, tmp_path):
    """RESOMAP_NPROC=2 relaunches the stage under torchrun (gloo on the CPU): rank 0 alone writes
    the same files as a single process, with metrics close to it (BatchNorm sees half batches)."""
    single, double = tmp_path / "single", tmp_path / "double"
    for folder in (single, double):
        shutil.copytree(study_folder, folder)
    done = run_train_stage(single)
    assert done.returncode == 0, done.stderr
    done = run_train_stage(double, RESOMAP_NPROC="2")
    assert done.returncode == 0, done.stderr
    assert "x 2 processes" in done.stdout and done.stdout.count("train simple_cnn-16-0: best epoch") == 1
    assert outputs(double) == outputs(single)
    metrics = {name: json.loads((folder / "metrics/train/simple_cnn/16/0/metrics.json").read_text()) for name, folder in
               (("single", single), ("double", double))}
    assert metrics["single"]["processes"] == 1 and metrics["double"]["processes"] == 2
    assert metrics["double"]["micro_batch_size"] == 16
    assert metrics["double"]["train"]["loss"] == pytest.approx(metrics["single"]["train"]["loss"], abs=0.1)
    assert metrics["double"]["val"]["accuracy"] == pytest.approx(metrics["single"]["val"]["accuracy"], abs=0.15)
    assert torch.load(double / "models/simple_cnn/16/0/model.pt").keys() == torch.load(single / "models/simple_cnn/16/0/model.pt").keys()


def test_a_bad_process_count_is_one_line(tmp_path):
    """Refused before params.yaml or the data are read: an empty folder will do."""
    done = run_train_stage(tmp_path, RESOMAP_NPROC="two")
    assert done.returncode == 2
    assert done.stderr.strip() == "error: RESOMAP_NPROC='two' is not a process count: set it to a positive integer, e.g. the GPU count"
