import numpy as np
import torch

from resomap.core.config import ExplainParams
from resomap.data.prepared import load_prepared
from resomap.explain.explain_cell import explain_cell, select_images
from resomap.explain.scores import localisation
from resomap.models.registry import build_model

METHODS = ["gradcam", "integrated_gradients", "saliency"]
SCORES = {"deletion_auc", "insertion_auc", "pointing_game", "energy_in_mask", "sparseness",
          "randomization_similarity", "seconds_per_image"}


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
    assert localisation(np.stack([on_object, off_object]), masks) == {"pointing_game": 0.5, "energy_in_mask": 0.5}


def test_explain_cell_scores_every_method(tiny_synthetic):
    torch.manual_seed(0)
    test = load_prepared(tiny_synthetic, ("test",)).splits["test"]
    params = ExplainParams(num_images=4, methods=METHODS, ig_steps=8, deletion_steps=8)
    metrics, arrays = explain_cell(build_model("simple_cnn", 10), "simple_cnn", test, 10, params, torch.device("cpu"))
    assert metrics["num_images"] == 4 and metrics["cam_layer"].startswith("features")
    assert metrics["gradcam"]["cam_size"] >= 7
    for method in METHODS:
        assert set(metrics[method]) >= SCORES, method
        assert 0 <= metrics[method]["deletion_auc"] <= 1 and 0 <= metrics[method]["pointing_game"] <= 1
        assert -1 <= metrics[method]["randomization_similarity"] <= 1
        maps = arrays[method]
        assert maps.shape == (4, 32, 32) and maps.dtype == np.float16 and np.isfinite(maps).all()
    assert (arrays["labels"] == test.labels[arrays["indices"]].numpy()).all()
