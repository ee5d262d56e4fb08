"""Usage: python -m benchmarks.surface_table [--tiny] [--out benchmarks/results/surface_table.json]

Does testing above the training resolution help on the built-in data, and do BatchNorm
recalibration, FixRes fine-tuning and test-time augmentation help?  In a fresh git + DVC copy of the
project (the default study, on the built-in data, cut to the models that train from scratch in it)
it runs one `dvc exp run` per training condition, each with `evaluate.bn_recalibration: true` and
`evaluate.tta: views`:

- the default recipe (random crop with padding): train and test images show objects at one size;
- `train.augment.random_resized_crop` at scale 0.25-1: FixRes's condition, where training crops
  make objects look larger than the centre-cropped test images do.

It records the aggregate's own analysis (resomap/report/surface.py): per model and training
resolution, testing one step up against testing at the training resolution (McNemar), the best
test resolution with its bootstrap interval, every recalibration, fine-tune and TTA gain.
--tiny runs the tests' tiny study instead (a smoke test; its figures mean little).
"""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path

import pandas as pd

from benchmarks.experiments import exp_run, experiment_args, fresh_study
from benchmarks.stage_overhead import conditions
from resomap.core import io
from resomap.core.config import load_params
from resomap.core.grid import Cell
from resomap.report.analysis import analyse
from resomap.report.study import load_study

MODELS = ["tiny_cnn", "simple_cnn"]
EVALUATION = ["evaluate.bn_recalibration=true", "evaluate.tta=views"]
CONDITIONS = {
    "default recipe": [],
    "random resized crop": ["train.augment.random_resized_crop={scale:[0.25,1.0],ratio:[0.75,1.333]}", "train.augment.crop_padding=0.0"],
}
TABLES = ("best", "one_up", "recalibration", "finetune", "tta")


def records(frame: pd.DataFrame) -> list[dict]:
    return [{key: (round(value, 4) if isinstance(value, float) else value) for key, value in row.items()}
            for row in frame.astype(object).where(frame.notna(), None).to_dict("records")]


def surface_analysis(repo: Path) -> dict:
    with contextlib.chdir(repo):  # the aggregate's readers take paths from the study's root
        params = load_params()
        cells = [Cell(*c) for c in itertools.product(params.models, sorted(params.grid_resolutions), params.seeds)]
        surface = analyse(load_study(cells, params.finetune_cells), params.aggregate).surface
    return {name: records(getattr(surface, name)) for name in TABLES}


def run_condition(repo: Path, name: str, overrides: list[str], grid: list[str]) -> dict:
    seconds = exp_run(repo, name, [*grid, *EVALUATION, *overrides])
    analysis = surface_analysis(repo)
    print(f"{name}: {seconds:.0f} s; one step up: " + "; ".join(
        f"{r['model']} {r['train_resolution']}->{r['test_resolution']} {r['gain']:+.3f} (p {r['p_value']:.2g})"
        for r in analysis["one_up"]), flush=True)
    return {"overrides": overrides, "seconds": round(seconds, 1), **analysis}


def main() -> None:
    args = experiment_args(__doc__, "benchmarks/results/surface_table.json")
    with fresh_study(args.tiny) as repo:
        grid = [f"models=[{','.join(MODELS)}]"]
        results = {name: run_condition(repo, name, overrides, grid) for name, overrides in CONDITIONS.items()}
    io.write_json(args.out, {**conditions(), "models": MODELS, "evaluation": EVALUATION, "conditions": results})
    print(f"surface_table: {args.out}")


if __name__ == "__main__":
    main()
