"""explain: heatmaps for a fixed set of test images, scored for faithfulness, localisation,
sparseness and the model-randomisation sanity check, comparable across resolutions."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from resomap.core.config import ExplainParams
from resomap.core.device import true_fp32
from resomap.core.oom import with_oom_backoff
from resomap.data.augment import normalize
from resomap.data.prepared import Split
from resomap.explain.methods import CamLayer, explain_batch, select_cam_layer
from resomap.explain.scores import curve_auc, gini, localisation, perturbation_curves, spearman
from resomap.models.heads import Head
from resomap.models.registry import build_model

RANDOMISED_SEED = 12345  # the re-initialised twin of every model, for the sanity check


def select_images(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Test indices spread across classes, chosen from labels and seed only, so image i is the
    same photo at every resolution (prepare keeps the order)."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    picked = [idx[round_] for round_ in range(max(map(len, per_class))) for idx in per_class if round_ < len(idx)]
    return np.array(picked[:count], dtype=np.int64)


def randomised_twin(model_name: str, num_classes: int, device, head: Head | None = None) -> nn.Module:
    """The same architecture (and head) with fresh random weights (Adebayo et al. 2018's model randomisation)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(RANDOMISED_SEED)
    twin = build_model(model_name, num_classes, head).to(device).eval()
    torch.random.set_rng_state(state)
    return twin


@dataclass(frozen=True)
class Chunks:
    images: int  # images explained at once (explain.batch_size, at most the image count)
    ig: int  # Integrated Gradients' image-steps per forward (captum's internal_batch_size)


def chunks(params: ExplainParams, num_images: int, halvings: int) -> Chunks:
    """The chunks after `halvings` out-of-memory halvings: both halve together (IG's chunk bounds
    its forward batch whatever the image chunk, so halving only one would not help)."""
    return Chunks(max(1, min(params.batch_size, num_images) >> halvings), max(1, params.ig_batch_size >> halvings))


def heatmaps(
    model: nn.Module, method: str, x: torch.Tensor, targets: list[int], layer: CamLayer, params: ExplainParams,
    *, halvings: int = 0,
) -> tuple[np.ndarray, int, int]:
    """One method's maps for all images, a chunk of images at a time (`chunks`, starting after
    `halvings`). Out of memory halves the image chunk, and IG's chunk with it, and retries from
    the same random state (SmoothGrad draws its noise again as the failed try did). Returns the
    maps, the IG chunk used and the halvings in all."""
    ig_method = method == "integrated_gradients"
    start = chunks(params, len(x), 0)
    most = max(start.images.bit_length(), start.ig.bit_length() if ig_method else 1) - 1  # halvings until all are 1
    halvings = min(halvings, most)
    rng = _rng_state(x.device)
    tries = 0

    def explain_all(level: int) -> np.ndarray:
        nonlocal tries
        if tries:
            _set_rng_state(x.device, rng)
        tries += 1
        chunk = chunks(params, len(x), most - (level.bit_length() - 1))
        return np.concatenate([
            explain_batch(model, method, x[i : i + chunk.images], targets[i : i + chunk.images], layer,
                          ig_batch=chunk.ig, ig_steps=params.ig_steps)
            for i in range(0, len(x), chunk.images)
        ])

    maps, _, backoffs = with_oom_backoff(explain_all, 2 ** (most - halvings), x.device)
    return maps, chunks(params, len(x), halvings + backoffs).ig, halvings + backoffs


def warm_up(model: nn.Module, method: str, x: torch.Tensor, targets: list[int], layer: CamLayer, params: ExplainParams) -> int:
    """One untimed call before the timed one, so first-call costs (the lazy imports of grad-cam and
    captum, CUDA's lazy kernel loading, cudnn autotuning) stay out of `seconds_per_image`. On a GPU
    it explains the first image chunk, the shapes the timed run uses; on the CPU, with nothing to
    autotune, one image. Its maps are discarded and the random state is restored, so the timed
    maps are what a run without it gives. Returns the halvings it needed (the timed run starts there)."""
    count = chunks(params, len(x), 0).images if x.device.type == "cuda" else 1
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else [], device_type=x.device.type):
        return heatmaps(model, method, x[:count], targets[:count], layer, params)[2]


def _rng_state(device: torch.device) -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_state(device: torch.device, state: tuple) -> None:
    torch.set_rng_state(state[0])
    if device.type == "cuda":
        torch.cuda.set_rng_state(state[1], device)


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


def explain_cell(model: nn.Module, model_name: str, test: Split, num_classes: int, params: ExplainParams, device,
                 head: Head | None = None) -> tuple[dict, dict]:
    """Metrics per method (nested: {method: {score: value}}) and the arrays to keep. Runs in true
    fp32 on a GPU (no TF32, whatever configure_backends allowed): attributions are gradients and
    small differences of logits, and TF32's 10-bit mantissa would move them."""
    with true_fp32():
        return _explain_cell(model, model_name, test, num_classes, params, device, head)


def _explain_cell(model: nn.Module, model_name: str, test: Split, num_classes: int, params: ExplainParams, device,
                  head: Head | None) -> tuple[dict, dict]:
    indices = select_images(test.labels.numpy(), params.num_images, params.seed)
    model = model.to(device).eval()
    x = normalize(test.images[indices].to(device))
    with torch.no_grad():
        targets = model(x).argmax(1).tolist()  # explain what the model predicted
    resolution = x.shape[-1]
    layer = select_cam_layer(model, model_name, resolution, params.min_cam_size, device)
    twin = randomised_twin(model_name, num_classes, device, head)
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
        warm = warm_up(model, method, x, targets, layer, params)
        start = time.perf_counter()
        maps, ig_batch, backoffs = heatmaps(model, method, x, targets, layer, params, halvings=warm)
        seconds = (time.perf_counter() - start) / len(indices)
        scores = score_maps(model, x, targets, maps, masks, params)
        twin_maps = heatmaps(twin, method, x, targets, twin_layer, params, halvings=backoffs)[0]
        scores["randomization_similarity"] = float(spearman(maps, twin_maps).mean())
        scores["seconds_per_image"] = seconds
        scores["oom_backoffs"] = backoffs
        scores["batch_size"] = chunks(params, len(indices), backoffs).images
        if backoffs:
            print(f"out of memory: {method} explained in chunks of {scores['batch_size']} image(s) after {backoffs} halvings", flush=True)
        if method == "integrated_gradients":
            scores["ig_batch_size"] = ig_batch
        if method.startswith("gradcam"):
            scores["cam_size"] = layer.size
        metrics[method] = {k: round(v, 6) if isinstance(v, float) else v for k, v in scores.items()}
        arrays[method] = maps.astype(np.float16)  # compact; [0, 1] maps lose nothing that matters
    return metrics, arrays
