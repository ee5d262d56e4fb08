"""Host synchronisations in the bf16 training epoch: `torch.cuda.set_sync_debug_mode("warn")`
around the train stage's epoch loop (resomap.train.step.train_one_epoch), every warning counted.

The epoch reads its loss and accuracy once at its end, by design; what must not happen is a
synchronisation per step. So two epochs run under the debug mode, K steps and 2K steps: the
warnings that grow with the steps are per-step syncs (expected 0), the rest are the end-of-epoch
reads."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

from benchmarks.gpu_check.common import check_main, cuda_device, prepare, require, result, train_params

MODEL, RESOLUTION, STEPS = "resnet18", 64, 4


def per_step_syncs(short: int, long: int, extra_steps: int) -> float:
    """Synchronisations per step from two epochs' warning counts that differ by `extra_steps` steps."""
    return (long - short) / extra_steps


def epoch_syncs(step, split, count: int, generator, epoch: int) -> tuple[int, Counter]:
    import torch

    from resomap.data.prepared import Split
    from resomap.train.step import train_one_epoch

    part = Split(split.images[:count], split.labels[:count], None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train_one_epoch(step, part, generator, epoch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    return len(syncs), Counter(f"{Path(w.filename).name}:{w.lineno}" for w in syncs)


def run(work: Path) -> dict:
    import torch

    from resomap.core.device import memory_format
    from resomap.data.placement import training_memory
    from resomap.data.prepared import load_split
    from resomap.models.registry import build_model
    from resomap.train.step import make_train_step, train_one_epoch

    device = cuda_device()
    train = train_params(epochs=3)
    folder = prepare(work, RESOLUTION, train=2 * STEPS * train.batch_size)
    torch.manual_seed(0)
    model = build_model(MODEL, 10).to(device, memory_format=memory_format(train.channels_last))
    split = training_memory(load_split(folder / "train"), device)
    step = make_train_step(model, train, device, len(split))
    require(step.dtype == torch.bfloat16, f"train.amp={train.amp} gave autocast dtype {step.dtype}, not bfloat16")
    generator = torch.Generator().manual_seed(0)
    train_one_epoch(step, split, generator, epoch=1)  # warm-up: cudnn autotuning, allocator growth
    short, _ = epoch_syncs(step, split, STEPS * train.batch_size, generator, 2)
    long, where = epoch_syncs(step, split, 2 * STEPS * train.batch_size, generator, 3)
    per_step = per_step_syncs(short, long, STEPS)
    figure = f"{per_step:g} syncs per step; {long} in a {2 * STEPS}-step epoch (its end-of-epoch reads), {short} in a {STEPS}-step one"
    details = dict(model=MODEL, resolution=RESOLUTION, batch_size=train.batch_size, dtype=str(step.dtype),
                   syncs_short_epoch=short, syncs_long_epoch=long, syncs_per_step=per_step, where=dict(where))
    return result(per_step == 0, figure if per_step == 0 else f"{figure}, at {dict(where)}", **details)


if __name__ == "__main__":
    check_main(run, __doc__)
