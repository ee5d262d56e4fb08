"""One cell on several processes (torchrun + DistributedDataParallel): who this process is, and
the few collectives training needs.

The launch width is runtime placement, like RESOMAP_DEVICE, never a result param: the global batch
stays train.batch_size and is split across the ranks, every rank draws the same data order and
augmentation (the same seeded generator), and only rank 0 writes.  A single process is simply a
world of one, where every collective is a no-op, so the same training code serves both.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from resomap.core.environment import PROCS_ENV, requested_processes
from resomap.core.errors import ResoMapError


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, items: torch.Tensor) -> torch.Tensor:
        """This rank's share of a batch or split: every world_size-th item (DistributedSampler's rule)."""
        return items[self.rank :: self.world_size]

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return self._all_reduce(tensor, dist.ReduceOp.SUM)

    def min(self, tensor: torch.Tensor) -> torch.Tensor:
        return self._all_reduce(tensor, dist.ReduceOp.MIN)

    def _all_reduce(self, tensor: torch.Tensor, op) -> torch.Tensor:
        """In place across the ranks (a no-op in a world of one); returns the tensor."""
        if self.distributed:
            dist.all_reduce(tensor, op=op)
        return tensor

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """DDP averages gradients across ranks.  Buffers are synced at start but not at every
        forward (a collective per micro-batch would hang once one rank backs off to smaller
        micro-batches); `average_buffers` reconciles the BatchNorm statistics once per epoch."""
        if not self.distributed:
            return model
        device_ids = [device] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)

    def average_buffers(self, model: nn.Module) -> None:
        """Running BatchNorm statistics averaged over the ranks, so every rank validates and
        checkpoints the same model (timm's distribute_bn does the same)."""
        if not self.distributed:
            return
        for buffer in model.buffers():
            if buffer.is_floating_point():
                self.sum(buffer).div_(self.world_size)

    def agreed(self, stop: Callable[[], bool], device: torch.device, every: int = 16) -> Callable[[], bool]:
        """A stop flag every rank sees at the same step (one rank leaving a collective alone would
        hang the others); checked every `every` calls so the loop does not synchronise each step."""
        if not self.distributed:
            return stop
        calls = 0

        def agreed_stop() -> bool:
            nonlocal calls
            calls += 1
            if calls % every:
                return False
            flag = torch.tensor([float(stop())], device=device)
            return bool(self._all_reduce(flag, dist.ReduceOp.MAX).item())

        return agreed_stop


def deferred_gradient_sync(model: nn.Module):
    """Inside it, backward passes accumulate locally: each rank all-reduces once per batch, on its
    last micro-batch, however many micro-batches out-of-memory back-off gave it."""
    ddp = getattr(model, "_orig_mod", model)  # under torch.compile
    return ddp.no_sync() if isinstance(ddp, DistributedDataParallel) else contextlib.nullcontext()


def join(device: torch.device) -> tuple[Ranks, torch.device]:
    """Ranks from torchrun's environment (a world of one without it), and this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Ranks(), device
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        check_process_count(world_size, device)
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), world_size), device


def leave(ranks: Ranks) -> None:
    if ranks.distributed:
        dist.destroy_process_group()


def check_process_count(procs: int, device: torch.device, gpus: int | None = None) -> None:
    """One process per GPU at most (NCCL cannot share one); CPU ranks (gloo) may be any number.
    `gpus`: the visible GPU count (default: torch's)."""
    gpus = torch.cuda.device_count() if gpus is None else gpus
    if device.type == "cuda" and procs > gpus:
        raise ResoMapError(
            f"{PROCS_ENV}={procs} processes but only {gpus} GPU(s) visible: "
            f"launch at most one process per GPU (set {PROCS_ENV} to {gpus} or less)"
        )


def relaunch_under_torchrun(module: str, argv: list[str], device: torch.device) -> None:
    """When RESOMAP_NPROC asks for several processes and this is not yet a torchrun worker,
    replace this process with torchrun running the same stage (same PID: DVC's signals reach it).
    A width the GPUs cannot take stops here, before torchrun prints its own pages."""
    procs = requested_processes()
    if procs == 1 or "TORCHELASTIC_RUN_ID" in os.environ:
        return
    check_process_count(procs, device)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}", "-m", module, *argv]
    sys.stdout.flush()
    os.execv(sys.executable, command)
