"""The pipeline's DAG as `dvc repro` sees it, read through DVC's own API: which stages always run
(check), which are pending and what each waits for. Shared by the commands that run the pending
stages elsewhere than one serial `dvc repro` (tools.parallel_repro, tools.slurm_repro)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from graphlib import TopologicalSorter

from resomap.core.errors import ResoMapError

StageGraph = dict[str, set[str]]
"""Each pending stage (DVC's name for it) with the pending stages it waits for."""


@contextlib.contextmanager
def dvc_graph(targets: list[str]):
    """DVC's repo and the graph `dvc repro [TARGET ...]` would consider, read through DVC's own API;
    the repo is closed on exit, so it holds no DVC lock while workers run."""
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo
    from dvc.repo.reproduce import collect_stages, get_active_graph, get_subgraph

    try:
        repo = Repo(os.curdir)
    except NotDvcRepoError:
        raise ResoMapError(f"{os.getcwd()} is not in a DVC repo: run this from the repo root") from None
    with repo:
        if os.path.realpath(repo.root_dir) != os.path.realpath(os.curdir):
            raise ResoMapError(f"run this from the DVC repo root {repo.root_dir}, not {os.getcwd()}")
        try:
            # An edge points from a stage to a stage it depends on; frozen stages lose theirs, as in dvc repro.
            graph = get_active_graph(repo.index.graph)
            yield repo, get_subgraph(graph, collect_stages(repo, targets)) if targets else graph
        except DvcException as error:
            raise ResoMapError(f"dvc: {error}") from None


def always_changed_stages(targets: list[str]) -> list[str]:
    """The stages DVC runs on every repro (dvc.yaml's check): run first, alone, before the rest is planned."""
    with dvc_graph(targets) as (_, graph):
        return sorted(stage.addressing for stage in graph if stage.always_changed)


def pending_graph(targets: list[str]) -> StageGraph:
    """What `dvc repro [TARGET ...]` would have to run, once the always-changed stages have run."""
    import networkx as nx

    with dvc_graph(targets) as (repo, graph):
        changed = set(repo.status())
        stale = [stage for stage in graph if stage.addressing in changed and not stage.always_changed]
        pending = set(stale).union(*(nx.ancestors(graph, stage) for stage in stale))
        return {s.addressing: {dep.addressing for dep in graph.successors(s) if dep in pending} for s in pending}


def run_first(stage: str, then: str = "nothing else was started") -> None:
    """`dvc repro -s STAGE` in the foreground; its failure (check refusing params.yaml) stops
    everything, and the error says what did not happen (`then`)."""
    done = subprocess.run([sys.executable, "-m", "dvc", "repro", "-s", stage])
    if done.returncode:
        raise ResoMapError(f"stage {stage} failed (its message is above): {then}")


def waves(graph: StageGraph) -> list[list[str]]:
    """The stages in the order they can start: each wave needs only the waves before it."""
    sorter = TopologicalSorter(graph)
    sorter.prepare()
    out = []
    while sorter.is_active():
        out.append(sorted(sorter.get_ready()))
        sorter.done(*out[-1])
    return out
