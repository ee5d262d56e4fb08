"""Lower layers never import higher ones, and no library module imports a stage script: the
sub-package a module lives in says what it may depend on."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.env import REPO
from helpers.imports import imported_names

# what each sub-package may import besides itself (see docs/design.md, "Code layout and layering")
MAY_IMPORT = {
    "core": set(),
    "prepare": {"core"},
    "data": {"core"},
    "models": {"core", "data"},
    "optim": {"core"},
    "train": {"core", "data", "models", "optim"},
    "evaluate": {"core", "data", "models"},
    "finetune": {"core", "models"},
    "profile": {"core", "data", "models", "optim"},
    "explain": {"core", "data", "models"},
    "explore": {"core", "data", "models", "prepare", "explain"},
    "report": {"core", "models", "evaluate", "explain"},
}


def project_imports(path: Path) -> set[str]:
    """The project packages `path` imports: `resomap.X` as X, and `stages` / `tools` as such."""
    found = set()
    for name in imported_names(path):
        parts = name.split(".")
        if parts[0] == "resomap" and len(parts) > 1:
            found.add(parts[1])
        elif parts[0] in ("stages", "tools"):
            found.add(parts[0])
    return found


def test_every_sub_package_has_its_rule():
    packages = {p.name for p in (REPO / "resomap").iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(MAY_IMPORT)


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_a_sub_package_imports_only_the_layers_below_it(package):
    for path in sorted((REPO / "resomap" / package).rglob("*.py")):
        relative = path.relative_to(REPO)
        wrong = project_imports(relative) - MAY_IMPORT[package] - {package}
        assert not wrong, f"{relative} imports {sorted(wrong)}: {package} may import only {sorted(MAY_IMPORT[package])}"


def test_tools_build_on_the_library_not_on_stage_scripts():
    for path in sorted((REPO / "tools").rglob("*.py")):
        assert "stages" not in project_imports(path.relative_to(REPO)), path
