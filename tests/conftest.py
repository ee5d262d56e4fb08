"""Shared fixtures: a tiny prepared dataset written by the real prepare code, and a real aggregate run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.env import stage_env
from resomap.core.config import DataParams, ImageCounts
from resomap.prepare.resolution import prepare_resolution


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    """data/prepared-style folder at 32 px with 120/40/40 synthetic images."""
    out = tmp_path_factory.mktemp("prepared") / "32"
    prepare_resolution(DataParams(images=ImageCounts(train=120, val=40, test=40)), 32, out)
    return out


@pytest.fixture(scope="session")
def aggregated(tmp_path_factory) -> tuple[Path, str]:
    """The real aggregate stage, run in a folder holding the known study of tests/helpers/study_files.py:
    (folder, stage stdout)."""
    from helpers.study_files import write_study

    folder = tmp_path_factory.mktemp("aggregate")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        write_study(latency_budget_ms=0.5)
    finally:
        os.chdir(cwd)
    done = subprocess.run([sys.executable, "-m", "stages.aggregate"], cwd=folder, env=stage_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return folder, done.stdout
