import numpy as np
import pytest
import torch

from resomap.core.config import EXPLAIN_METHODS, ExplainParams
from resomap.data.prepared import load_prepared
from resomap.explain import explain_cell as explain_cell_module
from resomap.explain.explain_cell import explain_cell, select_images
from resomap.explain.methods import explain_batch, select_cam_layer
from resomap.explain.scores import localisation
from resomap.models.registry import build_model

METHODS = ["gradcam", "integrated_gradients", "saliency"]
SCORES = {"deletion_auc", "insertion_auc", "pointing_game", "energy_in_mask", "sparseness",
          "randomization_similarity", "seconds_per_image", "oom_backoffs", "batch_size"}


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


def planted_cell():
    """A small trained-looking model and 8 images, explained 8 at a time."""
    torch.manual_seed(0)
    model = build_model("simple_cnn", 10).eval()
    x = torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        targets = model(x).argmax(1).tolist()
    layer = select_cam_layer(model, "simple_cnn", 16, 4, torch.device("cpu"))
    return model, x, targets, layer, ExplainParams(num_images=8, ig_steps=8, ig_batch_size=32, batch_size=8)


def out_of_memory_above(limit: int, calls: list[int]):
    """explain_batch as it is, but out of memory, as CUDA would be, for chunks of more than `limit` images."""
    def planted(model, method, x, targets, layer, **kwargs):
        calls.append(len(x))
        if len(x) > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory: {len(x)} images > {limit}")
        return explain_batch(model, method, x, targets, layer, **kwargs)

    return planted


@pytest.mark.parametrize("method", EXPLAIN_METHODS)
def test_out_of_memory_halves_the_image_chunk_of_every_method(monkeypatch, method):
    model, x, targets, layer, params = planted_cell()
    torch.manual_seed(1)
    expected, ig_expected, none = explain_cell_module.heatmaps(model, method, x, targets, layer, params)
    assert none == 0 and ig_expected == 32
    calls = []
    monkeypatch.setattr(explain_cell_module, "explain_batch", out_of_memory_above(2, calls))
    torch.manual_seed(1)
    maps, ig_batch, backoffs = explain_cell_module.heatmaps(model, method, x, targets, layer, params)
    assert calls == [8, 4, 2, 2, 2, 2] and backoffs == 2
    assert ig_batch == 8  # IG's chunk halves with the image chunk: 32 -> 16 -> 8 image-steps
    assert explain_cell_module.chunks(params, len(x), backoffs).images == 2
    np.testing.assert_array_equal(maps, expected)


def test_a_retry_draws_smoothgrad_noise_from_the_same_state():
    """Out of memory inside the forward, after SmoothGrad drew its noise: the retry draws it again."""
    model, x, targets, layer, params = planted_cell()
    torch.manual_seed(1)
    expected = explain_cell_module.heatmaps(model, "smoothgrad", x, targets, layer, params)[0]
    forward = model.forward

    def small_forwards_only(batch):
        if len(batch) > 16:  # SmoothGrad forwards 8 noisy copies per image: chunks of 2 images fit
            raise torch.OutOfMemoryError(f"CUDA out of memory: batch {len(batch)}")
        return forward(batch)

    model.forward = small_forwards_only
    torch.manual_seed(1)
    maps, _, backoffs = explain_cell_module.heatmaps(model, "smoothgrad", x, targets, layer, params)
    assert backoffs == 2
    np.testing.assert_array_equal(maps, expected)
    after_backoff = torch.rand(1)
    model.forward = forward
    torch.manual_seed(1)
    explain_cell_module.heatmaps(model, "smoothgrad", x, targets, layer, params)
    assert torch.equal(torch.rand(1), after_backoff), "the random state after a back-off is the one a run without it leaves"


@pytest.mark.parametrize("method", EXPLAIN_METHODS)
def test_the_warm_up_changes_no_map(method):
    model, x, targets, layer, params = planted_cell()
    torch.manual_seed(1)
    expected = explain_cell_module.heatmaps(model, method, x, targets, layer, params)[0]
    torch.manual_seed(1)
    assert explain_cell_module.warm_up(model, method, x, targets, layer, params) == 0
    np.testing.assert_array_equal(explain_cell_module.heatmaps(model, method, x, targets, layer, params)[0], expected)
    if method == "smoothgrad":  # the check can fail: an untimed call that kept its random draws would move the maps
        torch.manual_seed(1)
        explain_cell_module.heatmaps(model, method, x[:1], targets[:1], layer, params)
        assert not np.array_equal(explain_cell_module.heatmaps(model, method, x, targets, layer, params)[0], expected)


def test_explain_cell_warms_up_untimed_and_backs_off_to_the_same_maps(tiny_synthetic, monkeypatch):
    test = load_prepared(tiny_synthetic, ("test",)).splits["test"]
    params = ExplainParams(num_images=4, methods=["gradcam", "smoothgrad"], ig_steps=8, deletion_steps=4, batch_size=4)

    def run(explain_batch_as):
        monkeypatch.setattr(explain_cell_module, "explain_batch", explain_batch_as)
        torch.manual_seed(0)
        return explain_cell(build_model("simple_cnn", 10), "simple_cnn", test, 10, params, torch.device("cpu"))

    calls = []
    metrics, arrays = run(out_of_memory_above(4, calls))
    assert calls == [1, 4, 4, 1, 4, 4]  # per method: the one-image warm-up, the timed chunk, the twin's
    assert metrics["gradcam"]["batch_size"] == 4 and metrics["gradcam"]["oom_backoffs"] == 0
    calls.clear()
    backed_off, backed_off_arrays = run(out_of_memory_above(2, calls))
    assert calls == [1, 4, 2, 2, 2, 2] * 2  # warm-up; 4 fails, two of 2; the twin starts at 2
    assert backed_off["smoothgrad"]["oom_backoffs"] == 1 and backed_off["smoothgrad"]["batch_size"] == 2
    for method in params.methods:
        np.testing.assert_array_equal(backed_off_arrays[method], arrays[method])
