"""evaluate: score trained weights on the held-out test split."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from resomap.core import io
from resomap.core.config import EvaluateParams
from resomap.data.prepared import PreparedData
from resomap.evaluate.metrics import classification_metrics
from resomap.models.inference import predict_logits


def evaluate_model(model: torch.nn.Module, data: PreparedData, params: EvaluateParams, device: torch.device):
    """Metrics dict and test-set logits (kept so the aggregate can run paired tests on predictions)."""
    test = data.splits["test"]
    logits = predict_logits(model.to(device), test.images, batch_size=params.batch_size, device=device)
    metrics = classification_metrics(logits.numpy(), test.labels.numpy(), data.classes, ece_bins=params.ece_bins)
    return metrics, logits


PREDICTION_COLUMNS = ["index", "actual", "predicted", "correct", "confidence"]


def prediction_rows(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> Iterator[list]:
    """One row (PREDICTION_COLUMNS) per test image, by index: what paired tests compare."""
    predicted = logits.argmax(1)
    confidence = logits.softmax(1).max(1).values
    for i, (actual, pred, conf) in enumerate(zip(labels.tolist(), predicted.tolist(), confidence.tolist())):
        yield [i, classes[actual], classes[pred], int(actual == pred), f"{conf:.6f}"]


def write_rows(path: Path, header: list[str], rows: Iterable[list]) -> None:
    with io.atomic_open(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_predictions(path: Path, logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> None:
    """One row per test image, by index, for DVC's confusion plot and per-image comparisons."""
    write_rows(path, PREDICTION_COLUMNS, prediction_rows(logits, labels, classes))
