"""What each finished epoch leaves behind: a row of DVCLive curves (the train stage's plots) and
a line in the stage's log."""

from __future__ import annotations

import dataclasses

from dvclive import Live

from resomap.train.records import EpochStats


def log_epoch(live: Live, stats: EpochStats, epochs: int, echo: bool = True) -> None:
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        live.log_metric(key.replace("_", "/", 1), getattr(stats, key))
    for key in ("lr", "resolution", "epoch_seconds", "images_per_s"):
        live.log_metric(key, getattr(stats, key))
    live.next_step()
    if not echo:
        return
    print(
        f"epoch {stats.epoch}/{epochs} train_loss {stats.train_loss:.4f} train_acc {stats.train_accuracy:.4f} "
        f"val_loss {stats.val_loss:.4f} val_acc {stats.val_accuracy:.4f} lr {stats.lr:.4g} "
        f"{stats.epoch_seconds:.1f}s {stats.images_per_s:.0f} img/s",
        flush=True,
    )


class EpochLog:
    """fit's on_epoch: each epoch's row to DVCLive (rank 0 only: `live` is None elsewhere) and a
    line to the log, numbered after the `offset` epochs of the phases before."""

    def __init__(self, live: Live | None, epochs: int, offset: int = 0):
        self.live, self.epochs, self.offset = live, epochs, offset

    def __call__(self, stats: EpochStats, echo: bool = True) -> None:
        if self.live is not None:
            log_epoch(self.live, dataclasses.replace(stats, epoch=stats.epoch + self.offset), self.epochs, echo)

    def after(self, epochs: int) -> EpochLog:
        """The log of a phase that follows `epochs` epochs."""
        return EpochLog(self.live, self.epochs, self.offset + epochs)

    def resumed(self, state: dict | None) -> None:
        """The rows of the epochs a resumed state has finished, without log lines."""
        for row in state["history"] if state else []:
            self(EpochStats(**row), echo=False)
