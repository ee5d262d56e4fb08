"""BatchNorm recalibration re-estimates the running statistics and nothing else: parameters stay
bit-identical, no label is read, the number of batches is bounded, the estimate is a cumulative
average and the same on every run."""

from __future__ import annotations

import torch
from torch import nn

from resomap.data.augment import normalize
from resomap.data.prepared import load_prepared
from resomap.evaluate.bn_recalibration import RECALIBRATION_SEED, batchnorm_layers, recalibrate_batchnorm
from resomap.models.heads import Head
from resomap.models.registry import build_model

CPU = torch.device("cpu")


def train_images(folder) -> torch.Tensor:
    return load_prepared(folder, ("train",)).splits["train"].images


def model_with_mlp_head(dropout: float = 0.5) -> nn.Module:
    """tiny_cnn with the MLP head: BatchNorm in the head too, after dropout that must stay off."""
    torch.manual_seed(0)
    return build_model("tiny_cnn", 10, Head("mlp", hidden=32, dropout=dropout)).eval()


def test_only_batchnorm_buffers_change_and_parameters_stay_bit_identical(tiny_synthetic):
    model = model_with_mlp_head()
    parameters = {name: p.clone() for name, p in model.named_parameters()}
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    layers = recalibrate_batchnorm(model, train_images(tiny_synthetic), batch_size=16, batches=3, device=CPU)
    assert layers == len(batchnorm_layers(model)) > 0
    assert all(torch.equal(parameters[name], p) for name, p in model.named_parameters())
    changed = {name for name, b in model.named_buffers() if not torch.equal(buffers[name], b)}
    assert changed and all(name.rsplit(".", 1)[1] in ("running_mean", "running_var", "num_batches_tracked") for name in changed)
    assert all(name in changed for name in buffers if name.endswith("running_mean"))
    assert not model.training and not any(m.training for m in model.modules())
    assert all(layer.momentum == 0.1 for layer in batchnorm_layers(model))  # restored


def test_the_batches_are_bounded_and_the_estimate_repeats(tiny_synthetic):
    images = train_images(tiny_synthetic)
    first, second = model_with_mlp_head(), model_with_mlp_head()
    recalibrate_batchnorm(first, images, batch_size=16, batches=3, device=CPU)
    recalibrate_batchnorm(second, images, batch_size=16, batches=3, device=CPU)
    assert all(layer.num_batches_tracked.item() == 3 for layer in batchnorm_layers(first))
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_the_estimate_is_the_cumulative_average_over_the_batches_drawn(tiny_synthetic):
    """One BatchNorm on the normalised images: after two equal batches its running mean is the mean
    of the 32 images drawn, not an exponential average that forgets the first batch."""
    images = train_images(tiny_synthetic)
    layer = nn.BatchNorm2d(3)
    recalibrate_batchnorm(layer, images, batch_size=16, batches=2, device=CPU)
    drawn = torch.randperm(len(images), generator=torch.Generator().manual_seed(RECALIBRATION_SEED))[:32]
    assert torch.allclose(layer.running_mean, normalize(images[drawn]).mean((0, 2, 3)), atol=1e-5)


def test_a_model_without_batchnorm_is_left_as_it_was(tiny_synthetic):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    assert recalibrate_batchnorm(model, train_images(tiny_synthetic), batch_size=16, batches=2, device=CPU) == 0
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())


def test_dropout_stays_off_while_the_statistics_are_estimated(tiny_synthetic):
    images = train_images(tiny_synthetic)
    with_dropout, without = model_with_mlp_head(0.5), model_with_mlp_head(0.0)
    recalibrate_batchnorm(with_dropout, images, batch_size=16, batches=2, device=CPU)
    recalibrate_batchnorm(without, images, batch_size=16, batches=2, device=CPU)
    assert all(torch.equal(a, b) for a, b in zip(with_dropout.state_dict().values(), without.state_dict().values()))
