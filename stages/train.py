"""Usage: python -m stages.train MODEL RESOLUTION SEED

Train one cell: best weights to models/MODEL/RESOLUTION/SEED/, DVCLive curves to metrics/train/....
Killed or interrupted, it resumes from its last finished epoch on the next run (resomap/train/checkpoint.py).
With RESOMAP_NPROC=N it relaunches itself under torchrun on N processes (DDP; rank 0 writes).
"""

from __future__ import annotations

import contextlib

import torch
from dvclive import Live

from resomap.core import io
from resomap.core.config import Params, TrainParams, load_params
from resomap.core.device import configure_backends, numerics, pick_device
from resomap.core.errors import Interrupted
from resomap.core.grid import Cell, model_dir, prepared_dir, train_metrics_dir
from resomap.core.stage import StopSignals, cell_from_argv, run_stage
from resomap.data.prepared import PreparedData, load_prepared
from resomap.models.heads import head_from
from resomap.models.registry import check_model, initial_model
from resomap.train import lr_range_test
from resomap.train.checkpoint import ResumeStore, resume_key
from resomap.train.distributed import Ranks, join, leave, relaunch_under_torchrun
from resomap.train.epoch_log import EpochLog
from resomap.train.fit import fit
from resomap.train.losses import class_counts, class_weights_for
from resomap.train.pseudo_label import pseudo_label_phase
from resomap.train.records import kept_file_name
from resomap.train.step import TrainingInterrupted


def class_weights_by_name(train: TrainParams, data: PreparedData) -> dict[str, float] | None:
    """The loss's weight per class (train.class_weights), by class name; None when all weigh 1."""
    weights = class_weights_for(train, class_counts(data.splits["train"].labels, data.num_classes))
    return dict(zip(data.classes, weights.tolist(), strict=True)) if weights is not None else None


def main(argv: list[str]) -> None:
    params = load_params()
    cell = cell_from_argv(argv, __doc__)
    check_model(cell.model, cell.resolution)
    io.check_writable(model_dir(cell), train_metrics_dir(cell))
    device = pick_device()
    relaunch_under_torchrun("stages.train", argv, device)
    ranks, device = join(device)
    try:
        train_cell(cell, params, ranks, device)
    finally:
        leave(ranks)


def train_cell(cell: Cell, params: Params, ranks: Ranks, device: torch.device) -> None:
    configure_backends(device, compiling=params.train.compile)
    torch.manual_seed(cell.seed)
    data = load_prepared(prepared_dir(cell.resolution), ("train", "val"))
    model = initial_model(cell.model, data.num_classes, head_from(params.train),
                          pretrained=params.train.pretrained, init_from=params.train.init_from)
    params, lr_test = lr_range_test.with_lr_found(cell, params, model, data, ranks, device)
    # every rank resumes from rank 0's state; only rank 0 writes
    store = ResumeStore(cell, resume_key(cell, params.train, data, device, ranks.world_size), writes=ranks.is_main)
    state = store.resumed
    if state is not None and ranks.is_main:
        print(f"resumed train {cell} from epoch {state['epoch']}/{params.train.epochs}", flush=True)
    epochs = params.train.epochs + (params.train.pseudo_label.epochs if params.train.pseudo_label else 0)
    with contextlib.ExitStack() as stack:
        stop = stack.enter_context(StopSignals())
        log = EpochLog(None, epochs)
        if ranks.is_main:
            log = EpochLog(stack.enter_context(Live(dir=str(train_metrics_dir(cell)), save_dvc_exp=False, dvcyaml=None, report=None)), epochs)
            # DVC removed the curves with the other outputs: rewrite the finished epochs' rows from the state
            log.resumed(state)
        try:
            result = fit(model, data, params.train, seed=cell.seed, device=device, on_epoch=log,
                         checkpointer=store, stop_requested=stop, ranks=ranks)
            pseudo, stores = None, [store]
            if params.train.pseudo_label is not None:
                result, pseudo, phase_store = pseudo_label_phase(cell, params.train, model, data, result, device, ranks, log, stop)
                stores.append(phase_store)
        except TrainingInterrupted as interrupted:
            raise Interrupted(
                f"train {cell} stopped by {stop.name} during epoch {interrupted.epoch}/{epochs}; "
                f"finished epochs are saved in {store.path.parent}: run `dvc repro` again to resume",
                stop.received,
            ) from None
        live = log.live
        best = result.history[result.best_epoch - 1]
        if not ranks.is_main:
            return
        live.summary.update(
            best_epoch=result.best_epoch,
            best_val_accuracy=best.val_accuracy,
            best_val_loss=best.val_loss,
            epochs_run=len(result.history),
            stopped_early=result.stopped_early,
            train_seconds=round(sum(s.epoch_seconds for s in result.history), 2),
            device=device.type,
            processes=ranks.world_size,
            micro_batch_size=result.micro_batch_size,
            oom_backoffs=result.oom_backoffs,
            compile_seconds=result.compile_seconds,
            data_placement=result.data_placement,
            data_placement_reason=result.data_placement_reason,
            class_weights=class_weights_by_name(params.train, data),
            ema=params.train.ema_decay is not None,
            ema_decay=params.train.ema_decay,
            pseudo_label=pseudo,
            **lr_range_test.summary(lr_test),
            **numerics(device),
        )
    io.save_state_dict(model_dir(cell) / "model.pt", result.best_state)
    for kept in result.top:  # train.save_top_k > 1; evaluate and explain read model.pt, the best
        io.save_state_dict(model_dir(cell) / kept_file_name(kept, params.train.early_stopping.monitor), kept.state)
    for finished in stores:
        finished.clear()
    print(
        f"train {cell}: best epoch {result.best_epoch}/{len(result.history)}, "
        f"val_accuracy {best.val_accuracy:.4f} on {device.type}" + (f" x {ranks.world_size} processes" if ranks.distributed else "")
    )


if __name__ == "__main__":
    run_stage(main)
