"""Usage: python -m stages.finetune MODEL FROM TO SEED

FixRes fine-tuning: the cell MODEL trained at FROM px (seed SEED), tuned finetune.epochs at TO px
with only finetune.layers learning, then scored on the test split at TO px:
models/finetune/MODEL/FROMtoTO/SEED/model.pt, metrics/finetune/... (metrics and DVCLive curves),
plots/finetune/.../predictions.csv (evaluate's columns, the same test images).
"""

from __future__ import annotations

import torch
from dvclive import Live

from resomap.core import io
from resomap.core.config import load_params
from resomap.core.device import configure_backends, pick_device
from resomap.core.grid import FinetuneCell, finetune_metrics_dir, finetune_model_dir, finetune_plots_dir, model_dir, prepared_dir
from resomap.core.stage import run_stage, usage_error
from resomap.data.prepared import load_prepared
from resomap.evaluate.evaluation import evaluate_model, write_predictions
from resomap.finetune.layers import limit_trainable
from resomap.finetune.recipe import finetune_train_params
from resomap.models.heads import head_from
from resomap.models.registry import build_model, check_model
from resomap.train.epoch_log import EpochLog
from resomap.train.fit import fit


def finetune_cell_from_argv(argv: list[str]) -> FinetuneCell:
    if len(argv) != 4 or not all(value.isdigit() for value in argv[1:]):
        raise usage_error(__doc__)
    return FinetuneCell(argv[0], int(argv[1]), int(argv[2]), int(argv[3]))


def main(argv: list[str]) -> None:
    params = load_params()
    cell = finetune_cell_from_argv(argv)
    check_model(cell.model, cell.source)
    check_model(cell.model, cell.target, "finetune.pairs")
    source_weights = io.load_state_dict(model_dir(cell.origin) / "model.pt")  # a missing or corrupt file: one line, before any work
    io.check_writable(finetune_model_dir(cell), finetune_metrics_dir(cell), finetune_plots_dir(cell))
    device = pick_device()
    configure_backends(device)
    torch.manual_seed(cell.seed)
    data = load_prepared(prepared_dir(cell.target), ("train", "val", "test"))
    model = build_model(cell.model, data.num_classes, head_from(params.train))
    model.load_state_dict(source_weights)
    trainable = limit_trainable(model, params.finetune.layers)
    train = finetune_train_params(params.train, params.finetune)
    with Live(dir=str(finetune_metrics_dir(cell)), save_dvc_exp=False, dvcyaml=None, report=None) as live:
        result = fit(model, data, train, seed=cell.seed, device=device, on_epoch=EpochLog(live, train.epochs))
        model.load_state_dict(result.best_state)
        metrics, logits = evaluate_model(model, data, params.evaluate, device)
        best = result.history[result.best_epoch - 1]
        live.summary.update(
            from_resolution=cell.source,
            to_resolution=cell.target,
            layers=params.finetune.layers,
            trainable_parameters=trainable,
            epochs=train.epochs,
            best_epoch=result.best_epoch,
            best_val_accuracy=best.val_accuracy,
            train_seconds=round(sum(s.epoch_seconds for s in result.history), 2),
            device=device.type,
            **metrics,
        )
    io.save_state_dict(finetune_model_dir(cell) / "model.pt", result.best_state)
    write_predictions(finetune_plots_dir(cell) / "predictions.csv", logits, data.splits["test"].labels, data.classes)
    print(f"finetune {cell}: {params.finetune.layers} ({trainable} parameters) for {train.epochs} epochs, "
          f"test accuracy at {cell.target} px {metrics['accuracy']:.4f}")


if __name__ == "__main__":
    run_stage(main)
