"""The project's import graph, read from the source (no import runs): what dvc.yaml's code deps
and the layering rules are checked against."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers.env import REPO


def module_file(name: str) -> Path | None:
    """The project file of a dotted module name (a package's __init__.py), or None outside the project."""
    base = Path(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if (REPO / path).is_file():
            return path
    return None


def imported_names(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function (the lazy imports count too)."""
    names = set()
    for node in ast.walk(ast.parse((REPO / path).read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}  # `from pkg import module`
    return names
