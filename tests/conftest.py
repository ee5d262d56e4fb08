"""Shared fixtures: tiny prepared datasets written by the real prepare code."""

from __future__ import annotations

from pathlib import Path

import pytest

from resomap.config import DataParams, SplitSizes
from resomap.data.prepare import prepare_resolution

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    """data/prepared-style folder at 32 px with 120/40/40 synthetic images."""
    out = tmp_path_factory.mktemp("prepared") / "32"
    prepare_resolution(DataParams(size=SplitSizes(train=120, val=40, test=40)), 32, out)
    return out
