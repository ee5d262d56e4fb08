"""Real DVC: a bad edit of the study (conf/config.yaml, composed into params.yaml) stops `dvc repro`
/ `dvc exp run` at the check stage, before DVC has deleted any output; the run-cache sees every param; an image folder's files are a dependency."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from PIL import Image

from helpers.study_repo import compose, dvc, file_digests, git_commit, make_study_repo, proc, ran, reproduced_study, set_params, tool_env


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> Path:
    return reproduced_study(tmp_path_factory.mktemp("guard") / "study")


def dvc_fails(repo: Path, *args: str) -> tuple[str, str]:
    """`dvc ARGS`, which must fail: (the stage error line, everything it printed)."""
    done = proc(["dvc", *args], repo, tool_env())
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    (line,) = [line for line in output.splitlines() if line.startswith("error: ")]
    return line, output


def append(repo: Path, text: str) -> None:
    """Add `text` to the end of conf/config.yaml, as a user would, and compose."""
    with (repo / "conf/config.yaml").open("a") as f:
        f.write(text)
    compose(repo)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: append(r, "trian:\n  epochs: 20\n"), "error: unknown key 'trian' in params.yaml: did you mean 'train'?"),
        (lambda r: set_params(r, {"seeds": [0, 0]}), "error: seeds lists 0 more than once: remove the duplicates"),
        (lambda r: set_params(r, {"resolutions": [24.0]}), "error: resolutions[0] must be an integer, got 24.0"),
        (lambda r: set_params(r, {"seeds": [-1]}), "error: seeds must be non-negative integers, got [-1]"),
        (lambda r: set_params(r, {"train.lr": float("nan")}), "error: train.lr must be a finite number, got nan"),
        (lambda r: set_params(r, {"models": ["x; touch PWNED; echo"]}), "error: models[0] 'x; touch PWNED; echo' is not a model name"),
    ],
    ids=["top-level typo", "duplicate seeds", "float resolution", "negative seed", "nan lr", "shell injection"],
)
def test_a_bad_edit_stops_at_check_and_every_output_stays(reproduced, tmp_path, edit, message):
    repo = tmp_path / "study"
    shutil.copytree(reproduced, repo, symlinks=True)
    before = file_digests(repo)
    edit(repo)
    line, output = dvc_fails(repo, "repro")
    assert line.startswith(message), output
    assert ran(output) == set() and "Running stage 'check'" in output
    assert file_digests(repo) == before  # reports/summary.json (cache: false) too: DVC never reached aggregate
    assert not (repo / "PWNED").exists()


def test_a_misspelt_key_added_with_plus_is_refused_by_dvc_exp_run(reproduced, tmp_path):
    repo = tmp_path / "study"
    shutil.copytree(reproduced, repo, symlinks=True)
    line, output = dvc_fails(repo, "exp", "run", "-S", "+resolutoin=512")
    assert line == "error: unknown key 'resolutoin' in params.yaml: did you mean 'resolution'?", output
    assert "Running stage 'prepare" not in output


def manifest_counts(repo: Path, resolution: int) -> dict:
    return json.loads((repo / f"data/prepared/{resolution}/manifest.json").read_text())["counts"]


def test_a_change_of_the_image_counts_reruns_prepare_and_changes_its_arrays(tmp_path):
    # DVC's run-cache key leaves out keys named `size`: under that name, 60 would have come back as the cached 40
    repo = make_study_repo(tmp_path / "study")
    repro_prepare = ["exp", "run", "prepare@16"]
    dvc(repo, *repro_prepare)
    assert manifest_counts(repo, 16)["train"] == 40
    output = dvc(repo, *repro_prepare, "-S", "data.images.train=60")
    assert "Running stage 'prepare@16'" in output and "is cached - skipping run" not in output
    assert manifest_counts(repo, 16)["train"] == 60
    output = dvc(repo, *repro_prepare, "-S", "data.images.train=40")
    assert "Stage 'prepare@16' is cached - skipping run" in output  # the run-cache serves the right arrays back
    assert manifest_counts(repo, 16)["train"] == 40


def photo(path: Path, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 16), (shade, 255 - shade, 0)).save(path)


def prepare_ran(repo: Path) -> set[str]:
    return {stage for stage in ran(dvc(repo, "repro", "prepare")) if stage.startswith("prepare@")}


def test_an_image_folder_outside_the_repo_is_a_dependency_of_prepare(tmp_path):
    folder = tmp_path / "photos"  # beside the repo, not in it
    for cls in ("cats", "dogs"):
        for i in range(4):
            photo(folder / cls / f"{i}.png", 40 * i)
    repo = make_study_repo(tmp_path / "study")
    set_params(repo, {"data.source": "imagefolder", "data.path": str(folder)})
    git_commit(repo, "a folder")
    every = {"prepare@16", "prepare@24"}
    assert prepare_ran(repo) == every
    assert prepare_ran(repo) == set()  # unchanged: check rescans (from its hash cache), prepare does not run
    photo(folder / "cats" / "new.png", 7)
    assert prepare_ran(repo) == every and manifest_counts(repo, 16)["train"] == 5
    (folder / "dogs" / "0.png").unlink()
    assert prepare_ran(repo) == every and sum(manifest_counts(repo, 24).values()) == 8
    photo(folder / "dogs" / "1.png", 250)  # edited in place
    assert prepare_ran(repo) == every
    (folder / "dogs" / "notes.txt").write_text("not an image: prepare ignores it, and so does the fingerprint")
    assert prepare_ran(repo) == set()
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    (dep,) = [d for d in lock["stages"]["prepare@16"]["deps"] if d["path"] == "data/source.json"]
    assert re.fullmatch(r"[0-9a-f]{32}", dep["md5"])
