"""Test-time augmentation: the softmax averaged over views of each test image (evaluate.tta).

`views` is the ResNet-18 recipe's four: identity, horizontal flip, resize-then-centre-crop and
vertical flip. Each view is one more forward pass over the test split, so the cost reported is that
count (`latency_multiplier`): a count, not a timing, keeps the metrics file deterministic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from resomap.core.config import EvaluateParams, tta_zoomed_side
from resomap.data.prepared import PreparedData
from resomap.evaluate.metrics import classification_metrics
from resomap.models.inference import predict_logits


def zoom_centre_crop(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, R, R) -> [0, 1] float: resized to tta_zoomed_side(R) (bilinear), centre R x R."""
    side = images.shape[-1]
    zoomed = F.interpolate(images.float() / 255.0, size=tta_zoomed_side(side), mode="bilinear", align_corners=False)
    top = (zoomed.shape[-1] - side) // 2
    return zoomed[..., top : top + side, top : top + side].clamp(0.0, 1.0)


VIEWS = {
    "identity": None,
    "hflip": lambda images: images.flip(-1),
    "zoom_crop": zoom_centre_crop,
    "vflip": lambda images: images.flip(-2),
}
VIEW_SETS = {"flip": ("identity", "hflip"), "views": ("identity", "hflip", "zoom_crop", "vflip")}


def predict_averaged(model: nn.Module, images: torch.Tensor, views: tuple[str, ...], *, batch_size: int, device: torch.device) -> torch.Tensor:
    """float32 probabilities (N, C): the softmax of each view's logits, averaged over the views."""
    probabilities = [predict_logits(model, images, batch_size=batch_size, device=device, view=VIEWS[name]).softmax(1) for name in views]
    return torch.stack(probabilities).mean(0)


def tta_metrics(model: nn.Module, data: PreparedData, params: EvaluateParams, device: torch.device) -> dict:
    """The `tta` entry of the evaluate metrics: views used, accuracy, macro-F1, ECE and the cost."""
    views = VIEW_SETS[params.tta]
    test = data.splits["test"]
    probabilities = predict_averaged(model.to(device), test.images, views, batch_size=params.batch_size, device=device)
    # log-probabilities are logits whose softmax is the averaged probabilities (clamped: no log(0))
    log_probabilities = probabilities.clamp_min(torch.finfo(torch.float32).tiny).log()
    scores = classification_metrics(log_probabilities.numpy(), test.labels.numpy(), data.classes, ece_bins=params.ece_bins)
    return {"views": list(views), "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"], "ece": scores["ece"],
            "latency_multiplier": len(views)}
