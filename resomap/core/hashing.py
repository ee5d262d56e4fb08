"""Hashes that key the scratch state a killed stage resumes from (training's epochs, prepare's
splits): state is reused only when every hash matches, so a resumed run writes what a fresh one would."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

_PROJECT_PACKAGES = ("resomap", "stages")
_REPO = Path(__file__).resolve().parents[2]


def sha256(*chunks: bytes) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def code_hash() -> str:
    """Source of every loaded project module: the code the stage runs (dvc.yaml's deps, as imported).
    Files are named relative to the repository, so a moved checkout keeps its hashes."""
    files = set()
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name.split(".")[0] in _PROJECT_PACKAGES and path and path.endswith(".py"):
            files.add(Path(path).resolve())
    chunks = []
    for path in sorted(files):
        chunks += [str(path.relative_to(_REPO) if path.is_relative_to(_REPO) else path).encode(), b"\0", path.read_bytes()]
    return sha256(*chunks)
