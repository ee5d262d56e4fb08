"""Faults of one cell on several processes, on the CPU with gloo: a rank out of memory (planted in
its backward) makes every rank back off together, or fail together with one line; a rank that
stops answering fails the others within the collective timeout instead of stalling them."""

from __future__ import annotations

import dataclasses
import os
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_distributed import TRAIN, train_no_norm_net

from helpers.env import free_ports
from resomap.core.errors import ResoMapError
from resomap.train import distributed
from resomap.train import step as training
from resomap.train.distributed import Ranks

CPU = torch.device("cpu")
DEADLINE_S = 180  # a hang fails the test instead of stalling the suite


def plant_out_of_memory(rank: int, *, once: bool) -> None:
    """Rank `rank`'s backward runs out of memory (raised from the first layer's gradient hook, so
    the later layers' gradients are already done), in its first micro-batch or in every one."""
    real = training.forward_backward

    def raise_out_of_memory(grad):
        raise torch.OutOfMemoryError("CUDA out of memory (injected in the backward)")

    def forward_backward(step, x, y, weight):
        if dist.get_rank() != rank:
            return real(step, x, y, weight)
        if once:
            training.forward_backward = real
        handle = getattr(step.model, "module", step.model).conv.weight.register_hook(raise_out_of_memory)
        try:
            return real(step, x, y, weight)
        finally:
            handle.remove()

    training.forward_backward = forward_backward


def _rank_main(rank: int, world_size: int, port: int, train, fault: str | None, out: str) -> None:
    torch.set_num_threads(1)
    # a short timeout: if the ranks did not agree, the test fails in seconds instead of 30 minutes
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size, timeout=timedelta(seconds=60))
    try:
        if fault is not None:
            plant_out_of_memory(1, once=fault == "once")
        try:
            result = train_no_norm_net(train, Ranks(rank, world_size))
            record = {"state": result.best_state, "micro_batch_size": result.micro_batch_size, "oom_backoffs": result.oom_backoffs}
        except ResoMapError as error:
            record = {"error": str(error)}
        torch.save(record, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def run_two_ranks(tmp_path, name: str, train, fault: str | None) -> list[dict]:
    out = str(tmp_path / name)
    context = mp.start_processes(_rank_main, args=(2, free_ports(1)[0], train, fault, out), nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not context.join(timeout=5):
            assert time.monotonic() < deadline, f"the ranks hung ({name})"
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    return [torch.load(f"{out}.{rank}") for rank in (0, 1)]


def test_out_of_memory_on_one_rank_backs_off_every_rank_together(tmp_path):
    """Rank 1 runs out of memory halfway through its first backward: both ranks halve the
    micro-batch (16 -> 8 images each), replay the batch and finish, with the weights of a run
    planned at micro-batch 8 from the start."""
    backed_off = run_two_ranks(tmp_path, "backed_off", TRAIN, "once")
    for record in backed_off:
        assert (record.get("error"), record["micro_batch_size"], record["oom_backoffs"]) == (None, 8, 1)
    planned = run_two_ranks(tmp_path, "planned", dataclasses.replace(TRAIN, grad_accum_steps=2), None)
    assert planned[0]["micro_batch_size"] == 8
    for name, value in planned[0]["state"].items():
        assert torch.equal(backed_off[0]["state"][name], value), name
        assert torch.equal(backed_off[1]["state"][name], value), name


def test_out_of_memory_at_micro_batch_1_on_one_rank_stops_every_rank_with_one_line(tmp_path):
    records = run_two_ranks(tmp_path, "failed", dataclasses.replace(TRAIN, batch_size=4), "always")
    for record in records:
        assert record == {"error": "out of memory even at micro-batch 1 (rank 1 of 2): use a smaller model or resolution"}


def _join_main(rank: int, port: int, out: str) -> None:
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    distributed.COLLECTIVE_TIMEOUT = timedelta(seconds=3)
    ranks, device = distributed.join(CPU)
    assert (ranks, device, dist.get_backend()) == (Ranks(rank, 2), CPU, "gloo")
    if rank == 1:
        time.sleep(DEADLINE_S)  # alive, but never reaches the collective
    try:
        ranks.sum(torch.ones(1))
        message = "no error"
    except RuntimeError as error:
        message = str(error)
    with open(out, "w") as file:
        file.write(message)
    # leave as the stages do: a gloo group whose collective timed out can abort in its C++
    # teardown ("terminate called without an active exception"), which is not what is tested
    os._exit(0)


def test_a_rank_that_stops_answering_fails_the_others_within_the_timeout(tmp_path):
    """join's process group has a timeout (COLLECTIVE_TIMEOUT, shortened here): rank 0 waiting in an
    all-reduce for a rank that never comes fails instead of waiting torch's default 30 minutes."""
    out, port = tmp_path / "rank0.txt", free_ports(1)[0]
    spawn = mp.get_context("spawn")
    processes = [spawn.Process(target=_join_main, args=(rank, port, str(out))) for rank in (0, 1)]
    for process in processes:
        process.start()
    try:
        processes[0].join(timeout=DEADLINE_S - 30)
        assert not processes[0].is_alive(), "rank 0 still waits for rank 1"
        assert processes[0].exitcode == 0
        assert processes[1].is_alive(), "rank 1 was to stay away, not to leave"
        assert "timed out" in out.read_text().lower()
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
