"""Out-of-memory back-off shared by the stages that choose a batch size: halve and retry, and
say how far it went so the stage can record it (timm's benchmark does the same)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

Result = TypeVar("Result")


def with_oom_backoff(run: Callable[[int], Result], batch_size: int, device: torch.device) -> tuple[Result, int, int]:
    """run(batch); on out-of-memory halve the batch and retry. Returns the result, the batch that
    fitted and how many halvings it took; out of memory at batch 1 is raised."""
    backoffs = 0
    while True:
        try:
            return run(batch_size), batch_size, backoffs
        except torch.OutOfMemoryError:
            if batch_size == 1:
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            batch_size, backoffs = batch_size // 2, backoffs + 1
