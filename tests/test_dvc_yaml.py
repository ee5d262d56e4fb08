"""dvc.yaml lists, per stage, its script, resomap/core and the sub-packages the stage imports: every
project file the stage loads lies under a declared code dep, and every declared code dep is loaded."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from helpers.env import REPO
from helpers.imports import imported_names, module_file

# a foreach stage (finetune) by its `do` template, which holds what the others hold at the top
STAGES = {name: stage.get("do", stage) for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items()}
CODE_ROOTS = ("resomap", "stages", "tools")


def loaded_project_files(stage: str) -> set[Path]:
    """Project files a stage can load: its script, what it imports and so on, with the __init__.py of
    every package on the way (Python runs those too)."""
    todo, seen = [f"stages.{stage}"], set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            path = module_file(".".join(parts[:depth]))
            if path is not None and path not in seen:
                seen.add(path)
                todo += [n for n in imported_names(path) if n.split(".")[0] in CODE_ROOTS]
    return seen


def only_a_docstring(path: Path) -> bool:
    """A package __init__ that holds no code cannot change a result, so no stage needs to declare it."""
    body = ast.parse((REPO / path).read_text()).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def code_deps(stage: str) -> list[Path]:
    return [Path(d) for d in STAGES[stage]["deps"] if d.split("/")[0] in CODE_ROOTS]


@pytest.fixture(scope="module", params=sorted(STAGES))
def stage(request) -> tuple[str, set[Path]]:
    return request.param, loaded_project_files(request.param)


def test_every_loaded_project_file_lies_under_a_declared_code_dep(stage):
    name, loaded = stage
    declared = code_deps(name)
    undeclared = {f for f in loaded if not any(f == d or d in f.parents for d in declared) and not only_a_docstring(f)}
    assert not undeclared, f"{name} loads code dvc.yaml does not declare: {sorted(map(str, undeclared))}"


def test_every_declared_code_dep_is_loaded(stage):
    name, loaded = stage
    unused = {d for d in code_deps(name) if not any(f == d or d in f.parents for f in loaded)}
    assert not unused, f"{name} declares code it never loads: {sorted(map(str, unused))}"


def test_code_deps_are_the_stages_package_the_script_and_whole_sub_packages():
    for name in STAGES:
        deps = code_deps(name)
        assert deps[:2] == [Path("stages/__init__.py"), Path(f"stages/{name}.py")], name  # __init__ runs first (Ctrl-C)
        assert all(d.parent == Path("resomap") and (REPO / d).is_dir() for d in deps[2:]), name
        assert Path("resomap/core") in deps, name


def test_cell_stages_use_the_grid_axes_in_order():
    for stage in ("train", "evaluate", "explain"):
        assert list(STAGES[stage]["matrix"]) == ["model", "resolution", "seed"]
    assert list(STAGES["profile"]["matrix"]) == ["model", "resolution"]
    assert list(STAGES["prepare"]["matrix"]) == ["resolution"]


def test_cell_stages_never_declare_the_grid_lists():
    """A grid list would rerun every cell when a cell is added; the surface is the one cell stage that
    reads the grid's resolutions (evaluate.test_resolutions: grid), and it reruns then anyway."""
    for name, stage in STAGES.items():
        if name != "aggregate":
            lists = {"models", "resolutions", "seeds", "grid", "grid.finetune"} | ({"grid.resolutions"} if name != "surface" else set())
            assert not lists & set(stage.get("params", [])), name


def test_bytecode_is_kept_out_of_the_code_hashes():
    patterns = (REPO / ".dvcignore").read_text().split()
    assert "__pycache__/" in patterns and "*.pyc" in patterns
