"""How good an explanation is, in numbers that compare across resolutions.

Every score is computed on fractions of the image (pixels ranked by relevance, steps of the
pixel fraction, maps resampled to a common grid), never on raw pixel counts, so 32 px and 256 px
cells are on one scale.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import nn


@torch.no_grad()
def perturbation_curves(
    model: nn.Module, x: torch.Tensor, targets: list[int], maps: np.ndarray, *, steps: int, batch_size: int, mode: str
) -> np.ndarray:
    """Target-class probability as the most relevant pixels are removed (`deletion`) from the
    image, or inserted (`insertion`) into a blank one, at fractions 0, 1/steps, ..., 1.
    Removed pixels take the normalised mean (0). Returns (K, steps + 1)."""
    count, _, height, width = x.shape
    relevance = torch.from_numpy(maps).to(x.device).flatten(1)
    order = torch.argsort(-relevance, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(height * width, device=x.device).expand(count, -1))
    cut = [round(f * height * width) for f in np.linspace(0.0, 1.0, steps + 1)]
    top = torch.stack([(ranks < c).view(count, 1, height, width) for c in cut], dim=1)  # (K, S, 1, H, W)
    images = x[:, None].expand(-1, steps + 1, -1, -1, -1)
    images = torch.where(top, 0.0, images) if mode == "deletion" else torch.where(top, images, 0.0)
    images = images.reshape(-1, *x.shape[1:])
    target = torch.tensor(targets, device=x.device).repeat_interleave(steps + 1)
    probs = torch.cat([model(chunk).float().softmax(1) for chunk in images.split(batch_size)])
    return probs[torch.arange(len(target)), target].view(count, steps + 1).cpu().numpy()


def curve_auc(curves: np.ndarray) -> np.ndarray:
    """Area under each curve over the pixel fraction [0, 1] (trapezoid rule)."""
    return np.trapezoid(curves, np.linspace(0.0, 1.0, curves.shape[1]), axis=1)


def localisation(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """pointing_game: the hottest pixel lies on the object; energy_in_mask: share of relevance on it."""
    flat, inside = maps.reshape(len(maps), -1), masks.reshape(len(masks), -1)
    hits = inside[np.arange(len(flat)), flat.argmax(1)]
    energy = (flat * inside).sum(1) / np.maximum(flat.sum(1), 1e-12)
    return {"pointing_game": float(hits.mean()), "energy_in_mask": float(energy.mean())}


def gini(maps: np.ndarray) -> np.ndarray:
    """Sparseness per map: 0 when relevance is spread evenly, towards 1 when it sits on few pixels."""
    values = np.sort(maps.reshape(len(maps), -1), axis=1)
    n = values.shape[1]
    weights = 2 * np.arange(1, n + 1) - n - 1
    return (values * weights).sum(1) / np.maximum(n * values.sum(1), 1e-12)


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rank correlation of each pair of maps (ties get their average rank)."""
    ra = rankdata(a.reshape(len(a), -1), axis=1)
    rb = rankdata(b.reshape(len(b), -1), axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    denominator = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    return np.where(denominator > 0, (ra * rb).sum(1) / np.maximum(denominator, 1e-12), 0.0)


def resample(maps: np.ndarray, size: int) -> np.ndarray:
    """(K, R, R) -> (K, size, size): bilinear, antialiased when shrinking."""
    tensor = torch.from_numpy(np.asarray(maps, dtype=np.float32))[:, None]
    return F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=size < maps.shape[-1]).squeeze(1).numpy()


def top_fraction_iou(a: np.ndarray, b: np.ndarray, fraction: float = 0.2) -> np.ndarray:
    """IoU of the top-`fraction` most relevant pixels of each pair of maps."""
    flat_a, flat_b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    k = max(1, round(fraction * flat_a.shape[1]))
    top_a = np.zeros(flat_a.shape, dtype=bool)
    top_b = np.zeros(flat_b.shape, dtype=bool)
    np.put_along_axis(top_a, np.argsort(-flat_a, axis=1, kind="stable")[:, :k], True, axis=1)
    np.put_along_axis(top_b, np.argsort(-flat_b, axis=1, kind="stable")[:, :k], True, axis=1)
    return (top_a & top_b).sum(1) / (top_a | top_b).sum(1)


def cross_resolution_consistency(maps_a: np.ndarray, maps_b: np.ndarray, grid: int) -> dict[str, float]:
    """How alike the same images' maps are at two resolutions, on a common `grid` x `grid`:
    mean Spearman correlation and mean top-20% IoU. Rows of maps_a and maps_b are the same images."""
    a, b = resample(maps_a, grid), resample(maps_b, grid)
    return {"spearman": float(spearman(a, b).mean()), "top20_iou": float(top_fraction_iou(a, b).mean())}


def consistency_matrix(maps_by_resolution: dict[int, np.ndarray]) -> list[dict]:
    """Every pair of resolutions of one model, method and seed: rows of
    {resolution_a, resolution_b, spearman, top20_iou}, compared on the smallest resolution's grid
    (upsampling the coarse map would invent detail). Input: each cell's heatmaps.npz[method]."""
    resolutions = sorted(maps_by_resolution)
    grid = resolutions[0]
    return [
        {"resolution_a": a, "resolution_b": b,
         **cross_resolution_consistency(maps_by_resolution[a], maps_by_resolution[b], grid)}
        for i, a in enumerate(resolutions) for b in resolutions[i + 1 :]
    ]
