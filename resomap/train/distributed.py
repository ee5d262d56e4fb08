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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from resomap.core.environment import PROCS_ENV, requested_processes
from resomap.core.errors import ResoMapError

# How long a rank waits in a collective for the others before it fails (torch's defaults: 10 min
# for NCCL, 30 for gloo).  Longer than any legitimate skew between ranks: rank 0 writing a
# checkpoint or the DVCLive files, the ranks compiling at different speeds.
COLLECTIVE_TIMEOUT = timedelta(minutes=5)
BUCKET_BYTES = 25 * 2**20  # gradients all-reduced per flat bucket (DDP's default bucket size)


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run.  `host_group`: a gloo group over the same ranks for the
    control flags (out of memory, stop), exchanged between the hosts without waiting for the GPU;
    None where the default group is gloo already (CPU ranks)."""

    rank: int = 0
    world_size: int = 1
    host_group: object = field(default=None, compare=False, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, items: torch.Tensor) -> torch.Tensor:
        """This rank's share of a batch or split: every world_size-th item (DistributedSampler's rule),
        contiguous: a strided view would reach the GPU through an unpinned temporary copy, which
        waits for the GPU (in a world of one the items themselves, no copy)."""
        return items[self.rank :: self.world_size].contiguous()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return self._all_reduce(tensor, dist.ReduceOp.SUM)

    def min(self, tensor: torch.Tensor) -> torch.Tensor:
        return self._all_reduce(tensor, dist.ReduceOp.MIN)

    def _all_reduce(self, tensor: torch.Tensor, op) -> torch.Tensor:
        """In place across the ranks (a no-op in a world of one); returns the tensor."""
        if self.distributed:
            dist.all_reduce(tensor, op=op)
        return tensor

    def flagged(self, flag: bool) -> list[int]:
        """The ranks whose `flag` is true, as every rank sees it (one collective on the host, over
        the gloo group: no wait for the GPU's queue)."""
        if not self.distributed:
            return [self.rank] if flag else []
        flags = torch.zeros(self.world_size)
        flags[self.rank] = float(flag)
        dist.all_reduce(flags, op=dist.ReduceOp.SUM, group=self.host_group)
        return [rank for rank, value in enumerate(flags.tolist()) if value]

    def average_gradients(self, model: nn.Module) -> None:
        """Gradients averaged over the ranks, in flat buckets: the one gradient sync of a batch,
        made after every rank's micro-batches have finished (see `deferred_gradient_sync`).  A
        parameter without a gradient gets zeros, so every rank reduces the same tensors."""
        if not self.distributed:
            return
        grads = []
        for parameter in model.parameters():
            if parameter.requires_grad:
                if parameter.grad is None:
                    parameter.grad = torch.zeros_like(parameter)
                grads.append(parameter.grad)
        for bucket in _buckets(grads, BUCKET_BYTES):
            flat = torch.cat([grad.reshape(-1) for grad in bucket])
            self.sum(flat).div_(self.world_size)
            for grad, synced in zip(bucket, flat.split([grad.numel() for grad in bucket]), strict=True):
                grad.copy_(synced.view(grad.shape))

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """DDP broadcasts rank 0's weights and buffers at the start; the training step averages
        the gradients itself (`average_gradients`, once per batch).  Buffers are not synced at
        every forward (a collective per micro-batch would hang once the ranks' micro-batch
        counts differ); `average_buffers` reconciles the BatchNorm statistics once per epoch."""
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

    def agreed(self, stop: Callable[[], bool], every: int = 16) -> Callable[[], bool]:
        """A stop flag every rank sees at the same step (one rank leaving a collective alone would
        hang the others); exchanged every `every` calls, on the host."""
        if not self.distributed:
            return stop
        calls = 0

        def agreed_stop() -> bool:
            nonlocal calls
            calls += 1
            return not calls % every and bool(self.flagged(stop()))

        return agreed_stop


def _buckets(tensors: list[torch.Tensor], max_bytes: int) -> Iterator[list[torch.Tensor]]:
    """Consecutive runs of tensors of one dtype, each at most max_bytes (or a single larger tensor)."""
    bucket: list[torch.Tensor] = []
    size = 0
    for tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and (size + nbytes > max_bytes or tensor.dtype != bucket[0].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(tensor)
        size += nbytes
    if bucket:
        yield bucket


def deferred_gradient_sync(model: nn.Module):
    """Inside it, DDP's backward hooks do not all-reduce: gradients accumulate locally, and the
    step syncs them once every rank has finished its micro-batches (`Ranks.average_gradients`).
    A synced backward that runs out of memory would leave DDP's reducer half done and the other
    ranks waiting in its all-reduce; this way a rank's out-of-memory is agreed on and every rank
    backs off together."""
    ddp = getattr(model, "_orig_mod", model)  # under torch.compile
    return ddp.no_sync() if isinstance(ddp, DistributedDataParallel) else contextlib.nullcontext()


def join(device: torch.device) -> tuple[Ranks, torch.device]:
    """Ranks from torchrun's environment (a world of one without it), and this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Ranks(), device
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type != "cuda":
        dist.init_process_group("gloo", timeout=COLLECTIVE_TIMEOUT)
        return Ranks(dist.get_rank(), world_size), device
    check_process_count(world_size, device)
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    # device_id: the NCCL communicator forms now, on this rank's GPU, so a broken rank fails here
    dist.init_process_group("nccl", timeout=COLLECTIVE_TIMEOUT, device_id=device)
    host_group = dist.new_group(backend="gloo", timeout=COLLECTIVE_TIMEOUT)
    return Ranks(dist.get_rank(), world_size, host_group), device


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
