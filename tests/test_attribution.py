"""Explanations on CPU: they must point where the model looks, and the scores must tell good from bad."""

import numpy as np
import pytest
import torch
from torch import nn

from resomap.core.config import EXPLAIN_METHODS
from resomap.explain.methods import CamLayer, explain_batch, select_cam_layer
from resomap.explain.scores import (
    cross_resolution_consistency,
    curve_auc,
    gini,
    localisation,
    perturbation_curves,
    spearman,
    top_fraction_iou,
)
from resomap.models.registry import build_model

CPU = torch.device("cpu")
SIDE = 16


class KeepTopLeft(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(x)
        mask[..., : SIDE // 2, : SIDE // 2] = 1.0
        return x * mask


class TopLeftOnly(nn.Module):
    """A planted model: positive evidence is read from the top-left quadrant alone. The mask is
    part of the layer explained, since Grad-CAM weighs that layer's whole map."""

    def __init__(self):
        super().__init__()
        conv = nn.Conv2d(3, 8, 3, padding=1)
        nn.init.uniform_(conv.weight, 0.0, 0.1)
        self.features = nn.Sequential(conv, nn.ReLU(), KeepTopLeft())
        self.head = nn.Linear(8, 2)
        with torch.no_grad():
            self.head.weight[0].fill_(1.0)  # class 0 grows with the quadrant's activation
            self.head.weight[1].zero_()
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)) * 4)


def planted():
    torch.manual_seed(0)
    model = TopLeftOnly().eval()
    x = torch.rand(6, 3, SIDE, SIDE)
    layer = CamLayer("features", model.features, SIDE)
    masks = np.zeros((6, SIDE, SIDE), dtype=bool)
    masks[:, : SIDE // 2 + 1, : SIDE // 2 + 1] = True  # the quadrant and the conv's one-pixel reach
    return model, x, layer, masks


@pytest.mark.parametrize("method", EXPLAIN_METHODS)
def test_heatmaps_of_a_planted_model_sit_in_its_quadrant(method):
    model, x, layer, masks = planted()
    maps = explain_batch(model, method, x, [0] * 6, layer, ig_batch=16, ig_steps=16)
    assert maps.shape == (6, SIDE, SIDE) and maps.dtype == np.float32
    assert maps.min() >= 0 and np.allclose(maps.max(axis=(1, 2)), 1.0)
    scores = localisation(maps, masks)
    assert scores["pointing_game"] == 1.0
    assert scores["energy_in_mask"] > 0.9


def test_gradcam_at_32_px_is_not_constant_with_the_resolution_aware_layer():
    torch.manual_seed(0)
    model = build_model("resnet18", 10).eval()
    x = torch.randn(4, 3, 32, 32)
    last = CamLayer("layer4", model.layer4, 1)
    flat = explain_batch(model, "gradcam", x, [0, 1, 2, 3], last, ig_batch=8, ig_steps=8)
    assert np.ptp(flat, axis=(1, 2)).max() < 1e-6, "layer4 is 1x1 at 32 px: its CAM is a constant"
    layer = select_cam_layer(model, "resnet18", 32, min_cam_size=7, device=CPU)
    assert layer.size >= 7 and layer.name != "layer4"
    with torch.no_grad():
        predicted = model(x).argmax(1).tolist()  # the stage explains the predicted class
    maps = explain_batch(model, "gradcam", x, predicted, layer, ig_batch=8, ig_steps=8)
    assert (np.ptp(maps, axis=(1, 2)) > 0.1).all()


def test_the_deepest_layer_that_fits_is_chosen():
    model = build_model("resnet18", 10)
    assert select_cam_layer(model, "resnet18", 224, 7, CPU).name == "layer4"  # 7x7 at 224 px
    assert select_cam_layer(model, "resnet18", 64, 7, CPU).name == "layer2"  # layer3 is 4x4
    vgg = select_cam_layer(build_model("vgg11", 10), "vgg11", 32, 7, CPU)
    assert vgg.size >= 7 and not isinstance(vgg.module, nn.Conv2d), "no conv whose output a ReLU overwrites"


def test_a_good_explanation_deletes_faster_than_a_random_one():
    model, x, layer, _ = planted()
    good = explain_batch(model, "saliency", x, [0] * 6, layer, ig_batch=16, ig_steps=16)
    rng = np.random.default_rng(0)
    random = rng.random(good.shape).astype(np.float32)
    deletion = {
        name: curve_auc(perturbation_curves(model, x, [0] * 6, maps, steps=16, batch_size=64, mode="deletion"))
        for name, maps in (("good", good), ("random", random))
    }
    insertion = {
        name: curve_auc(perturbation_curves(model, x, [0] * 6, maps, steps=16, batch_size=64, mode="insertion"))
        for name, maps in (("good", good), ("random", random))
    }
    assert (deletion["good"] < deletion["random"]).all()
    assert (insertion["good"] > insertion["random"]).all()


def test_a_randomised_model_explains_differently():
    model, x, layer, _ = planted()
    maps = explain_batch(model, "saliency", x, [0] * 6, layer, ig_batch=16, ig_steps=16)
    assert np.allclose(spearman(maps, maps), 1.0)
    torch.manual_seed(1)
    other = build_model("simple_cnn", 2).eval()
    other_layer = select_cam_layer(other, "simple_cnn", SIDE, 4, CPU)
    twin_maps = explain_batch(other, "saliency", x, [0] * 6, other_layer, ig_batch=16, ig_steps=16)
    assert spearman(maps, twin_maps).mean() < 0.3


def test_gini_orders_concentrated_above_spread():
    even = np.ones((1, 8, 8), dtype=np.float32)
    spike = np.zeros((1, 8, 8), dtype=np.float32)
    spike[0, 3, 3] = 1.0
    assert gini(even)[0] == pytest.approx(0.0)
    assert gini(spike)[0] == pytest.approx(1 - 1 / 64)


def test_cross_resolution_consistency_of_the_same_and_of_unrelated_maps():
    yy, xx = np.mgrid[0:64, 0:64]
    blob = np.exp(-((yy - 20) ** 2 + (xx - 40) ** 2) / 60.0)[None].astype(np.float32)
    small = blob[:, ::2, ::2]  # the same map at 32 px
    same = cross_resolution_consistency(blob, small, grid=32)
    assert same["spearman"] > 0.95 and same["top20_iou"] > 0.8
    moved = np.roll(small, 16, axis=2)
    other = cross_resolution_consistency(blob, moved, grid=32)
    assert other["top20_iou"] < 0.2 and other["spearman"] < same["spearman"]
    assert top_fraction_iou(blob, blob)[0] == 1.0


def test_consistency_matrix_covers_every_pair_on_the_coarsest_grid():
    from resomap.explain.scores import consistency_matrix

    yy, xx = np.mgrid[0:64, 0:64]
    blob = np.exp(-((yy - 20) ** 2 + (xx - 40) ** 2) / 60.0)[None].astype(np.float32)
    rows = consistency_matrix({64: blob, 16: blob[:, ::4, ::4], 32: blob[:, ::2, ::2]})
    assert [(r["resolution_a"], r["resolution_b"]) for r in rows] == [(16, 32), (16, 64), (32, 64)]
    assert all(r["spearman"] > 0.9 for r in rows)
