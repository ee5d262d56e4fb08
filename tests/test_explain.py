import numpy as np
import torch
from torch import nn

from resomap.config import ExplainParams
from resomap.data.prepared import load_prepared
from resomap.explain import cam_size, explain_cell, localisation, select_images
from resomap.models import build_model


def test_selected_images_are_spread_over_classes_and_seeded():
    labels = np.repeat(np.arange(5), 20)
    picked = select_images(labels, 10, seed=0)
    assert sorted(np.bincount(labels[picked], minlength=5)) == [2] * 5
    assert (picked == select_images(labels, 10, seed=0)).all()
    assert (picked != select_images(labels, 10, seed=1)).any()


def test_localisation_scores_planted_maps():
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[:, :4, :4] = True
    on_object = np.zeros((8, 8), dtype=np.float32)
    on_object[1, 1] = 1.0
    off_object = np.zeros((8, 8), dtype=np.float32)
    off_object[6, 6] = 1.0
    scores = localisation(np.stack([on_object, off_object]), masks)
    assert scores == {"pointing_game": 0.5, "energy_in_mask": 0.5}


def test_cam_size_follows_the_layer_stride():
    model = build_model("resnet18", 10)
    assert cam_size(model, "resnet18", 64) == 2  # stride 32
    assert cam_size(build_model("simple_cnn", 10), "simple_cnn", 64) == 8  # three 2x pools


def test_explain_cell_writes_one_heatmap_per_image(tiny_synthetic):
    torch.manual_seed(0)
    test = load_prepared(tiny_synthetic, ("test",)).splits["test"]
    model = build_model("simple_cnn", 10)
    metrics, arrays = explain_cell(model, "simple_cnn", test, ExplainParams(num_images=4), torch.device("cpu"))
    maps = arrays["gradcam"]
    assert maps.shape == (4, 32, 32) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert (arrays["labels"] == test.labels[arrays["indices"]].numpy()).all()
    assert metrics["num_images"] == 4 and 0 <= metrics["gradcam.pointing_game"] <= 1
