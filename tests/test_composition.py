"""conf/config.yaml → params.yaml: the committed file is conf/'s composition, `resolution` sets the
grid, and a stale or hand-edited params.yaml is refused, never overwritten (tools.compose runs
DVC's own composition, in a subprocess as under `dvc exp run`)."""

from __future__ import annotations

import configparser

import pytest
import yaml

from helpers.env import REPO
from helpers.study_repo import compose, shipped_params, tool_env
from helpers.study_repo import proc as run_unchecked
from resomap.core.composition import CompositionError, check_composed


def composed(folder) -> dict:
    return yaml.safe_load((folder / "params.yaml").read_text())


def compose_fails(folder, *overrides: str) -> str:
    done = run_unchecked(["python", "-m", "tools.compose", *overrides], folder, tool_env(PYTHONPATH=str(REPO)))
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    return line


def test_the_committed_params_yaml_is_the_composition_of_conf(tmp_path):
    folder = shipped_params(tmp_path)  # composes the copied conf/ again
    assert (folder / "params.yaml").read_text() == (REPO / "params.yaml").read_text()
    check_composed(REPO)


def test_dvc_composes_with_the_settings_tools_compose_uses():
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc/config")
    assert dict(config["hydra"]) == {"enabled": "true"}  # DVC's defaults: conf/, config.yaml, plugins at the root


def test_one_resolution_replaces_the_grid_and_the_stamp_holds(tmp_path):
    folder = shipped_params(tmp_path)
    compose(folder, "resolution=512")
    values = composed(folder)
    assert values["resolution"] == 512 and values["grid"] == {"resolutions": [512], "finetune": {}}
    assert values["resolutions"] == composed(REPO)["resolutions"]  # the list itself is left alone
    check_composed(folder)
    compose(folder, "resolutions=[24,48]")
    grid = composed(folder)["grid"]
    assert grid["resolutions"] == [24, 48]
    assert grid["finetune"]["resnet8-24to48-0"] == {"model": "resnet8", "from": 24, "to": 48, "seed": 0}  # finetune.pairs: next
    assert len(grid["finetune"]) == len(composed(REPO)["models"])


def test_a_conf_edit_that_was_not_composed_is_refused(tmp_path):
    folder = shipped_params(tmp_path)
    conf = folder / "conf/config.yaml"
    conf.write_text(conf.read_text().replace("epochs: 12", "epochs: 13"))
    with pytest.raises(CompositionError, match=r"^conf/ changed since params.yaml was composed from it, so dvc repro "
                                               r"would ignore the edit: run `python -m tools.compose` first"):
        check_composed(folder)
    compose(folder)
    check_composed(folder)
    assert composed(folder)["train"]["epochs"] == 13


def test_a_hand_edit_is_refused_and_never_overwritten(tmp_path):
    folder = shipped_params(tmp_path)
    params = folder / "params.yaml"
    params.write_text(params.read_text().replace("epochs: 12", "epochs: 13"))
    edited = params.read_bytes()
    with pytest.raises(CompositionError, match=r"^params.yaml is not what conf/config.yaml composed \(edited by hand\?\)"):
        check_composed(folder)
    line = compose_fails(folder)
    assert line.startswith("error: params.yaml is not what conf/config.yaml composed (edited by hand?), and composing "
                           "would overwrite it: make the edit in conf/config.yaml"), line
    assert params.read_bytes() == edited


def test_a_params_yaml_without_a_stamp_counts_as_hand_written(tmp_path):
    folder = shipped_params(tmp_path)
    values = composed(folder)
    del values["composed"]
    (folder / "params.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(CompositionError, match="edited by hand"):
        check_composed(folder)


def test_an_override_of_a_key_conf_lacks_is_one_line(tmp_path):
    folder = shipped_params(tmp_path)
    line = compose_fails(folder, "resolutoin=512")
    assert line == "error: composing conf/config.yaml failed: Could not override 'resolutoin'.", line
