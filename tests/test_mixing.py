"""MixUp and CutMix: timm's semantics (one draw per batch, the flipped batch as partner, CutMix's
lambda from its clipped box), seeded draws, and a batch that mixes alike however it is split."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from resomap.core.config import TrainParams
from resomap.data.mixing import Mix, cutmix_box, draw_mix, mix_images, mix_targets, partner_rows


def params(**changes) -> TrainParams:
    return dataclasses.replace(TrainParams(), **changes)


def draws(train: TrainParams, count: int = 50, seed: int = 0, side: int = 32) -> list[Mix | None]:
    generator = torch.Generator().manual_seed(seed)
    return [draw_mix(train, side, side, generator) for _ in range(count)]


def test_mixing_off_draws_nothing():
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    assert draw_mix(params(), 32, 32, generator) is None
    assert torch.equal(generator.get_state(), state), "the default study's random stream must not move"


def test_draws_are_reproducible_from_the_seeded_generator():
    train = params(mixup_alpha=0.2, cutmix_alpha=1.0)
    assert draws(train) == draws(train)
    assert draws(train) != draws(train, seed=1)


def test_mixup_and_cutmix_are_switched_by_their_probabilities():
    both = draws(params(mixup_alpha=0.2, cutmix_alpha=1.0, mix_switch_prob=0.5), count=400)
    cutmix_share = sum(m.box is not None for m in both) / len(both)
    assert 0.4 < cutmix_share < 0.6
    assert all(m.box is None for m in draws(params(mixup_alpha=0.2)))
    assert all(m.box is not None for m in draws(params(cutmix_alpha=1.0)))
    assert all(m is None for m in draws(params(mixup_alpha=0.2, mix_prob=0.0)))
    half = draws(params(mixup_alpha=0.2, mix_prob=0.5), count=400)
    assert 0.4 < sum(m is None for m in half) / len(half) < 0.6


def test_cutmix_lambda_is_the_share_its_clipped_box_leaves():
    side = 32
    for mix in draws(params(cutmix_alpha=1.0), count=200, side=side):
        top, bottom, left, right = mix.box
        assert 0 <= top <= bottom <= side and 0 <= left <= right <= side
        assert mix.lam == pytest.approx(1 - (bottom - top) * (right - left) / side**2)
    # a box centred on a corner is clipped: its lambda is above the drawn one
    class Corner:
        def integers(self, low, high):
            return 0

    top, bottom, left, right = cutmix_box(0.75, side, side, Corner())  # sides of 16 around (0, 0)
    assert (top, bottom, left, right) == (0, 8, 0, 8)


def test_cutmix_box_matches_timms_rand_bbox():
    """timm's rand_bbox (margin 0) with the same numpy draws."""
    lam, height, width = 0.37, 24, 40
    rng = np.random.default_rng(5)
    cy, cx = rng.integers(0, height), rng.integers(0, width)
    ratio = np.sqrt(1 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    expected = (np.clip(cy - cut_h // 2, 0, height), np.clip(cy + cut_h // 2, 0, height),
                np.clip(cx - cut_w // 2, 0, width), np.clip(cx + cut_w // 2, 0, width))
    assert cutmix_box(lam, height, width, np.random.default_rng(5)) == tuple(int(v) for v in expected)


def images(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 8, 8, generator=generator), torch.arange(n) % 4


def test_cutmix_pastes_the_partners_pixels_inside_the_box_only():
    x, _ = images()
    partners = x.flip(0)
    mixed = mix_images(x, partners, Mix(lam=1 - 12 / 64, box=(2, 5, 1, 5)))
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[2:5, 1:5] = True
    assert torch.equal(mixed[..., inside], partners[..., inside])
    assert torch.equal(mixed[..., ~inside], x[..., ~inside])


def test_mixup_blends_and_targets_sum_to_one():
    x, labels = images()
    partners = partner_rows((x, labels))
    mixed = mix_images(x, partners[0], Mix(lam=0.3))
    torch.testing.assert_close(mixed, 0.3 * x + 0.7 * x.flip(0))
    target, dominant = mix_targets(labels, partners[1], Mix(lam=0.3), classes=4)
    torch.testing.assert_close(target.sum(1), torch.ones(len(labels)))
    assert torch.equal(dominant, labels.flip(0)), "the partner's label weighs more at lam 0.3"
    assert target[0, labels[0]] == pytest.approx(0.3) and target[0, labels[-1]] == pytest.approx(0.7)
    _, dominant = mix_targets(labels, partners[1], Mix(lam=0.6), classes=4)
    assert torch.equal(dominant, labels)


def test_partners_are_the_whole_batch_flipped_whatever_the_split():
    """Pairing happens before sharding: rank r of 2 takes rows r, r + 2, ... of both the images'
    and the partners' rows, so image i is still mixed with image B-1-i."""
    ids = torch.arange(8)
    own, partner = ids, partner_rows((ids,))[0]
    for rank in range(2):
        shard_own, shard_partner = own[rank::2], partner[rank::2]
        assert torch.equal(shard_partner, 7 - shard_own)
