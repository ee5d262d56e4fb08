"""Usage: python -m stages.train MODEL RESOLUTION SEED

Train one cell: best weights to models/MODEL/RESOLUTION/SEED/, DVCLive curves to metrics/train/....
"""

import torch
from dvclive import Live

from resomap import io
from resomap.config import load_params
from resomap.data.prepared import load_prepared
from resomap.device import configure_backends, pick_device
from resomap.models import build_model
from resomap.paths import model_dir, prepared_dir, train_metrics_dir
from resomap.stage import cell_from_argv, run_stage
from resomap.training import EpochStats, fit


def log_epoch(live: Live, stats: EpochStats, epochs: int) -> None:
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        live.log_metric(key.replace("_", "/", 1), getattr(stats, key))
    for key in ("lr", "epoch_seconds", "images_per_s"):
        live.log_metric(key, getattr(stats, key))
    live.next_step()
    print(
        f"epoch {stats.epoch}/{epochs} train_loss {stats.train_loss:.4f} train_acc {stats.train_accuracy:.4f} "
        f"val_loss {stats.val_loss:.4f} val_acc {stats.val_accuracy:.4f} lr {stats.lr:.4g} "
        f"{stats.epoch_seconds:.1f}s {stats.images_per_s:.0f} img/s",
        flush=True,
    )


def main(argv: list[str]) -> None:
    cell = cell_from_argv(argv, __doc__.splitlines()[0])
    params = load_params()
    device = pick_device()
    configure_backends(device)
    torch.manual_seed(cell.seed)
    data = load_prepared(prepared_dir(cell.resolution), ("train", "val"))
    model = build_model(cell.model, data.num_classes)
    with Live(dir=str(train_metrics_dir(cell)), save_dvc_exp=False, dvcyaml=None, report=None) as live:
        result = fit(
            model, data, params.train, seed=cell.seed, device=device,
            on_epoch=lambda stats: log_epoch(live, stats, params.train.epochs),
        )
        best = result.history[result.best_epoch - 1]
        live.summary.update(
            best_epoch=result.best_epoch,
            best_val_accuracy=best.val_accuracy,
            best_val_loss=best.val_loss,
            epochs_run=len(result.history),
            stopped_early=result.stopped_early,
            train_seconds=round(sum(s.epoch_seconds for s in result.history), 2),
            device=device.type,
        )
    io.save_state_dict(model_dir(cell) / "model.pt", result.best_state)
    print(
        f"train {cell}: best epoch {result.best_epoch}/{len(result.history)}, "
        f"val_accuracy {best.val_accuracy:.4f} on {device.type}"
    )


if __name__ == "__main__":
    run_stage(main)
