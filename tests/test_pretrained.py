"""Starting weights and heads: torchvision's ImageNet weights read offline from a real torch hub
cache (a temp TORCH_HOME holding a state dict under torchvision's file name), the classifier
replaced for the data's classes (linear or the recipe's MLP), local weights through init_from,
head-only epochs (freeze_epochs), and one line for every file that is missing, unreadable or does
not fit."""

import copy

import pytest
import torch
import torchvision
from torch import nn

from helpers.env import shipped
from resomap.core.config import ParamsError, TrainParams, parse_params, validate
from resomap.core.errors import ResoMapError
from resomap.data.prepared import load_prepared
from resomap.models.heads import Head, classifier_name
from resomap.models.pretrained import imagenet_weights_file
from resomap.models.registry import build_model, check_starting_weights, initial_model
from resomap.train.fit import fit

MLP = Head("mlp", hidden=32, dropout=0.1)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache of our own: TORCH_HOME as a user would set it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def imagenet_file(name: str) -> tuple[dict, object]:
    """A model of torchvision's ImageNet shape with random weights, saved where torchvision keeps
    the real ones: the state dict and the file."""
    torch.manual_seed(1)
    state = torchvision.models.get_model(name, weights=None).state_dict()
    path = imagenet_weights_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state, path


def test_the_weights_file_is_torchvisions_name_in_the_hub_cache(hub):
    assert imagenet_weights_file("resnet18") == hub / "resnet18-f37072fd.pth"


def test_imagenet_weights_load_bit_identically_and_the_classifier_is_replaced(hub):
    state, _ = imagenet_file("mobilenet_v3_small")
    model = initial_model("mobilenet_v3_small", 10, Head(), pretrained="imagenet")
    loaded = model.state_dict()
    head = classifier_name(model)
    assert head == "classifier.3" and model.get_submodule(head).out_features == 10
    backbone = [key for key in state if not key.startswith(head + ".")]
    assert len(backbone) > 100 and all(torch.equal(loaded[key], state[key]) for key in backbone)
    assert model.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    # what evaluate, explain and profile build takes the trained weights as they are
    build_model("mobilenet_v3_small", 10, Head()).load_state_dict(loaded)


def test_the_mlp_head_is_the_recipes_and_its_weights_load_into_what_evaluate_builds(hub):
    imagenet_file("resnet18")
    model = initial_model("resnet18", 7, MLP, pretrained="imagenet")
    assert [type(layer) for layer in model.fc] == [nn.Dropout, nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Dropout, nn.Linear]
    assert (model.fc[1].in_features, model.fc[1].out_features, model.fc[5].out_features) == (512, 32, 7)
    rebuilt = build_model("resnet18", 7, MLP)
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(rebuilt.eval()(x), model.eval()(x))


def test_an_mlp_head_on_a_custom_model_from_scratch():
    model = build_model("tiny_cnn", 10, MLP)
    assert isinstance(model.classifier, nn.Sequential) and model.classifier[-1].out_features == 10
    assert model.eval()(torch.rand(3, 3, 16, 16)).shape == (3, 10)


def test_the_default_head_builds_exactly_what_was_built_before():
    torch.manual_seed(0)
    plain = build_model("resnet8", 10).state_dict()
    torch.manual_seed(0)
    started = initial_model("resnet8", 10, Head()).state_dict()
    assert plain.keys() == started.keys() and all(torch.equal(plain[key], started[key]) for key in plain)


def test_a_missing_weights_file_names_it_and_the_command_that_fetches_it(hub):
    with pytest.raises(ResoMapError) as error:
        check_starting_weights("resnet18", "imagenet", None)
    message = str(error.value)
    assert "\n" not in message
    assert f"{hub / 'resnet18-f37072fd.pth'} does not exist" in message
    assert "get_model_weights('resnet18').DEFAULT.get_state_dict()" in message


@pytest.mark.parametrize("model", ["tiny_cnn", "resnet8", "mobilenet_v2_075"])
def test_a_model_without_imagenet_weights_says_so(hub, model):
    with pytest.raises(ResoMapError, match=rf"{model} has no ImageNet weights .*train.pretrained: none.*train.init_from"):
        initial_model(model, 10, Head(), pretrained="imagenet")


def test_a_corrupt_weights_file_is_one_line(hub):
    _, path = imagenet_file("mobilenet_v3_small")
    path.write_bytes(path.read_bytes()[: 4096])
    with pytest.raises(ResoMapError, match=r"is not a readable state dict .*replace the file"):
        initial_model("mobilenet_v3_small", 10, Head(), pretrained="imagenet")


def test_init_from_loads_a_local_state_dict_bit_identically(tmp_path):
    torch.manual_seed(3)
    source = build_model("simple_cnn", 10)
    torch.save(source.state_dict(), tmp_path / "model.pt")
    started = initial_model("simple_cnn", 10, Head(), init_from=str(tmp_path / "model.pt"))
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), started.state_dict().values()))


def test_init_from_with_another_class_count_names_the_layer_and_both_shapes(tmp_path):
    torch.save(build_model("simple_cnn", 5).state_dict(), tmp_path / "five.pt")
    with pytest.raises(ResoMapError) as error:
        initial_model("simple_cnn", 10, Head(), init_from=str(tmp_path / "five.pt"))
    assert "layer classifier.weight has shape (5, 128) there but (10, 128) in the model" in str(error.value)


def test_init_from_with_another_architecture_names_a_layer_it_lacks(tmp_path):
    torch.save(build_model("tiny_cnn", 10).state_dict(), tmp_path / "tiny.pt")
    with pytest.raises(ResoMapError, match=r"train.init_from .* does not fit SmallCNN: it lacks features\.3\."):
        initial_model("simple_cnn", 10, Head(), init_from=str(tmp_path / "tiny.pt"))


def test_init_from_runs_no_code_from_the_file(tmp_path):
    torch.save({"weights": torch.zeros(1), "note": print}, tmp_path / "pickled.pt")
    with pytest.raises(ResoMapError, match=r"is not a readable state dict \(UnpicklingError\)"):
        initial_model("tiny_cnn", 10, Head(), init_from=str(tmp_path / "pickled.pt"))


def test_the_check_stage_refuses_a_missing_init_from_file(tmp_path):
    with pytest.raises(ResoMapError, match=r"train.init_from .*nowhere.pt does not exist: fix the path"):
        check_starting_weights("tiny_cnn", "none", str(tmp_path / "nowhere.pt"))
    check_starting_weights("tiny_cnn", "none", None)


@pytest.mark.parametrize("key, value, message", [
    ("pretrained", "timm", r"train\.pretrained must be one of none, imagenet"),
    ("head", "conv", r"train\.head must be one of linear, mlp"),
    ("head_hidden", 0, r"train\.head_hidden must be positive"),
    ("head_dropout", 1.0, r"train\.head_dropout must be in \[0, 1\)"),
    ("init_from", " ", r"train\.init_from is empty"),
])
def test_bad_starting_weights_params_name_the_key(key, value, message):
    raw = shipped()
    raw["train"][key] = value
    with pytest.raises(ParamsError, match=message):
        validate(parse_params(raw))


def test_freeze_epochs_train_the_classifier_alone_first(tiny_synthetic):
    data = load_prepared(tiny_synthetic)
    torch.manual_seed(0)
    model = build_model("tiny_cnn", data.num_classes, MLP)
    start = copy.deepcopy(model.state_dict())
    after = []
    train = TrainParams(epochs=2, batch_size=32, warmup_epochs=0, freeze_epochs=1, head="mlp")
    fit(model, data, train, seed=0, device=torch.device("cpu"), on_epoch=lambda _: after.append(copy.deepcopy(model.state_dict())))
    convs = [key for key, value in start.items() if key.startswith("features.") and value.ndim == 4]
    head = [key for key in start if key.startswith("classifier.") and key.endswith("weight")]
    assert convs and len(head) == 3  # two linear layers and the BatchNorm
    assert all(torch.equal(after[0][key], start[key]) for key in convs), "epoch 1 leaves the backbone's weights alone"
    assert all(not torch.equal(after[0][key], start[key]) for key in head), "epoch 1 trains the head"
    assert all(not torch.equal(after[1][key], after[0][key]) for key in convs), "epoch 2 trains everything"
    assert not torch.equal(after[0]["features.0.0.1.running_mean"], start["features.0.0.1.running_mean"]), "BatchNorm still follows the data"
    assert all(parameter.requires_grad for parameter in model.parameters())


def test_freeze_epochs_must_leave_an_epoch_for_the_backbone():
    raw = shipped()
    raw["train"]["freeze_epochs"] = raw["train"]["epochs"]
    with pytest.raises(ParamsError, match=r"train\.freeze_epochs \(12\) must be below train\.epochs \(12\)"):
        validate(parse_params(raw))
