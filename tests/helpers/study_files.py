"""A finished study written to disk with known answers, without training: every cell file that
aggregate reads, produced by the project's own writers, for 2 models x 3 resolutions x 2 seeds.

tiny_cnn gets right the first 100 of 200 test images at 16 px, 40 more at 32 px (a significant
step), and one more at 64 px (not significant); simple_cnn gains 20 images per step. Latency grows
as resolution^0.5, FLOPs as resolution^2, memory as resolution^1."""

from __future__ import annotations

import numpy as np
import torch
import yaml

from resomap.core import grid as paths
from resomap.core import io
from resomap.core.grid import Cell
from resomap.evaluate.evaluation import write_predictions
from resomap.evaluate.metrics import classification_metrics

MODELS = ["tiny_cnn", "simple_cnn"]
RESOLUTIONS = [16, 32, 64]
SEEDS = [0, 1]
CLASSES = [f"class_{i}" for i in range(10)]
TEST_IMAGES = 200
METHODS = ["gradcam", "saliency"]
CORRECT = {"tiny_cnn": {16: 100, 32: 140, 64: 141}, "simple_cnn": {16: 60, 32: 80, 64: 100}}


def labels() -> np.ndarray:
    return np.arange(TEST_IMAGES) % len(CLASSES)


def predicted(cell: Cell) -> np.ndarray:
    """The first CORRECT images right (seed 1 also misses image 0), the rest one class off."""
    truth = labels()
    right = np.arange(TEST_IMAGES) < CORRECT[cell.model][cell.resolution]
    right[0] &= cell.seed == 0
    return np.where(right, truth, (truth + 1) % len(CLASSES))


def write_evaluate(cell: Cell) -> None:
    logits = torch.nn.functional.one_hot(torch.from_numpy(predicted(cell)), len(CLASSES)).float() * 5
    truth = torch.from_numpy(labels())
    write_predictions(paths.evaluate_plots_dir(cell) / "predictions.csv", logits, truth, CLASSES)
    io.write_json(paths.evaluate_metrics_dir(cell) / "metrics.json", classification_metrics(logits.numpy(), labels(), CLASSES))


def write_profile(model: str, resolution: int) -> None:
    scale = 1.0 if model == "tiny_cnn" else 3.0
    io.write_json(paths.profile_metrics_dir(model, resolution) / "metrics.json", {
        "params": 1000, "flops": scale * 1000 * resolution**2, "latency_ms": scale * 0.1 * resolution**0.5,
        "throughput_img_s": 1e5 / (scale * resolution**2), "peak_memory_mb": scale * resolution,
        "energy_j_per_img": None, "device": "cpu", "device_name": "test-cpu",
    })


def write_explain(cell: Cell) -> None:
    """Maps of 4 images: a bright blob that drifts with resolution for gradcam, fixed for saliency."""
    r = cell.resolution
    yy, xx = np.mgrid[0:r, 0:r] / r
    drift = {16: 0.3, 32: 0.5, 64: 0.7}[r]
    maps = {"gradcam": np.exp(-((yy - drift) ** 2 + (xx - drift) ** 2) * 20),
            "saliency": np.exp(-((yy - 0.5) ** 2 + (xx - 0.3) ** 2) * 20)}
    k = 4
    arrays = {
        "indices": np.arange(k), "images": np.full((k, r, r, 3), 128, np.uint8),
        "labels": labels()[:k], "predicted": predicted(cell)[:k],
        **{m: np.repeat(maps[m][None], k, 0).astype(np.float16) for m in METHODS},
    }
    io.write_npz(paths.explanations_dir(cell) / "heatmaps.npz", **arrays)
    scores = {"deletion_auc": 0.1, "insertion_auc": 0.3, "pointing_game": 0.5, "energy_in_mask": 0.4,
              "sparseness": 0.5, "randomization_similarity": 0.2, "seconds_per_image": 0.01}
    io.write_json(paths.explain_metrics_dir(cell) / "metrics.json",
                  {"num_images": k, "cam_layer": "features.0", **{m: scores for m in METHODS}})


def write_train(cell: Cell) -> None:
    directory = paths.train_metrics_dir(cell)
    io.write_json(directory / "metrics.json",
                  {"best_epoch": 2, "best_val_accuracy": 0.5, "epochs_run": 3, "train_seconds": 1.5})
    for split in ("train", "val"):
        for name, values in (("loss", [2.0, 1.5, 1.2]), ("accuracy", [0.2, 0.4, 0.5])):
            rows = "".join(f"{step}\t{v}\n" for step, v in enumerate(values))
            with io.atomic_open(directory / "plots" / "metrics" / split / f"{name}.tsv") as f:
                f.write(f"step\t{name}\n{rows}")


def write_study(**aggregate) -> list[Cell]:
    """Every cell file and a params.yaml in the current directory."""
    cells = [Cell(m, r, s) for m in MODELS for r in RESOLUTIONS for s in SEEDS]
    for cell in cells:
        write_evaluate(cell)
        write_explain(cell)
        write_train(cell)
    for model in MODELS:
        for resolution in RESOLUTIONS:
            write_profile(model, resolution)
    params = {"models": MODELS, "resolutions": RESOLUTIONS, "seeds": SEEDS, "aggregate": {"bootstrap_samples": 500, **aggregate}}
    with open("params.yaml", "w") as f:
        yaml.safe_dump(params, f)
    return cells
