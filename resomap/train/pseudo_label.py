"""The pseudo-labelling phase (train.pseudo_label), the ResNet-18 recipe's phase 2: after the main
fit its best model labels the unlabeled pool; images it classifies at or above the threshold join
the train split, with its labels, for a few more epochs at a lower learning rate.

On the built-in data the pool's true labels are known (prepare keeps them aside, never trained
on), so the accuracy of the kept pseudo-labels is measured: how much label noise the phase adds,
per resolution.  Image folders' pools have no labels (-1) and record none."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from resomap.core.config import PseudoLabel, TrainParams
from resomap.core.device import amp_dtype, memory_format
from resomap.core.errors import ResoMapError
from resomap.core.grid import Cell, prepared_dir
from resomap.core.stage import StopSignals
from resomap.data.prepared import PreparedData, Split, load_unlabeled
from resomap.models.inference import predict_logits
from resomap.train.checkpoint import RESUME_DIR, ResumeStore, resume_key
from resomap.train.distributed import Ranks
from resomap.train.epoch_log import EpochLog
from resomap.train.fit import fit
from resomap.train.records import FitResult, KeptEpoch, keep_top
from resomap.train.step import TrainingInterrupted

LABEL_BATCH = 512  # pool images per forward


@dataclass(frozen=True)
class PseudoLabels:
    """The pool's kept images with the model's labels, and what the train metrics record of them."""

    kept: Split
    pool: int
    threshold: float
    kept_label_accuracy: float | None  # None: the pool's labels are unknown (an image folder)

    def summary(self) -> dict:
        return {
            "pool": self.pool,
            "kept": len(self.kept),
            "kept_share": round(len(self.kept) / self.pool, 4) if self.pool else 0.0,
            "threshold": self.threshold,
            "kept_label_accuracy": self.kept_label_accuracy,
        }


def label_pool(model: nn.Module, pool: Split, threshold: float, train: TrainParams, device: torch.device) -> PseudoLabels:
    """Label every pool image with `model`; keep those whose softmax confidence is >= threshold."""
    logits = predict_logits(model, pool.images, batch_size=LABEL_BATCH, device=device,
                            dtype=amp_dtype(train.amp, device), memory_format=memory_format(train.channels_last))
    confidence, predicted = logits.softmax(1).max(1)
    keep = confidence >= threshold
    known = bool((pool.labels >= 0).all())
    accuracy = None
    if known and keep.any():
        accuracy = round(float((predicted[keep] == pool.labels[keep]).float().mean()), 4)
    return PseudoLabels(Split(pool.images[keep], predicted[keep], None), len(pool), threshold, accuracy)


def phase_inputs(train: TrainParams, data: PreparedData, labels: PseudoLabels) -> tuple[TrainParams, PreparedData]:
    """The phase's params and data: pseudo_label.epochs at lr_factor times the learning rate (no
    warm-up, freezing or progressive ramp: the model is trained already), on the train split plus
    the kept pool images."""
    phase: PseudoLabel = train.pseudo_label
    phase_train = dataclasses.replace(
        train, epochs=phase.epochs, lr=train.lr * phase.lr_factor, warmup_epochs=0, freeze_epochs=0,
        progressive=None, pseudo_label=None,
    )
    own = data.splits["train"]
    joined = Split(torch.cat([own.images, labels.kept.images]), torch.cat([own.labels, labels.kept.labels]), None)
    return phase_train, dataclasses.replace(data, splits={**data.splits, "train": joined})


def combined(main: FitResult, phase: FitResult, train: TrainParams) -> FitResult:
    """Both fits as one: the phase's epochs numbered after the main fit's, the best epoch (and the
    top-k) over both by the monitored metric, so the phase is kept only where it helped."""
    offset = len(main.history)
    monitor = train.early_stopping.monitor
    sign = 1.0 if monitor == "val_accuracy" else -1.0
    main_best = main.history[main.best_epoch - 1].monitored(monitor)
    phase_best = phase.history[phase.best_epoch - 1].monitored(monitor)
    phase_wins = sign * phase_best > sign * main_best + train.early_stopping.min_delta
    top = main.top
    for kept in phase.top:
        top = keep_top(top, KeptEpoch(kept.epoch + offset, kept.value, kept.state), train.save_top_k, monitor)
    return dataclasses.replace(
        main,
        best_state=phase.best_state if phase_wins else main.best_state,
        best_epoch=phase.best_epoch + offset if phase_wins else main.best_epoch,
        history=main.history + [dataclasses.replace(stats, epoch=stats.epoch + offset) for stats in phase.history],
        top=top,
        micro_batch_size=phase.micro_batch_size,
        oom_backoffs=main.oom_backoffs + phase.oom_backoffs,
        compile_seconds=None if main.compile_seconds is None else main.compile_seconds + (phase.compile_seconds or 0.0),
    )


def pseudo_label_phase(
    cell: Cell, train: TrainParams, model: nn.Module, data: PreparedData, main: FitResult,
    device: torch.device, ranks: Ranks, log: EpochLog, stop: StopSignals,
) -> tuple[FitResult, dict, ResumeStore]:
    """The whole phase, as the train stage runs it after the main fit: the main fit's best model
    labels the cell's pool, then trains on train + kept for the phase's epochs, resumable like
    the main fit in a store of its own.  Returns both fits as one, the pool's record and the store
    (cleared by the stage once model.pt is written)."""
    model.load_state_dict(main.best_state)
    pool = load_unlabeled(prepared_dir(cell.resolution))
    if pool is None:  # prepared before the pool was asked for: validation makes prepare write one
        raise ResoMapError(f"{prepared_dir(cell.resolution)} has no unlabeled pool for train.pseudo_label: "
                           f"run `dvc repro prepare@{cell.resolution}` with data.images.unlabeled or data.unlabeled_path set")
    labels = label_pool(model, pool, train.pseudo_label.threshold, train, device)
    if ranks.is_main:
        print(f"pseudo-labels: kept {len(labels.kept)} of {labels.pool} pool images at confidence >= {labels.threshold}"
              + (f", {labels.kept_label_accuracy:.1%} of them right" if labels.kept_label_accuracy is not None else ""), flush=True)
    phase_train, phase_data = phase_inputs(train, data, labels)
    store = ResumeStore(cell, resume_key(cell, phase_train, phase_data, device, ranks.world_size),
                        root=RESUME_DIR / "pseudo_label", writes=ranks.is_main)
    phase_log = log.after(len(main.history))
    phase_log.resumed(store.resumed)
    try:
        phase = fit(model, phase_data, phase_train, seed=cell.seed, device=device, on_epoch=phase_log,
                    checkpointer=store, stop_requested=stop, ranks=ranks)
    except TrainingInterrupted as interrupted:  # numbered as the whole fit's epochs
        raise TrainingInterrupted(interrupted.epoch + phase_log.offset, log.epochs) from None
    return combined(main, phase, train), labels.summary(), store
