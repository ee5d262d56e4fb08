import pytest
import yaml

from helpers.env import REPO
from resomap.core.config import ParamsError, load_params, parse_params, validate
from resomap.core.errors import ResoMapError


def shipped() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def check(raw: dict) -> None:
    validate(parse_params(raw))


def test_shipped_params_load_into_typed_objects():
    params = load_params(REPO / "params.yaml")
    assert params.train.optimizer in ("sgd", "adam", "adamw")
    assert isinstance(params.train.lr, float)
    assert params.data.source == "synthetic"
    assert len(params.models) >= 3 and len(params.resolutions) >= 3


def test_unknown_key_suggests_the_close_one():
    raw = shipped()
    raw["trian"] = raw.pop("train")
    with pytest.raises(ParamsError, match=r"unknown key 'trian'.*did you mean 'train'"):
        check(raw)


def test_nested_unknown_key_names_the_full_path():
    raw = shipped()
    raw["train"]["epohcs"] = 3
    with pytest.raises(ParamsError, match=r"'train\.epohcs'.*'train\.epochs'"):
        check(raw)


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("train", "lr", -0.1, r"train\.lr must be positive"),
        ("train", "epochs", 0, r"train\.epochs must be positive"),
        ("train", "epochs", 2.5, r"train\.epochs must be an integer"),
        ("train", "optimizer", "rmsprop", r"train\.optimizer must be one of sgd, adam, adamw"),
        ("train", "scheduler", "linear", r"train\.scheduler must be one of"),
        ("train", "amp", "fp8", r"train\.amp must be one of auto, bf16, fp16, off"),
        ("train", "grad_accum_steps", 3, r"multiple of train\.grad_accum_steps"),
        ("train", "channels_last", "yes", r"train\.channels_last must be true or false"),
        ("data", "source", "s3", r"data\.source must be one of synthetic, imagefolder, torchvision"),
        ("explain", "num_images", 0, r"explain\.num_images must be positive"),
        ("explain", "methods", ["lime"], r"explain\.methods\[0\] must be one of"),
    ],
)
def test_bad_values_name_the_key(section, key, value, message):
    raw = shipped()
    raw[section][key] = value
    with pytest.raises(ParamsError, match=message):
        check(raw)


def test_warmup_is_rejected_with_plateau():
    raw = shipped()
    raw["train"].update(scheduler="plateau", warmup_epochs=1)
    with pytest.raises(ParamsError, match="warmup_epochs is not used with scheduler plateau"):
        check(raw)


def test_imagefolder_needs_a_path():
    raw = shipped()
    raw["data"]["source"] = "imagefolder"
    with pytest.raises(ParamsError, match=r"data\.path is required"):
        check(raw)


@pytest.mark.parametrize(
    "grid, message",
    [
        ({"resolutions": []}, r"resolutions is empty"),
        ({"resolutions": [0]}, r"resolutions contains 0"),
        ({"seeds": [0, 0]}, r"seeds lists 0 more than once"),
        ({"resolutions": 64}, r"resolutions must be a list"),
    ],
)
def test_bad_grids_fail_before_any_work(grid, message):
    raw = shipped()
    raw.update(grid)
    with pytest.raises(ResoMapError, match=message):
        check(raw)


def test_missing_params_file_says_where_to_run(tmp_path):
    with pytest.raises(ParamsError, match="run from the repository root"):
        load_params(tmp_path / "params.yaml")
