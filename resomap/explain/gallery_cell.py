"""The gallery of one cell: its whole test split predicted, the picks per class (resomap/explain/gallery.py),
and Grad-CAM of each picked image for its predicted class, on the layer explain_cell chose."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from resomap.core.config import ExplainParams
from resomap.core.device import true_fp32
from resomap.data.augment import normalize
from resomap.data.prepared import Split
from resomap.explain.explain_cell import heatmaps
from resomap.explain.gallery import gallery_record, pick_gallery, picked_indices
from resomap.explain.methods import select_cam_layer
from resomap.models.inference import predict_logits


def explain_gallery(model: nn.Module, model_name: str, test: Split, classes: list[str], params: ExplainParams,
                    device: torch.device) -> tuple[dict, dict[str, np.ndarray]]:
    """gallery.json's record and gallery.npz's arrays. Draws no random numbers: run after explain_cell,
    it changes nothing of what that wrote. In true fp32 on a GPU, as explain_cell."""
    with true_fp32():
        model = model.to(device).eval()
        logits = predict_logits(model, test.images, batch_size=4 * params.batch_size, device=device)
        predicted, confidence = logits.argmax(1).numpy(), logits.softmax(1).max(1).values.numpy()
        picks = pick_gallery(test.labels.numpy(), predicted, confidence, len(classes))
        indices = picked_indices(picks)
        layer = select_cam_layer(model, model_name, test.images.shape[-1], params.min_cam_size, device)
        x = normalize(test.images[indices].to(device))
        maps = heatmaps(model, "gradcam", x, predicted[indices].tolist(), layer, params)[0]
    arrays = {"indices": indices, "images": test.images[indices].permute(0, 2, 3, 1).numpy(), "gradcam": maps.astype(np.float16)}
    return gallery_record(picks, predicted, confidence, classes, layer.name, layer.size), arrays
