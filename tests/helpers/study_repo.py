"""A real git + DVC repo holding the project's code and a tiny study: the fixture of every test
that drives `dvc` end to end."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from helpers.env import REPO

TINY = {
    "models": ["tiny_cnn"],
    "resolutions": [16, 24],
    "seeds": [0],
    "data": {"images": {"train": 40, "val": 20, "test": 20}},
    "train": {"epochs": 1, "batch_size": 16, "warmup_epochs": 0},
    "profile": {"batch_size": 4, "warmup": 1, "repeats": 3, "min_seconds": 0.0, "batch_repeats": 1},
    "explain": {"num_images": 2},
}


def tool_env(**extra: str) -> dict:
    """os.environ with this venv's bin/ first on PATH (so `dvc`, `weed` and the stages' `python` are
    this venv's, whatever the caller's PATH), plus `extra`."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "PATH": path, **extra}


def proc(cmd: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `cmd` (in `tool_env()` unless given `env`) without checking its exit status: for the
    commands expected to fail."""
    return subprocess.run(cmd, cwd=cwd, env=env or tool_env(), capture_output=True, text=True)


def run(cmd: list[str], cwd: Path, env: dict | None = None) -> str:
    """Run `cmd`, which must succeed (its output is in the failure message); its stdout + stderr."""
    done = proc(cmd, cwd, env)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def dvc(repo: Path, *args: str, env: dict | None = None) -> str:
    """`dvc ARGS` in `repo` with this venv's DVC; must succeed."""
    return run([sys.executable, "-m", "dvc", *args], repo, env)


ALWAYS_RUN = {"check"}  # dvc.yaml's always_changed stage: DVC runs it on every repro, so ran/stale leave it out


def ran(output: str) -> set[str]:
    """The stages DVC says it ran (`Running stage '...'`) in `output`, check aside."""
    return set(re.findall(r"Running stage '([^']+)'", output)) - ALWAYS_RUN


def repro(repo: Path) -> set[str]:
    """Run `dvc repro`; return the stages DVC says it ran."""
    return ran(dvc(repo, "repro"))


def stale(repo: Path) -> set[str]:
    """The stages `dvc status` reports as changed (its JSON form: one key a stage), check aside."""
    return set(json.loads(dvc(repo, "status", "--json"))) - ALWAYS_RUN


STUDY_OUTPUTS = ("data/prepared", "models", "metrics", "plots", "explanations", "reports")


def file_digests(root: Path, folders=STUDY_OUTPUTS) -> dict[str, str]:
    """sha256 of every file under `folders`, by path relative to `root`."""
    digests = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*")):
            if path.is_file():
                digests[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


GIT_USER = ["-c", "user.name=t", "-c", "user.email=t@t"]  # commits need an author; CI hosts have none


def git_commit(repo: Path, message: str) -> None:
    """Commit everything in `repo`'s working tree."""
    run(["git", "add", "-A"], repo)
    run(["git", *GIT_USER, "commit", "-qm", message], repo)


def set_params(repo: Path, changes: dict) -> None:
    """Edit the study where a user does, conf/config.yaml (`changes` by dotted key), and compose
    params.yaml from it."""
    conf = repo / "conf" / "config.yaml"
    if changes:  # a rewrite drops conf's comments, which changes its stamp
        study = yaml.safe_load(conf.read_text())
        for key, value in changes.items():
            section = study
            *parents, leaf = key.split(".")
            for parent in parents:
                section = section.setdefault(parent, {})
            section[leaf] = value
        conf.write_text(yaml.safe_dump(study, sort_keys=False))
    compose(repo)


def compose(repo: Path, *overrides: str) -> str:
    """`python -m tools.compose OVERRIDES` in `repo` (the project's own tools when `repo` has no
    copy); must succeed."""
    return run([sys.executable, "-m", "tools.compose", *overrides], repo, tool_env(PYTHONPATH=str(REPO)))


COMPOSITION = ("conf", "hydra_plugins")  # what composing params.yaml reads, besides tools/compose.py


def shipped_params(folder: Path, changes: dict | None = None) -> Path:
    """`folder` holding the project's conf/ with `changes` (dotted keys, as set_params) and the
    params.yaml composed from it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in COMPOSITION:
        shutil.copytree(REPO / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    shutil.copy(REPO / "params.yaml", folder / "params.yaml")
    set_params(folder, changes or {})
    return folder


def make_study_repo(path: Path, tiny: bool = True) -> Path:
    """A git + DVC repo holding the project's code and a tiny params.yaml (the project's own
    params.yaml, the default study, with tiny=False)."""
    path.mkdir()
    ignore = shutil.ignore_patterns("__pycache__")
    for folder in ("resomap", "stages", "tools", *COMPOSITION):
        shutil.copytree(REPO / folder, path / folder, ignore=ignore)
    for name in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, path / name)
    run(["git", "init", "-q"], path)
    dvc(path, "init", "-q")
    shutil.copytree(REPO / ".dvc/plots", path / ".dvc/plots")
    shutil.copy(REPO / ".dvc/config", path / ".dvc/config")  # hydra.enabled: dvc exp run composes conf/
    if tiny:
        flat = {"models": TINY["models"], "resolutions": TINY["resolutions"], "seeds": TINY["seeds"]}
        for section in ("data", "train", "profile", "explain"):
            flat.update(_flatten(section, TINY[section]))
        set_params(path, flat)
    git_commit(path, "tiny study" if tiny else "the default study")
    return path


def reproduced_study(path: Path) -> Path:
    """make_study_repo at `path`, reproduced and committed: where tests that edit a finished study start."""
    repo = make_study_repo(path)
    repro(repo)
    git_commit(repo, "reproduced")
    return repo


def _flatten(prefix: str, tree: dict) -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(f"{prefix}.{key}", value))
        else:
            out[f"{prefix}.{key}"] = value
    return out
