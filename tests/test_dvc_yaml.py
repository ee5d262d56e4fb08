"""dvc.yaml must list, per stage, exactly the code the stage imports (DESIGN §3)."""

import json
import subprocess
import sys

import pytest
import yaml

from conftest import REPO

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def imported_project_files(module: str) -> set[str]:
    """Project .py files loaded by importing a stage script, from a fresh interpreter."""
    code = (
        f"import sys, json, importlib; importlib.import_module('{module}');"
        "print(json.dumps([m.__file__ for m in list(sys.modules.values()) if getattr(m, '__file__', None)]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    files = {str(__import__("pathlib").Path(f).resolve().relative_to(REPO)) for f in json.loads(out) if f.startswith(str(REPO))}
    return {f for f in files if f.startswith(("resomap/", "stages/"))}


def lazily_imported(stage: str) -> set[str]:
    """Modules a stage imports only for some params (prepare's data sources)."""
    if stage == "prepare":
        return {
            "resomap/data/synthetic.py",
            "resomap/data/imagefolder.py",
            "resomap/data/torchvision_source.py",
            "resomap/data/decode.py",
            "resomap/data/splits.py",
        }
    return set()


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_deps_are_exactly_the_imported_code(stage):
    declared = {d for d in STAGES[stage]["deps"] if d.endswith(".py")}
    assert imported_project_files(f"stages.{stage}") | lazily_imported(stage) == declared


def test_cell_stages_use_the_grid_axes_in_order():
    for stage in ("train", "evaluate", "explain"):
        assert list(STAGES[stage]["matrix"]) == ["model", "resolution", "seed"]
    assert list(STAGES["profile"]["matrix"]) == ["model", "resolution"]
    assert list(STAGES["prepare"]["matrix"]) == ["resolution"]


def test_cell_stages_never_declare_the_grid_lists():
    for name, stage in STAGES.items():
        if name != "aggregate":
            assert not {"models", "resolutions", "seeds"} & set(stage.get("params", [])), name
