"""Every test here drives real DVC, servers, subprocess stages or a browser: all are marked slow,
so `pytest -m "not slow"` runs the unit tests alone."""

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items):
    for item in items:
        if HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.slow)
