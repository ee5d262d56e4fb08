"""explain: Grad-CAM heatmaps for a fixed set of test images, comparable across resolutions."""

from __future__ import annotations

import time

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from resomap.config import ExplainParams
from resomap.data.augment import normalize
from resomap.data.prepared import Split
from resomap.inference import predict_logits
from resomap.models import cam_layer


def select_images(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Test indices spread across classes, chosen from labels and seed only, so image i is the
    same photo at every resolution (prepare keeps the order)."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    picked = [idx[round_] for round_ in range(max(map(len, per_class))) for idx in per_class if round_ < len(idx)]
    return np.array(picked[:count], dtype=np.int64)


def gradcam_maps(model: nn.Module, model_name: str, images: torch.Tensor, targets: list[int], device) -> np.ndarray:
    """(K, R, R) float32 in [0, 1], one CAM per image for its own target class, in fp32."""
    model = model.to(device).eval()
    x = normalize(images.to(device))
    layer = cam_layer(model, model_name)
    with GradCAM(model=model, target_layers=[layer]) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
    return maps.astype(np.float32)


def cam_size(model: nn.Module, model_name: str, resolution: int) -> int:
    """Side of the target layer's feature map: 1 means Grad-CAM can only say 'everywhere'."""
    sizes = []
    handle = cam_layer(model, model_name).register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, resolution, resolution))
    handle.remove()
    return sizes[0]


def localisation(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """pointing_game: the hottest pixel lies on the object; energy_in_mask: share of heat on it."""
    flat = maps.reshape(len(maps), -1)
    hits = masks.reshape(len(masks), -1)[np.arange(len(maps)), flat.argmax(1)]
    energy = (flat * masks.reshape(len(masks), -1)).sum(1) / np.maximum(flat.sum(1), 1e-12)
    return {"pointing_game": float(hits.mean()), "energy_in_mask": float(energy.mean())}


def explain_cell(model: nn.Module, model_name: str, test: Split, params: ExplainParams, device) -> tuple[dict, dict]:
    """Metrics and the arrays to keep (indices, labels, predictions, heatmaps)."""
    indices = select_images(test.labels.numpy(), params.num_images, params.seed)
    images = test.images[indices]
    predicted = predict_logits(model.to(device), images, batch_size=len(indices), device=device).argmax(1)
    start = time.perf_counter()
    maps = gradcam_maps(model, model_name, images, predicted.tolist(), device)
    seconds = time.perf_counter() - start
    metrics = {
        "num_images": len(indices),
        "gradcam.cam_size": cam_size(model.cpu(), model_name, images.shape[-1]),
        "gradcam.seconds_per_image": round(seconds / len(indices), 4),
    }
    if test.masks is not None:
        scores = localisation(maps, test.masks[indices].numpy())
        metrics.update({f"gradcam.{k}": round(v, 6) for k, v in scores.items()})
    arrays = {
        "indices": indices,
        "labels": test.labels[indices].numpy(),
        "predicted": predicted.numpy(),
        "gradcam": maps,
    }
    return metrics, arrays
