"""A finished study written to disk with known answers, without training: every cell file that
aggregate reads, produced by the project's own writers, for 2 models x 3 resolutions x 2 seeds.

tiny_cnn gets right the first 100 of 200 test images at 16 px, 40 more at 32 px (a significant
step), and one more at 64 px (not significant); simple_cnn gains 20 images per step. Latency grows
as resolution^0.5, FLOPs as resolution^2, memory as resolution^1. On the surface each cell loses 20
images per grid step away from its training resolution (SURFACE_DROP), so the diagonal is best."""

from __future__ import annotations

import numpy as np
import torch
import yaml

from resomap.core import grid as paths
from resomap.core import io
from resomap.core.grid import Cell, FinetuneCell
from resomap.evaluate.evaluation import prediction_rows, write_predictions, write_rows
from resomap.evaluate.metrics import classification_metrics
from resomap.evaluate.surface import SURFACE_COLUMNS, SURFACE_KEYS
from resomap.explain.gallery import gallery_record, pick_gallery, picked_indices, write_gallery

MODELS = ["tiny_cnn", "simple_cnn"]
RESOLUTIONS = [16, 32, 64]
SEEDS = [0, 1]
CLASSES = [f"class_{i}" for i in range(10)]
TEST_IMAGES = 200
METHODS = ["gradcam", "saliency"]
CORRECT = {"tiny_cnn": {16: 100, 32: 140, 64: 141}, "simple_cnn": {16: 60, 32: 80, 64: 100}}
SURFACE_DROP = 20
FINETUNED = 130  # images right after fine-tuning each 16 px cell at 32 px (the source: 100 or 60 at 16 px, 80 or 40 at 32 px)


def labels() -> np.ndarray:
    return np.arange(TEST_IMAGES) % len(CLASSES)


def predicted_with(correct: int, seed: int) -> np.ndarray:
    """The first `correct` images right (seed 1 also misses image 0), the rest one class off."""
    truth = labels()
    right = np.arange(TEST_IMAGES) < correct
    right[0] &= seed == 0
    return np.where(right, truth, (truth + 1) % len(CLASSES))


def predicted(cell: Cell) -> np.ndarray:
    return predicted_with(CORRECT[cell.model][cell.resolution], cell.seed)


def scored(correct: int, seed: int) -> tuple[torch.Tensor, dict]:
    """Logits that get the first `correct` images right, and evaluate's metrics of them."""
    logits = torch.nn.functional.one_hot(torch.from_numpy(predicted_with(correct, seed)), len(CLASSES)).float() * 5
    return logits, classification_metrics(logits.numpy(), labels(), CLASSES)


def write_evaluate(cell: Cell) -> None:
    logits, metrics = scored(CORRECT[cell.model][cell.resolution], cell.seed)
    write_predictions(paths.evaluate_plots_dir(cell) / "predictions.csv", logits, torch.from_numpy(labels()), CLASSES)
    io.write_json(paths.evaluate_metrics_dir(cell) / "metrics.json", metrics)


def surface_correct(cell: Cell) -> dict[int, int]:
    """Images right at each test resolution: the diagonal's count, SURFACE_DROP fewer per grid step away."""
    return {t: CORRECT[cell.model][cell.resolution] - SURFACE_DROP * abs(RESOLUTIONS.index(t) - RESOLUTIONS.index(cell.resolution))
            for t in RESOLUTIONS}


def write_surface(cell: Cell, correct: dict[int, int], recalibrated: dict[int, int] | None = None) -> None:
    """The surface stage's files: `correct[t]` images right at test resolution t and, with
    `recalibrated`, a recalibrated entry at each of its resolutions."""
    entries, rows = {}, []
    for test, count in correct.items():
        variants = [(0, count)] + ([(1, recalibrated[test])] if recalibrated and test in recalibrated else [])
        for flag, right in variants:
            logits, metrics = scored(right, cell.seed)
            rows += [[test, flag, *row] for row in prediction_rows(logits, torch.from_numpy(labels()), CLASSES)]
            scores = {key: metrics[key] for key in SURFACE_KEYS}
            if flag:
                entries[str(test)]["recalibrated"] = scores
            else:
                entries[str(test)] = scores | {"resize_policy": "test"}
    write_rows(paths.surface_plots_dir(cell) / "predictions.csv", SURFACE_COLUMNS, rows)
    io.write_json(paths.surface_metrics_dir(cell) / "metrics.json",
                  {"train_resolution": cell.resolution, "bn_recalibration": recalibrated is not None, "test": entries})


def write_finetune(tuned: FinetuneCell, correct: int) -> None:
    """The fine-tune stage's files: `correct` images right at the target resolution."""
    logits, metrics = scored(correct, tuned.seed)
    write_predictions(paths.finetune_plots_dir(tuned) / "predictions.csv", logits, torch.from_numpy(labels()), CLASSES)
    io.write_json(paths.finetune_metrics_dir(tuned) / "metrics.json", {
        "from_resolution": tuned.source, "to_resolution": tuned.target, "layers": "classifier_bn", "epochs": 2,
        **{key: metrics[key] for key in SURFACE_KEYS},
    })


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


def write_gallery_files(cell: Cell) -> None:
    """The explain stage's gallery, picked from the planted predictions: every confidence is equal, so
    each class's picks are its lowest right and lowest wrong test index (tiny_cnn at 16 px: wrong
    100..109, which 32 and 64 px get right)."""
    logits, _ = scored(CORRECT[cell.model][cell.resolution], cell.seed)
    predicted, confidence = logits.argmax(1).numpy(), logits.softmax(1).max(1).values.numpy()
    picks = pick_gallery(labels(), predicted, confidence, len(CLASSES))
    indices = picked_indices(picks)
    r = cell.resolution
    yy, xx = np.mgrid[0:r, 0:r] / r
    blob = np.exp(-((yy - 0.5) ** 2 + (xx - 0.5) ** 2) * 20)
    arrays = {"indices": indices, "images": np.full((len(indices), r, r, 3), 100, np.uint8),
              "gradcam": np.repeat(blob[None], len(indices), 0).astype(np.float16)}
    write_gallery(paths.explanations_dir(cell), gallery_record(picks, predicted, confidence, CLASSES, "features.0", 8), arrays)


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
    """Every cell file, the fine-tune cells 16 -> 32 px, and a params.yaml in the current directory."""
    cells = [Cell(m, r, s) for m in MODELS for r in RESOLUTIONS for s in SEEDS]
    for cell in cells:
        write_evaluate(cell)
        write_surface(cell, surface_correct(cell))
        write_explain(cell)
        write_gallery_files(cell)
        write_train(cell)
        if cell.resolution == 16:
            write_finetune(FinetuneCell(cell.model, 16, 32, cell.seed), FINETUNED)
    for model in MODELS:
        for resolution in RESOLUTIONS:
            write_profile(model, resolution)
    params = {"models": MODELS, "resolutions": RESOLUTIONS, "seeds": SEEDS, "finetune": {"pairs": [{"from": 16, "to": 32}]},
              "aggregate": {"bootstrap_samples": 500, **aggregate}}
    with open("params.yaml", "w") as f:
        yaml.safe_dump(params, f)
    return cells
