"""explain: heatmaps for a fixed set of test images, scored for faithfulness, localisation,
sparseness and the model-randomisation sanity check, comparable across resolutions."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from resomap.core.config import ExplainParams
from resomap.core.oom import with_oom_backoff
from resomap.data.augment import normalize
from resomap.data.prepared import Split
from resomap.explain.methods import CamLayer, explain_batch, select_cam_layer
from resomap.explain.scores import curve_auc, gini, localisation, perturbation_curves, spearman
from resomap.models.registry import build_model

RANDOMISED_SEED = 12345  # the re-initialised twin of every model, for the sanity check


def select_images(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Test indices spread across classes, chosen from labels and seed only, so image i is the
    same photo at every resolution (prepare keeps the order)."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    picked = [idx[round_] for round_ in range(max(map(len, per_class))) for idx in per_class if round_ < len(idx)]
    return np.array(picked[:count], dtype=np.int64)


def randomised_twin(model_name: str, num_classes: int, device) -> nn.Module:
    """The same architecture with fresh random weights (Adebayo et al. 2018's model randomisation)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(RANDOMISED_SEED)
    twin = build_model(model_name, num_classes).to(device).eval()
    torch.random.set_rng_state(state)
    return twin


def heatmaps(
    model: nn.Module, method: str, x: torch.Tensor, targets: list[int], layer: CamLayer, params: ExplainParams
) -> tuple[np.ndarray, int, int]:
    """One method's maps for all images, `params.batch_size` images at a time; out of memory
    halves the IG chunk (`ig_batch_size`). Returns the maps, the IG chunk used and the halvings."""

    def explain_all(ig_batch: int) -> np.ndarray:
        return np.concatenate([
            explain_batch(model, method, x[i : i + params.batch_size], targets[i : i + params.batch_size], layer,
                          ig_batch=ig_batch, ig_steps=params.ig_steps)
            for i in range(0, len(x), params.batch_size)
        ])

    return with_oom_backoff(explain_all, params.ig_batch_size, x.device)


def score_maps(model: nn.Module, x: torch.Tensor, targets: list[int], maps: np.ndarray, masks, params: ExplainParams) -> dict:
    """Faithfulness (deletion/insertion AUC), localisation against masks, sparseness."""
    curves = {
        mode: perturbation_curves(model, x, targets, maps, steps=params.deletion_steps, batch_size=params.batch_size * 4, mode=mode)
        for mode in ("deletion", "insertion")
    }
    scores = {f"{mode}_auc": float(curve_auc(curve).mean()) for mode, curve in curves.items()}
    if masks is not None:
        scores.update(localisation(maps, masks))
    scores["sparseness"] = float(gini(maps).mean())
    return scores


def explain_cell(model: nn.Module, model_name: str, test: Split, num_classes: int, params: ExplainParams, device) -> tuple[dict, dict]:
    """Metrics per method (nested: {method: {score: value}}) and the arrays to keep."""
    indices = select_images(test.labels.numpy(), params.num_images, params.seed)
    model = model.to(device).eval()
    x = normalize(test.images[indices].to(device))
    with torch.no_grad():
        targets = model(x).argmax(1).tolist()  # explain what the model predicted
    resolution = x.shape[-1]
    layer = select_cam_layer(model, model_name, resolution, params.min_cam_size, device)
    twin = randomised_twin(model_name, num_classes, device)
    twin_layer = CamLayer(layer.name, twin.get_submodule(layer.name), layer.size)
    masks = test.masks[indices].numpy() if test.masks is not None else None
    metrics = {"num_images": len(indices), "cam_layer": layer.name}
    arrays = {
        "indices": indices,
        "images": test.images[indices].permute(0, 2, 3, 1).numpy(),  # (K, R, R, 3) uint8: what was explained
        "labels": test.labels[indices].numpy(),
        "predicted": np.array(targets),
    }
    for method in params.methods:
        start = time.perf_counter()
        maps, ig_batch, backoffs = heatmaps(model, method, x, targets, layer, params)
        seconds = (time.perf_counter() - start) / len(indices)
        scores = score_maps(model, x, targets, maps, masks, params)
        twin_maps = heatmaps(twin, method, x, targets, twin_layer, params)[0]
        scores["randomization_similarity"] = float(spearman(maps, twin_maps).mean())
        scores["seconds_per_image"] = seconds
        scores["oom_backoffs"] = backoffs
        if method == "integrated_gradients":
            scores["ig_batch_size"] = ig_batch
        if method.startswith("gradcam"):
            scores["cam_size"] = layer.size
        metrics[method] = {k: round(v, 6) if isinstance(v, float) else v for k, v in scores.items()}
        arrays[method] = maps.astype(np.float16)  # compact; [0, 1] maps lose nothing that matters
    return metrics, arrays
