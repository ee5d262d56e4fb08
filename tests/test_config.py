import pytest

from helpers.env import REPO, shipped
from resomap.core.config import ParamsError, load_params, parse_params, validate
from resomap.core.errors import ResoMapError


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


def _keys(tree: object, prefix: str = "") -> list[str]:
    """Every key of a nested mapping, dotted."""
    if not isinstance(tree, dict):
        return []
    return [k for key, value in tree.items() for k in (f"{prefix}{key}", *_keys(value, f"{prefix}{key}."))]


def _schema_keys(cls: type, prefix: str = "") -> list[str]:
    """Every key the params schema accepts, dotted."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        out.append(f"{prefix}{f.name}")
        if dataclasses.is_dataclass(hints[f.name]):
            out += _schema_keys(hints[f.name], f"{prefix}{f.name}.")
    return out


def test_no_param_key_is_one_that_dvcs_run_cache_leaves_out():
    # dvc/stage/cache.py hashes a stage's lock entry for the run-cache with every key named `size`
    # or `nfiles` dropped, at any depth: a param of that name would be invisible to it
    from resomap.core.config import Params

    keys = _keys(shipped()) + _schema_keys(Params)
    assert len(keys) > 60
    assert [k for k in keys if k.rsplit(".", 1)[-1] in ("size", "nfiles")] == []


@pytest.mark.parametrize(
    "section, key, value",
    [("train", "lr", float("nan")), ("profile", "min_seconds", float("inf")), ("aggregate", "tolerance", float("nan")),
     ("train", "grad_clip_norm", float("-inf"))],
)
def test_non_finite_numbers_are_refused(section, key, value):
    raw = shipped()
    raw[section][key] = value
    with pytest.raises(ParamsError, match=rf"^{section}\.{key} must be a finite number, got -?(nan|inf)"):
        check(raw)


def test_a_negative_explain_seed_is_refused():
    raw = shipped()
    raw["explain"]["seed"] = -1
    with pytest.raises(ParamsError, match=r"explain\.seed must not be negative, got -1"):
        check(raw)


@pytest.mark.parametrize("name", ["x; touch PWNED; echo", "$(id)", "a b", "resnet18'", "../vgg", "-rf", ""])
def test_a_model_name_that_is_not_a_plain_name_is_refused(name):
    raw = shipped()
    raw["models"] = [name]
    with pytest.raises(ParamsError, match=r"models\[0\] .* is not a model name: names are letters, digits and underscores"):
        check(raw)


def test_a_yaml_syntax_error_is_one_line_with_its_place(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("models: [tiny_cnn]\ntrain:\n  epochs: [3\n")
    with pytest.raises(ParamsError) as error:
        load_params(path)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{path} is not valid YAML (line ") and message.endswith("): fix the syntax there")


def test_resolution_runs_the_grid_at_one_size_and_is_validated():
    raw = shipped()
    assert raw["resolution"] is None and parse_params(raw).grid_resolutions == raw["resolutions"]
    raw["resolution"] = 512  # what `dvc exp run -S resolution=512` composes
    assert parse_params(raw).grid_resolutions == [512]
    raw["resolution"] = 0
    with pytest.raises(ParamsError, match=r"resolution must be a positive pixel size, or null for every size in resolutions; got 0"):
        check(raw)
    raw["resolution"] = [512]
    with pytest.raises(ParamsError, match=r"resolution must be an integer, got \[512\]"):
        check(raw)


def test_the_shipped_grid_is_the_composed_one():
    params = load_params(REPO / "params.yaml")
    assert params.grid is not None and params.grid.resolutions == params.grid_resolutions


def test_resolutions_that_are_not_integers_are_named():
    raw = shipped()
    raw["resolutions"] = [24.0]
    with pytest.raises(ParamsError, match=r"resolutions\[0\] must be an integer, got 24.0"):
        check(raw)
