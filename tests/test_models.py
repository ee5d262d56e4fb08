import pytest
import torch

from resomap.core.errors import ResoMapError
from resomap.models.registry import build_model, cam_layer, check_model, model_spec, registered_names

REQUIRED = {
    "vgg11", "vgg13", "vgg16", "resnet18", "resnet34", "resnet50", "resnet101", "resnet8", "resnet20", "mobilenet_v2",
    "mobilenet_v2_075", "mobilenet_v3_small", "mobilenet_v3_large", "simple_cnn", "tiny_cnn",
}


def test_registry_has_the_promised_models():
    assert set(registered_names()) >= REQUIRED


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_model_runs_at_its_minimum_resolution(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7).eval()
    resolution = model_spec(name).min_resolution
    features = []
    handle = cam_layer(model, name).register_forward_hook(lambda m, i, o: features.append(o))
    with torch.no_grad():
        out = model(torch.randn(2, 3, resolution, resolution))
    handle.remove()
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    assert features and features[0].ndim == 4, "the Grad-CAM layer must yield a spatial feature map"


def test_any_torchvision_classifier_works_by_name():
    model = build_model("shufflenet_v2_x0_5", num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    assert isinstance(cam_layer(model, "shufflenet_v2_x0_5"), torch.nn.Conv2d)


def test_unknown_model_lists_close_names():
    with pytest.raises(ResoMapError, match="unknown model 'mobilenet_v3_smal'.*mobilenet_v3_small"):
        build_model("mobilenet_v3_smal", 10)


@pytest.mark.parametrize(
    "name, resolution, message",
    [
        ("resnet81", 32, r"unknown model 'resnet81' in models: did you mean .*resnet18"),
        ("vgg11", 16, r"resolution 16 is too small for vgg11: it needs at least 32; remove 16 from resolutions"),
    ],
)
def test_a_bad_cell_fails_before_the_model_is_built(name, resolution, message):
    with pytest.raises(ResoMapError, match=message):
        check_model(name, resolution)


def test_same_seed_same_initial_weights():
    torch.manual_seed(3)
    a = build_model("simple_cnn", 5).state_dict()
    torch.manual_seed(3)
    b = build_model("simple_cnn", 5).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
