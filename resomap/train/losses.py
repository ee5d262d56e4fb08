"""The training objective: cross-entropy or focal loss, label smoothing, balanced class weights,
for hard labels or the soft targets MixUp and CutMix make.

Every form is a sum over the batch divided by its number of images, so a batch's loss does not
depend on how it is split into micro-batches or DDP shards.  With class weights this differs from
PyTorch's weighted mean (which divides by the batch's sum of weights): balanced weights average
1 over the train split, so the two agree on average, and only the sum form splits exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from resomap.core.config import TrainParams

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def balanced_weights(class_counts: torch.Tensor) -> torch.Tensor:
    """sklearn's `class_weight='balanced'`: n_samples / (n_classes * count_c); a class the split
    lacks gets weight 0 (it is never a target)."""
    counts = class_counts.double()
    weights = counts.sum() / (len(counts) * counts)
    return torch.where(counts > 0, weights, 0.0).float()


def class_weights_for(train: TrainParams, class_counts: torch.Tensor | None) -> torch.Tensor | None:
    """The weight per class train.class_weights asks for; None when every class weighs 1."""
    return balanced_weights(class_counts) if train.class_weights == "balanced" else None


def make_loss(train: TrainParams, class_counts: torch.Tensor | None, device: torch.device) -> Loss:
    """loss(logits, target): target is class indices (N,) or a distribution over classes (N, C)."""
    weights = class_weights_for(train, class_counts)
    weights = weights.to(device) if weights is not None else None
    if train.loss == "focal":
        return partial(focal_loss, gamma=train.focal_gamma, alpha=train.focal_alpha,
                       smoothing=train.label_smoothing, weights=weights)
    return partial(cross_entropy, smoothing=train.label_smoothing, weights=weights)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, *, smoothing: float, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:  # PyTorch's mean: the default study's loss, bit for bit
        return F.cross_entropy(logits, target, label_smoothing=smoothing)
    return F.cross_entropy(logits, target, weight=weights, label_smoothing=smoothing, reduction="sum") / len(logits)


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, *, gamma: float, alpha: float | None, smoothing: float,
    weights: torch.Tensor | None,
) -> torch.Tensor:
    """Lin et al.'s focal loss on the smoothed target q: -alpha * sum_c w_c q_c (1 - p_c)^gamma log p_c,
    so gamma = 0 is cross-entropy with the same smoothing and weights."""
    log_p = F.log_softmax(logits.float(), dim=1)
    q = smoothed(target, logits.shape[1], smoothing)
    # (1 - p)^gamma has an infinite slope at p = 1 when gamma < 1: keep it off exactly 0
    easiness = (-torch.expm1(log_p)).clamp_min(1e-12).pow(gamma)
    terms = -q * easiness * log_p
    if weights is not None:
        terms = terms * weights
    loss = terms.sum() / len(logits)
    return loss * alpha if alpha is not None else loss


def smoothed(target: torch.Tensor, classes: int, smoothing: float) -> torch.Tensor:
    """The target as a distribution (N, C), mixed with the uniform one by `smoothing` (as
    F.cross_entropy's label_smoothing does)."""
    q = F.one_hot(target, classes).float() if target.dim() == 1 else target.float()
    return q * (1 - smoothing) + smoothing / classes


def class_counts(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Images per class of a split's labels, classes it lacks included."""
    return torch.bincount(labels.cpu(), minlength=classes)
