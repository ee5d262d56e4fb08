"""The train x test surface: one trained cell scored at every test resolution on the same test
images (image i of a prepared test split is the same scene at every resolution), plainly and,
with evaluate.bn_recalibration, after re-estimating BatchNorm statistics at the test resolution.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from resomap.core.config import EvaluateParams
from resomap.data.prepared import PreparedData
from resomap.evaluate.bn_recalibration import batchnorm_layers, recalibrate_batchnorm
from resomap.evaluate.evaluation import PREDICTION_COLUMNS, evaluate_model, prediction_rows

SURFACE_KEYS = ("accuracy", "macro_f1", "ece")
SURFACE_COLUMNS = ["test_resolution", "bn_recalibrated", *PREDICTION_COLUMNS]


@dataclass(frozen=True)
class SurfaceData:
    """One test resolution's prepared data (with its train split when recalibrating) and the
    resize policy prepare recorded for it in its manifest."""

    data: PreparedData
    resize_policy: str


def evaluate_surface(
    model: nn.Module, train_resolution: int, resolutions: Iterable[SurfaceData], params: EvaluateParams, device: torch.device
) -> tuple[dict, list[list]]:
    """The cell's surface metrics (per test resolution: SURFACE_KEYS, the resize policy and, when
    recalibrating away from the training resolution, the same keys after recalibration) and the
    per-image prediction rows (SURFACE_COLUMNS) of every test resolution and variant."""
    trained = copy.deepcopy(model.state_dict())
    per_resolution, rows = {}, []
    for test in resolutions:
        resolution = test.data.resolution
        model.load_state_dict(trained)
        entry, plain_rows = _scored(model, test.data, params, device, recalibrated=False)
        rows += plain_rows
        entry["resize_policy"] = test.resize_policy
        if params.bn_recalibration and resolution != train_resolution:
            recalibrate_batchnorm(model, test.data.splits["train"].images, batch_size=params.batch_size,
                                  batches=params.bn_batches, device=device)
            entry["recalibrated"], recalibrated_rows = _scored(model, test.data, params, device, recalibrated=True)
            rows += recalibrated_rows
        per_resolution[str(resolution)] = entry
    model.load_state_dict(trained)
    metrics = {"train_resolution": train_resolution, "bn_recalibration": params.bn_recalibration, "test": per_resolution}
    if params.bn_recalibration:
        # 0: the model has no BatchNorm, recalibration was a no-op and `recalibrated` equals the plain scores
        metrics.update(bn_layers=len(batchnorm_layers(model)), bn_batches=params.bn_batches)
    return metrics, rows


def _scored(model: nn.Module, data: PreparedData, params: EvaluateParams, device: torch.device,
            *, recalibrated: bool) -> tuple[dict, list[list]]:
    metrics, logits = evaluate_model(model, data, params, device)
    test = data.splits["test"]
    rows = [[data.resolution, int(recalibrated), *row] for row in prediction_rows(logits, test.labels, data.classes)]
    return {key: metrics[key] for key in SURFACE_KEYS}, rows
