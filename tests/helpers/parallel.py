"""The tiny study's stage names and graph, and the helpers of the tests that drive tools.parallel_repro
(and tools.slurm_repro)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from helpers.study_repo import ALWAYS_RUN, proc

PREPARE = {"prepare@16", "prepare@24"}
CELLS = {f"{stage}@tiny_cnn-{r}-0" for stage in ("train", "evaluate", "explain") for r in (16, 24)}
PROFILE = {"profile@tiny_cnn-16", "profile@tiny_cnn-24"}
EXPLAIN = {"explain@tiny_cnn-16-0", "explain@tiny_cnn-24-0"}
SURFACE = {"surface@tiny_cnn-16-0", "surface@tiny_cnn-24-0"}
FINETUNE = {"finetune@tiny_cnn-16to24-0"}  # finetune.pairs: next
EVERY_STAGE = PREPARE | CELLS | SURFACE | FINETUNE | PROFILE | {"aggregate"}


def tiny_graph() -> dict[str, set[str]]:
    """The tiny study's pending graph on a fresh repo, each stage with the stages it needs (what
    tools.dag.pending_graph returns there: tests/test_parallel_repro.py)."""
    graph: dict[str, set[str]] = {f"prepare@{r}": set() for r in (16, 24)}
    for r in (16, 24):
        graph[f"profile@tiny_cnn-{r}"] = {f"prepare@{r}"}
        graph[f"train@tiny_cnn-{r}-0"] = {f"prepare@{r}"}
        for stage in ("evaluate", "explain"):
            graph[f"{stage}@tiny_cnn-{r}-0"] = {f"prepare@{r}", f"train@tiny_cnn-{r}-0"}
        graph[f"surface@tiny_cnn-{r}-0"] = PREPARE | {f"train@tiny_cnn-{r}-0"}  # it reads every resolution's test images
    graph["finetune@tiny_cnn-16to24-0"] = {"prepare@24", "train@tiny_cnn-16-0"}  # the 16 px weights, the 24 px images
    graph["aggregate"] = CELLS | PROFILE | SURFACE | FINETUNE
    return graph


def parallel_repro(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return proc([sys.executable, "-m", "tools.parallel_repro", *args], repo)


def through_workers(output: str) -> bool:
    """Every `Running stage` line came from a worker's `dvc repro` of that stage: `[cpu N] STAGE | `
    (but check's: it runs first, alone, in the foreground)."""
    always = tuple(f"Running stage '{stage}'" for stage in ALWAYS_RUN)
    lines = [line for line in output.splitlines() if "Running stage '" in line and not line.startswith(always)]
    return bool(lines) and all(re.match(r"\[[^]]+\] (\S+) \| Running stage '\1'", line) for line in lines)


def copy_of(repo: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(repo, tmp_path / "study", symlinks=True))


def edit_explain(repo: Path, code: str) -> None:
    """Edits the explain script (so both explain cells are stale) to run `code` before its main."""
    script = repo / "stages/explain.py"
    script.write_text(script.read_text().replace('if __name__ == "__main__":', code + 'if __name__ == "__main__":'))
