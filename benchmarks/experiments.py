"""What the benchmarks built on `dvc exp run` share (recipe_table, surface_table): their arguments,
a fresh git + DVC copy of the project to run in, and one timed experiment."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers.study_repo import dvc, make_study_repo  # noqa: E402  (the tests' study repo, not a copy of it)


def experiment_args(doc: str, out: str) -> argparse.Namespace:
    """--tiny (the tests' tiny study: a smoke test) and --out (the results file)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(out))
    return parser.parse_args()


@contextmanager
def fresh_study(tiny: bool) -> Iterator[Path]:
    """The project's code and params (the default study, or the tiny one) in a temp git + DVC repo."""
    with tempfile.TemporaryDirectory() as tmp:
        yield make_study_repo(Path(tmp) / "study", tiny=tiny)


def exp_run(repo: Path, name: str, overrides: list[str]) -> float:
    """`dvc exp run -n NAME -S ...` in `repo`; its wall time in seconds."""
    start = time.perf_counter()
    dvc(repo, "exp", "run", "-n", name.lower().replace(" ", "-").replace(".", ""),
        *(part for override in overrides for part in ("-S", override)))
    return time.perf_counter() - start
