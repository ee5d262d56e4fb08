"""MixUp and CutMix on the device, batched, with timm's Mixup semantics ("batch" mode): one draw
per batch, each image mixed with its mirror in the batch (image i with image B-1-i), CutMix's
lambda corrected to the share of the image its clipped box leaves.

The pairing is defined on the whole batch, before micro-batches and DDP shards split it: each
image's partner's rows (id, crop and flip, policy draws) are the batch's rows flipped, and they
travel beside the image's own, so every micro-batch and every rank gathers and augments its
images' partners itself.  A batch mixes the same whatever its split (out-of-memory back-off, any
process count), at the cost of augmenting each image twice when mixing is on."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from resomap.core.config import TrainParams


@dataclass(frozen=True)
class Mix:
    """One batch's draw: the weight of each image's own label, and CutMix's box (rows top:bottom,
    columns left:right taken from the partner); no box: MixUp."""

    lam: float
    box: tuple[int, int, int, int] | None = None


def is_mixing(train: TrainParams) -> bool:
    """Whether MixUp or CutMix is on; when not, nothing is drawn."""
    return train.mixup_alpha > 0 or train.cutmix_alpha > 0


def draw_mix(train: TrainParams, height: int, width: int, generator: torch.Generator) -> Mix | None:
    """The batch's draw, or None (mixing off, or this batch left unmixed by train.mix_prob).

    torch has no Beta sampler that takes a generator (torch.distributions draws from the global
    one), so one seed per batch is drawn from the cell's generator, on the CPU, and timm's numpy
    calls run on a numpy generator made from it: reproducible, and restored by resume with the
    cell's generator."""
    if not is_mixing(train):
        return None
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (), generator=generator)))
    if rng.random() >= train.mix_prob:
        return None
    cutmix = train.cutmix_alpha > 0 and (train.mixup_alpha == 0 or rng.random() < train.mix_switch_prob)
    alpha = train.cutmix_alpha if cutmix else train.mixup_alpha
    lam = float(rng.beta(alpha, alpha))
    if not cutmix:
        return Mix(lam)
    box = cutmix_box(lam, height, width, rng)
    top, bottom, left, right = box
    return Mix(1 - (bottom - top) * (right - left) / (height * width), box)


def cutmix_box(lam: float, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """timm's rand_bbox: a box of sides sqrt(1 - lam) times the image's around a uniform centre,
    clipped to the image (so its area can be smaller than 1 - lam: the caller corrects lam)."""
    ratio = math.sqrt(1 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, bottom, left, right


def partner_rows(rows: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Each image's partner's rows (ids and augmentation draws): the whole batch's, flipped."""
    return tuple(t.flip(0) for t in rows)


def mix_images(images: torch.Tensor, partners: torch.Tensor, mix: Mix) -> torch.Tensor:
    """MixUp: lam * image + (1 - lam) * partner; CutMix: the partner's pixels inside the box."""
    if mix.box is None:
        return images * mix.lam + partners * (1 - mix.lam)
    top, bottom, left, right = mix.box
    mixed = images.clone()
    mixed[:, :, top:bottom, left:right] = partners[:, :, top:bottom, left:right]
    return mixed


def mix_targets(labels: torch.Tensor, partner_labels: torch.Tensor, mix: Mix, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The soft target (N, classes), lam on the image's label and 1 - lam on its partner's, and
    the dominant label (the one with the larger weight; the image's own at 0.5) that train
    accuracy counts."""
    target = F.one_hot(labels, classes).float() * mix.lam + F.one_hot(partner_labels, classes).float() * (1 - mix.lam)
    return target, labels if mix.lam >= 0.5 else partner_labels
