"""Usage: python -m benchmarks.recipe_table [--tiny] [--out benchmarks/results/recipe_table.json]

Does the resolution effect survive a strong training recipe?  In a fresh git + DVC copy of the
project (its params.yaml: the default study, on the built-in data) it runs one `dvc exp run` per
recipe, with the `-S` lines README shows, on the models that train from scratch in the default
study (tiny_cnn, simple_cnn) at every default resolution, and records each cell's test accuracy,
the gap between the smallest and largest resolution, and what the recipe itself found (the LR
range test's rate, the pseudo-labels kept and how many were right).

The built-in data's models are custom CNNs, which have no ImageNet weights: the ResNet-18 recipe
runs here without `train.pretrained: imagenet` (everything else as README's line).  --tiny runs
the tests' tiny study instead (a smoke test; its figures mean little).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from benchmarks.experiments import exp_run, experiment_args, fresh_study
from benchmarks.stage_overhead import conditions
from resomap.core import io

MODELS = ["tiny_cnn", "simple_cnn"]
POOL = "data.images.unlabeled=1500"  # the pseudo-labelling pool, as large as the train split
RECIPES = {  # README's lines (docs/recipes.md), the study's grid cut to MODELS
    "from scratch": [],
    "ImageNet plan": [
        "train.scheduler=onecycle", "train.warmup_epochs=0", "train.lr=auto",
        "train.progressive={start_resolution:16,end_epoch:8}", "train.augment.policy=randaugment",
        "train.mixup_alpha=0.2", "train.cutmix_alpha=1.0", "train.ema_decay=0.99",
    ],
    "ResNet-18 recipe": [
        "train.head=mlp", "train.loss=focal", "train.class_weights=balanced", "train.label_smoothing=0.1",
        "train.augment.policy=randaugment", "train.augment.random_erasing=0.25", "train.lr=auto",
        "train.pseudo_label={threshold:0.9,epochs:3,lr_factor:0.1}",
    ],
}


def cell_figures(repo: Path, model: str, resolution: int) -> dict:
    evaluate = io.read_json(repo / f"metrics/evaluate/{model}/{resolution}/0/metrics.json")
    train = io.read_json(repo / f"metrics/train/{model}/{resolution}/0/metrics.json")
    pseudo = train.get("pseudo_label") or {}
    return {"accuracy": evaluate["accuracy"], "best_epoch": train["best_epoch"], "epochs_run": train["epochs_run"],
            "lr_found": train.get("lr_found"), "pseudo_kept": pseudo.get("kept"),
            "pseudo_kept_label_accuracy": pseudo.get("kept_label_accuracy")}


def run_recipe(repo: Path, name: str, overrides: list[str], resolutions: list[int], grid: list[str]) -> dict:
    """One `dvc exp run`; the cells' figures and each model's gap, largest less smallest resolution."""
    seconds = exp_run(repo, name, [*grid, *overrides])
    cells = {model: {str(r): cell_figures(repo, model, r) for r in resolutions} for model in MODELS}
    gaps = {model: round(by[str(resolutions[-1])]["accuracy"] - by[str(resolutions[0])]["accuracy"], 4) for model, by in cells.items()}
    print(f"{name}: {seconds:.0f} s, " + "; ".join(
        f"{model} " + " / ".join(f"{by[str(r)]['accuracy']:.3f}" for r in resolutions) for model, by in cells.items()), flush=True)
    return {"overrides": overrides, "seconds": round(seconds, 1), "cells": cells, "gap": gaps}


def main() -> None:
    args = experiment_args(__doc__, "benchmarks/results/recipe_table.json")
    with fresh_study(args.tiny) as repo:
        resolutions = yaml.safe_load((repo / "params.yaml").read_text())["grid"]["resolutions"]
        grid = [f"models=[{','.join(MODELS)}]", POOL, *(["train.epochs=8"] if args.tiny else [])]  # the plan ramps over 8 epochs
        results = {name: run_recipe(repo, name, overrides, resolutions, grid) for name, overrides in RECIPES.items()}
    io.write_json(args.out, {**conditions(), "models": MODELS, "resolutions": resolutions, "pool": POOL, "recipes": results})
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
