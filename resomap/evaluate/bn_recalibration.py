"""BatchNorm recalibration (evaluate.bn_recalibration): a network trained at one resolution sees
other activation statistics at another (FixRes, Touvron et al. 2019), so before testing there its
BatchNorm running means and variances are re-estimated on train images at the test resolution.
No label is read and no weight changes; the estimate is a cumulative average (momentum None, as
timm and FixRes do) over a bounded number of batches.
"""

from __future__ import annotations

import torch
from torch import nn

from resomap.data.augment import normalize

RECALIBRATION_SEED = 0  # which train images: a fixed draw, so the estimate is the same on every rerun


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, *, batch_size: int, batches: int, device: torch.device) -> int:
    """Re-estimate every BatchNorm layer's running statistics from at most `batches` batches of
    `images` (uint8 (N, 3, R, R), drawn in a seeded order so the batches mix classes). Only the
    BatchNorm layers run in training mode (dropout stays off). Returns the number of layers
    re-estimated: 0 for a model without BatchNorm, which is then left as it was."""
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    model.eval()
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the batches seen
        layer.train()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(RECALIBRATION_SEED))
    for start in range(0, min(len(images), batches * batch_size), batch_size):
        indices = order[start : start + batch_size]
        if len(indices) < 2:  # BatchNorm in training mode needs two values per channel
            break
        model(normalize(images[indices].to(device)))
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    model.eval()
    return len(layers)
