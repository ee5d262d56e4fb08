"""Test-time augmentation: identity alone is plain inference, the views are what they say, the cost
is the number of forward passes, and `views` at a resolution too small to crop is refused."""

from __future__ import annotations

import pytest
import torch

from helpers.env import shipped
from resomap.core.config import EvaluateParams, ParamsError, parse_params, tta_zoomed_side, validate
from resomap.data.prepared import load_prepared
from resomap.evaluate.evaluation import evaluate_model
from resomap.evaluate.tta import VIEWS, predict_averaged, tta_metrics, zoom_centre_crop
from resomap.models.inference import predict_logits
from resomap.models.registry import build_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cell(tiny_synthetic):
    data = load_prepared(tiny_synthetic, ("test",))
    torch.manual_seed(0)
    return build_model("tiny_cnn", data.num_classes).eval(), data


def test_identity_alone_equals_plain_inference(cell):
    model, data = cell
    images = data.splits["test"].images
    plain = predict_logits(model, images, batch_size=16, device=CPU)
    assert torch.equal(predict_averaged(model, images, ("identity",), batch_size=16, device=CPU), plain.softmax(1))


def test_flip_averages_the_softmax_of_the_image_and_its_mirror(cell):
    model, data = cell
    images = data.splits["test"].images
    mirrored = predict_logits(model, images.flip(-1), batch_size=16, device=CPU).softmax(1)
    plain = predict_logits(model, images, batch_size=16, device=CPU).softmax(1)
    averaged = predict_averaged(model, images, ("identity", "hflip"), batch_size=16, device=CPU)
    assert torch.allclose(averaged, (plain + mirrored) / 2, atol=1e-6)


def test_the_zoom_view_keeps_the_side_and_crops_the_centre():
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    images[..., 0, :] = 255  # a bright top row: the crop cuts it away
    images[..., 6:10, 6:10] = 200  # a centre square: the crop keeps it
    zoomed = zoom_centre_crop(images)
    assert zoomed.shape == (2, 3, 16, 16) and zoomed.dtype == torch.float32
    assert zoomed[..., 0, :].max() < 0.5 and zoomed[..., 7:9, 7:9].min() > 0.7
    assert tta_zoomed_side(16) == 18
    assert torch.equal(VIEWS["vflip"](images), images.flip(-2))


def test_the_tta_entry_reports_its_views_and_cost_beside_plain_accuracy(cell):
    model, data = cell
    params = EvaluateParams(batch_size=16, tta="views")
    entry = tta_metrics(model, data, params, CPU)
    assert entry["views"] == ["identity", "hflip", "zoom_crop", "vflip"] and entry["latency_multiplier"] == 4
    assert 0 <= entry["accuracy"] <= 1 and set(entry) == {"views", "accuracy", "macro_f1", "ece", "latency_multiplier"}
    plain, _ = evaluate_model(model, data, params, CPU)
    assert "tta" not in plain  # evaluate_model stays plain: the stage adds the entry only when evaluate.tta is on


def params_with(resolutions, tta):
    raw = shipped()
    raw.update(resolutions=resolutions)
    raw["grid"] = {"resolutions": resolutions}
    raw["evaluate"]["tta"] = tta
    validate(parse_params(raw))


def test_views_at_a_resolution_too_small_to_crop_is_one_line_naming_the_key():
    with pytest.raises(ParamsError, match=r"^evaluate\.tta: views cannot resize-then-centre-crop at 8 px .*drop 8 from resolutions$"):
        params_with([8, 32], "views")
    params_with([8, 32], "flip")  # flips need no margin
    params_with([11, 32], "views")  # 11 px zooms to 13: a pixel cut on each side
