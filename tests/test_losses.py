"""The training losses: focal loss against cross-entropy, label smoothing, balanced class weights,
hard and soft targets, and the params that choose them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import yaml

from helpers.env import REPO
from resomap.core.config import ParamsError, TrainParams, load_params, parse_params, validate
from resomap.data.prepared import load_prepared
from resomap.train.losses import balanced_weights, class_counts, focal_loss, make_loss

CPU = torch.device("cpu")


def logits_and_labels(n: int = 32, classes: int = 5):
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, classes, generator=generator) * 3, torch.randint(0, classes, (n,), generator=generator)


def test_balanced_weights_follow_sklearns_rule():
    counts = torch.tensor([10, 30, 60])  # 100 images, 3 classes: 100 / (3 * count)
    torch.testing.assert_close(balanced_weights(counts), torch.tensor([100 / 30, 100 / 90, 100 / 180]))
    assert torch.equal(class_counts(torch.tensor([0, 2, 2, 0, 2]), 4), torch.tensor([2, 0, 3, 0]))
    assert balanced_weights(torch.tensor([5, 0, 5]))[1] == 0, "a class the split lacks is never a target"
    weights = balanced_weights(counts)
    assert float((weights * counts).sum() / counts.sum()) == pytest.approx(1.0), "averages 1 over the images"


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_focal_loss_at_gamma_0_is_cross_entropy(smoothing, weighted):
    logits, labels = logits_and_labels()
    weights = torch.tensor([0.5, 1.0, 2.0, 1.5, 0.8]) if weighted else None
    focal = focal_loss(logits, labels, gamma=0.0, alpha=None, smoothing=smoothing, weights=weights)
    # weighted: the batch's weighted sum over its number of images (docs/params.md)
    reduction = "sum" if weighted else "mean"
    expected = F.cross_entropy(logits, labels, weight=weights, label_smoothing=smoothing, reduction=reduction)
    torch.testing.assert_close(focal, expected / len(labels) if weighted else expected)


def test_make_loss_builds_what_the_params_ask_for():
    logits, labels = logits_and_labels()
    counts = torch.tensor([10, 20, 30, 5, 35])
    plain = make_loss(TrainParams(label_smoothing=0.1), counts, CPU)
    assert torch.equal(plain(logits, labels), F.cross_entropy(logits, labels, label_smoothing=0.1)), "the default is untouched"
    balanced = make_loss(TrainParams(class_weights="balanced"), counts, CPU)
    expected = F.cross_entropy(logits, labels, weight=balanced_weights(counts), reduction="sum") / len(labels)
    torch.testing.assert_close(balanced(logits, labels), expected)
    focal = make_loss(TrainParams(loss="focal", focal_gamma=2.0, focal_alpha=0.25), counts, CPU)
    torch.testing.assert_close(focal(logits, labels), 0.25 * focal_loss(logits, labels, gamma=2.0, alpha=None, smoothing=0.0, weights=None))


def test_focal_loss_down_weights_easy_examples():
    easy = torch.tensor([[8.0, 0.0, 0.0]])  # p(label) ~ 0.999
    hard = torch.tensor([[0.0, 1.0, 0.0]])  # p(label) ~ 0.21
    label = torch.tensor([0])
    ratio = {}
    for name, logits in (("easy", easy), ("hard", hard)):
        focal = focal_loss(logits, label, gamma=2.0, alpha=None, smoothing=0.0, weights=None)
        ratio[name] = float(focal / F.cross_entropy(logits, label))
    assert ratio["easy"] < 1e-5 and ratio["hard"] > 0.5, ratio


@pytest.mark.parametrize("loss", ["cross_entropy", "focal"])
def test_a_soft_target_is_the_mix_of_its_hard_losses(loss):
    """Both losses are linear in the target: lam * loss(a) + (1 - lam) * loss(b), smoothing and weights included."""
    logits, labels = logits_and_labels()
    partners = labels.flip(0)
    train = TrainParams(loss=loss, label_smoothing=0.1, class_weights="balanced")
    fn = make_loss(train, torch.tensor([3, 6, 9, 12, 2]), CPU)
    lam = 0.3
    soft = F.one_hot(labels, 5).float() * lam + F.one_hot(partners, 5).float() * (1 - lam)
    torch.testing.assert_close(fn(logits, soft), lam * fn(logits, labels) + (1 - lam) * fn(logits, partners))


def test_the_loss_of_a_batch_does_not_depend_on_its_split():
    logits, labels = logits_and_labels()
    fn = make_loss(TrainParams(loss="focal", class_weights="balanced", label_smoothing=0.1), torch.tensor([3, 6, 9, 12, 2]), CPU)
    halves = sum(fn(logits[part], labels[part]) * 16 / 32 for part in (slice(0, 16), slice(16, 32)))
    torch.testing.assert_close(halves, fn(logits, labels))


def check(**train) -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"].update(train)
    validate(parse_params(raw))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mixup_alpha": -0.2}, r"train.mixup_alpha must not be negative \(0 turns it off"),
        ({"cutmix_alpha": -1}, r"train.cutmix_alpha must not be negative"),
        ({"mix_prob": 1.5}, r"train.mix_prob must be a probability in \[0, 1\], got 1.5"),
        ({"mix_switch_prob": -0.1}, r"train.mix_switch_prob must be a probability"),
        ({"ema_decay": 1.0}, r"train.ema_decay must be in \(0, 1\), e.g. 0.999, or null"),
        ({"ema_decay": 0}, r"train.ema_decay must be in \(0, 1\)"),
        ({"focal_gamma": -1}, r"train.focal_gamma must not be negative"),
        ({"loss": "focal", "focal_alpha": 0.0}, r"train.focal_alpha must be in \(0, 1\], or null"),
        ({"focal_alpha": 0.25}, r"train.focal_alpha is used only with train.loss: focal \(loss is cross_entropy\): set it to null"),
        ({"loss": "hinge"}, r"train.loss must be one of cross_entropy, focal; got 'hinge'"),
        ({"class_weights": "inverse"}, r"train.class_weights must be one of none, balanced"),
    ],
)
def test_bad_recipe_values_stop_with_one_line(changes, message):
    with pytest.raises(ParamsError, match=message):
        check(**changes)


def test_the_study_ships_the_recipe_off_and_good_values_pass():
    train = load_params(REPO / "params.yaml").train
    off = ("cross_entropy", "none", 0.0, 0.0, None)
    assert (train.loss, train.class_weights, train.mixup_alpha, train.cutmix_alpha, train.ema_decay) == off
    check(loss="focal", focal_gamma=0.0, focal_alpha=1.0, class_weights="balanced", mixup_alpha=0.2,
          cutmix_alpha=1.0, mix_prob=0.0, mix_switch_prob=1.0, ema_decay=0.999)


def test_the_train_metrics_name_each_class_weight(tiny_synthetic):
    from stages.train import class_weights_by_name

    data = load_prepared(tiny_synthetic, ("train",))
    counts = class_counts(data.splits["train"].labels, data.num_classes)
    weights = class_weights_by_name(TrainParams(class_weights="balanced"), data)
    assert list(weights) == data.classes
    assert weights[data.classes[0]] == pytest.approx(len(data.splits["train"]) / (data.num_classes * int(counts[0])))
    assert class_weights_by_name(TrainParams(), data) is None
