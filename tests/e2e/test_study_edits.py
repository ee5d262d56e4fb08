"""Real DVC with its Hydra composition: the study is edited in conf/config.yaml, and an edit there
(or a hand edit of the composed params.yaml) is never silently ignored by `dvc repro` or lost by
`dvc exp run`; `dvc exp run -S resolution=N` runs the grid at N px, and a sweep queues one
experiment per size."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from helpers.study_repo import compose, dvc, file_digests, proc, ran, repro, reproduced_study, stale, tool_env

COMPOSE_HINT = "run `python -m tools.compose` first (dvc exp run composes by itself)"
HAND_EDIT = "params.yaml is not what conf/config.yaml composed (edited by hand?), and composing would overwrite it"


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> Path:
    return reproduced_study(tmp_path_factory.mktemp("edits") / "study")


@pytest.fixture
def study(reproduced, tmp_path) -> Path:
    repo = tmp_path / "study"
    shutil.copytree(reproduced, repo, symlinks=True)
    return repo


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} in {path}"
    path.write_text(text.replace(old, new))


def params(repo: Path) -> dict:
    return yaml.safe_load((repo / "params.yaml").read_text())


def trained_epochs(repo: Path) -> int:
    return json.loads((repo / "metrics/train/tiny_cnn/16/0/metrics.json").read_text())["epochs_run"]


def test_an_edit_in_conf_stops_dvc_repro_until_composed_and_dvc_exp_run_takes_it(study):
    before = file_digests(study)
    edit(study / "conf/config.yaml", "epochs: 1\n", "epochs: 2\n")
    done = proc(["dvc", "repro"], study, tool_env())
    output = done.stdout + done.stderr
    assert done.returncode != 0 and f"so dvc repro would ignore the edit: {COMPOSE_HINT}" in output, output
    assert ran(output) == set() and file_digests(study) == before
    output = dvc(study, "exp", "run")  # composes conf/ first
    assert {"train@tiny_cnn-16-0", "train@tiny_cnn-24-0"} <= ran(output), output
    assert params(study)["train"]["epochs"] == 2 and trained_epochs(study) == 2
    assert stale(study) == set()


def test_compose_then_dvc_repro_takes_an_edit_in_conf(study):
    edit(study / "conf/config.yaml", "epochs: 1\n", "epochs: 2\n")
    compose(study)
    assert {"train@tiny_cnn-16-0", "train@tiny_cnn-24-0"} <= repro(study)
    assert trained_epochs(study) == 2


def test_a_hand_edit_of_params_yaml_is_neither_run_nor_overwritten(study):
    before = file_digests(study)
    edit(study / "params.yaml", "epochs: 1\n", "epochs: 2\n")
    edited = (study / "params.yaml").read_bytes()
    for command in (["repro"], ["exp", "run"]):
        done = proc(["dvc", *command], study, tool_env())
        output = done.stdout + done.stderr
        assert done.returncode != 0 and HAND_EDIT in output, output
        assert "Running stage 'prepare" not in output
        assert (study / "params.yaml").read_bytes() == edited  # the edit is still there to move
    assert file_digests(study) == before


def test_dash_s_resolution_runs_the_whole_grid_at_that_size_and_shows_in_exp_show(study):
    output = dvc(study, "exp", "run", "-S", "resolution=32")
    assert ran(output) == {"prepare@32", "train@tiny_cnn-32-0", "evaluate@tiny_cnn-32-0", "profile@tiny_cnn-32",
                           "explain@tiny_cnn-32-0", "surface@tiny_cnn-32-0", "aggregate"}, output
    assert params(study)["resolution"] == 32 and params(study)["grid"] == {"resolutions": [32], "finetune": {}}
    assert json.loads((study / "reports/summary.json").read_text())["tiny_cnn"]["best_resolution"] == 32
    shown = json.loads(dvc(study, "exp", "show", "--json"))
    (baseline,) = [row for row in shown if row["rev"] == "workspace"]
    assert baseline["data"]["params"]["params.yaml"]["data"]["resolution"] == 32
    # a list still sets the grid, and the override lasts one experiment: the next composes conf/ as written
    output = dvc(study, "exp", "run", "-S", "resolutions=[16]")
    assert params(study)["resolution"] is None and params(study)["grid"] == {"resolutions": [16], "finetune": {}}
    # the 16 px cell was cached; its surface now tests at 16 px only
    assert ran(output) == {"surface@tiny_cnn-16-0", "aggregate"}


def test_a_sweep_over_resolution_queues_one_experiment_per_size(study):
    output = dvc(study, "exp", "run", "-S", "resolution=16,24,32", "--queue")
    assert output.count("Queued experiment") == 3, output
    queued = {}
    for row in json.loads(dvc(study, "exp", "show", "--json")):
        for experiment in row.get("experiments") or []:
            for rev in experiment["revs"]:
                values = rev["data"]["params"]["params.yaml"]["data"]
                queued[values["resolution"]] = values["grid"]["resolutions"]
    assert queued == {16: [16], 24: [24], 32: [32]}
    dvc(study, "queue", "remove", "--all")
