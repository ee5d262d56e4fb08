"""The pseudo-labelling phase: which pool images are kept and with what labels, the phase's inputs,
and how its epochs join the main fit's (kept only where they help)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from helpers.env import shipped
from helpers.fitting import CPU, run_fit
from resomap.core.config import ParamsError, PseudoLabel, TrainParams, parse_params, validate
from resomap.data.prepared import Split, load_prepared
from resomap.models.registry import build_model
from resomap.train.pseudo_label import combined, label_pool, phase_inputs
from resomap.train.records import EpochStats, FitResult


def pool_of(labels: list[int]) -> Split:
    """A pool of blank images with these (true) labels: the model's outputs are patched in."""
    images = torch.zeros(len(labels), 3, 4, 4, dtype=torch.uint8)
    return Split(images, torch.tensor(labels), None)


def test_kept_images_are_those_at_or_above_the_threshold_with_the_models_labels(monkeypatch):
    # confidences 0.9 / 0.5 / 0.95 / 0.7 for predicted classes 1 / 0 / 2 / 2
    probabilities = torch.tensor([[0.05, 0.9, 0.05], [0.5, 0.3, 0.2], [0.025, 0.025, 0.95], [0.2, 0.1, 0.7]])
    monkeypatch.setattr("resomap.train.pseudo_label.predict_logits", lambda *args, **kwargs: probabilities.log())
    pool = pool_of([1, 0, 0, 2])
    labels = label_pool(nn.Identity(), pool, 0.9, TrainParams(), CPU)
    assert labels.kept.labels.tolist() == [1, 2]
    assert labels.summary() == {"pool": 4, "kept": 2, "kept_share": 0.5, "threshold": 0.9, "kept_label_accuracy": 0.5}
    unknown = label_pool(nn.Identity(), pool_of([-1] * 4), 0.9, TrainParams(), CPU)
    assert unknown.kept_label_accuracy is None and len(unknown.kept) == 2, "an image folder's pool has no labels to score"
    assert len(label_pool(nn.Identity(), pool, 0.99, TrainParams(), CPU).kept) == 0


def test_the_phase_trains_on_train_plus_kept_at_a_lower_rate(tiny_synthetic):
    data = load_prepared(tiny_synthetic, ("train", "val", "test"))
    train = TrainParams(epochs=6, lr=0.05, warmup_epochs=1, pseudo_label=PseudoLabel(threshold=0.0, epochs=2, lr_factor=0.1))
    model = run_fit(data, dataclasses.replace(train, epochs=2, warmup_epochs=0))
    labels = label_pool(_loaded(data, model.best_state), data.splits["test"], 0.0, train, CPU)
    assert len(labels.kept) == len(data.splits["test"]), "threshold 0 keeps the whole pool"
    assert labels.kept_label_accuracy is not None and 0.0 <= labels.kept_label_accuracy <= 1.0
    phase_train, phase_data = phase_inputs(train, data, labels)
    assert (phase_train.epochs, phase_train.lr, phase_train.warmup_epochs, phase_train.pseudo_label) == (2, pytest.approx(0.005), 0, None)
    assert len(phase_data.splits["train"]) == len(data.splits["train"]) + len(data.splits["test"])
    assert torch.equal(phase_data.splits["val"].labels, data.splits["val"].labels), "validation stays as it was"


def _loaded(data, state) -> nn.Module:
    model = build_model("tiny_cnn", data.num_classes)
    model.load_state_dict(state)
    return model


def history(*accuracies: float) -> list[EpochStats]:
    return [EpochStats(epoch=i, train_loss=1.0, train_accuracy=0.5, val_loss=1.0, val_accuracy=a, lr=0.1,
                       epoch_seconds=1.0, images_per_s=1.0, resolution=32) for i, a in enumerate(accuracies, start=1)]


@pytest.mark.parametrize(("phase_accuracies", "best_epoch", "from_phase"), [((0.5, 0.7), 5, True), ((0.5, 0.55), 2, False)])
def test_the_phase_is_kept_only_where_it_beats_the_main_fit(phase_accuracies, best_epoch, from_phase):
    main = FitResult(best_state={"w": torch.zeros(1)}, best_epoch=2, history=history(0.4, 0.6, 0.5))
    phase = FitResult(best_state={"w": torch.ones(1)}, best_epoch=2, history=history(*phase_accuracies))
    both = combined(main, phase, TrainParams())
    assert both.best_epoch == best_epoch and bool(both.best_state["w"]) == from_phase
    assert [stats.epoch for stats in both.history] == [1, 2, 3, 4, 5], "the phase's epochs follow the main fit's"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, r"^train.pseudo_label needs an unlabeled pool: set data.images.unlabeled \(e.g. 1500\)"),
        ({"source": "imagefolder", "path": "/data"}, r"^train.pseudo_label needs an unlabeled pool: set data.unlabeled_path"),
        ({"source": "torchvision", "path": "/data", "name": "CIFAR10"}, r"^train.pseudo_label needs an unlabeled pool: torchvision sources"),
        ({"unlabeled_path": "/pool"}, r"^data.unlabeled_path is for data.source: imagefolder \(source is synthetic\)"),
    ],
)
def test_a_phase_without_a_pool_is_a_one_line_error(data, message):
    raw = shipped()
    raw["data"].update(data)
    raw["train"]["pseudo_label"] = {"threshold": 0.9, "epochs": 3, "lr_factor": 0.1}
    with pytest.raises(ParamsError, match=message):
        validate(parse_params(raw))


@pytest.mark.parametrize(
    ("pseudo_label", "message"),
    [({"threshold": 0.0}, r"threshold must be a confidence in \(0, 1\]"), ({"epochs": 0}, r"epochs must be positive"),
     ({"lr_factor": 2.0}, r"lr_factor must be in \(0, 1\]")],
)
def test_bad_phase_values_name_the_key(pseudo_label, message):
    raw = shipped()
    raw["data"]["images"]["unlabeled"] = 100
    raw["train"]["pseudo_label"] = pseudo_label
    with pytest.raises(ParamsError, match=rf"^train.pseudo_label.{message}"):
        validate(parse_params(raw))
