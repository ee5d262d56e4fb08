"""resomap.parallel_repro on real DVC: which stages are pending and in what order, bad input, and
two CPU workers reproducing the tiny grid (its wall time is in benchmarks/parallel_repro.py)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from resomap.errors import ResoMapError
from resomap.parallel_repro import Worker, may_start, pending_graph, plan_workers, wait_awake, waves
from study_repo import dvc, make_study_repo, proc, ran, stale, tool_env

PREPARE = {"prepare@16", "prepare@24"}
CELLS = {f"{stage}@tiny_cnn-{r}-0" for stage in ("train", "evaluate", "explain") for r in (16, 24)}
PROFILE = {"profile@tiny_cnn-16", "profile@tiny_cnn-24"}
EXPLAIN = {"explain@tiny_cnn-16-0", "explain@tiny_cnn-24-0"}
EVERY_STAGE = PREPARE | CELLS | PROFILE | {"aggregate"}


def parallel_repro(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return proc([sys.executable, "-m", "resomap.parallel_repro", *args], repo)


def through_workers(output: str) -> bool:
    """Every `Running stage` line came from a worker's `dvc repro` of that stage: `[cpu N] STAGE | `."""
    lines = [line for line in output.splitlines() if "Running stage '" in line]
    return bool(lines) and all(re.match(r"\[[^]]+\] (\S+) \| Running stage '\1'", line) for line in lines)


def copy_of(repo: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(repo, tmp_path / "study", symlinks=True))


def edit_explain(repo: Path, code: str) -> None:
    """Edits the explain script (so both explain cells are stale) to run `code` before its main."""
    script = repo / "stages/explain.py"
    script.write_text(script.read_text().replace('if __name__ == "__main__":', code + 'if __name__ == "__main__":'))


# --- workers: pure logic --------------------------------------------------------------------------


def test_one_worker_per_visible_gpu_named_by_its_cuda_visible_devices_entry():
    visible = ["4", "6"]  # CUDA_VISIBLE_DEVICES=4,6: torch calls them 0 and 1
    assert plan_workers(None, None, visible) == [Worker("gpu 4", "4"), Worker("gpu 6", "6")]
    assert plan_workers([1], None, visible) == [Worker("gpu 6", "6")]
    assert [w.cuda_visible_devices for w in plan_workers(None, 3, visible)] == ["4", "6", "4"]


def test_without_gpus_workers_run_on_cpu_with_every_gpu_hidden():
    assert plan_workers(None, None, []) == [Worker("cpu 0", "")]
    assert plan_workers(None, 2, []) == [Worker("cpu 0", ""), Worker("cpu 1", "")]


@pytest.mark.parametrize(
    ("gpus", "workers", "visible", "message"),
    [
        ([7], None, ["0", "1"], "--gpus 7: 2 GPU\\(s\\) visible, pick ids from 0 to 1"),
        ([0], None, [], "--gpus: no GPU is visible here"),
        (None, 0, [], "--workers 0: need at least 1"),
    ],
)
def test_impossible_worker_requests_name_the_flag(gpus, workers, visible, message):
    with pytest.raises(ResoMapError, match=message):
        plan_workers(gpus, workers, visible)


def test_a_timing_stage_starts_only_on_an_idle_host_and_holds_the_others_back():
    alone = {"profile@a"}
    assert may_start(["profile@a", "train@a"], [], alone) == ["train@a"]
    assert may_start(["profile@a"], ["train@a"], alone) == []
    assert may_start(["profile@a"], [], alone) == ["profile@a"]
    assert may_start(["train@b"], ["profile@a"], alone) == []


def test_a_ctrl_c_delivered_to_a_worker_thread_still_stops_the_wait_at_once():
    """The kernel may hand SIGINT to any thread; Python handles it in the main thread only when that
    runs Python code. An untimed wait slept through it until the stage ended (a CI failure)."""
    started = threading.Event()

    def stage() -> None:
        started.set()
        time.sleep(3)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as parallel_repro's main sets it
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(stage)
        started.wait()
        worker = next(thread for thread in threading.enumerate() if thread.name.startswith("ThreadPoolExecutor"))
        threading.Timer(0.2, signal.pthread_kill, (worker.ident, signal.SIGINT)).start()
        start = time.perf_counter()
        try:
            with pytest.raises(KeyboardInterrupt):
                wait_awake({future: "stage"}, FIRST_COMPLETED)
        finally:
            signal.signal(signal.SIGINT, previous)
        assert time.perf_counter() - start < 2, "handled while the stage still runs"


# --- the pending set, read from a real DVC repo ---------------------------------------------------


@pytest.fixture(scope="module")
def fresh_repo(tmp_path_factory) -> Path:
    return make_study_repo(tmp_path_factory.mktemp("parallel") / "study")


def test_a_fresh_repo_is_all_pending_in_dag_order(fresh_repo, monkeypatch):
    monkeypatch.chdir(fresh_repo)
    graph = pending_graph([])
    assert set(graph) == EVERY_STAGE == set(dvc(fresh_repo, "stage", "list", "--name-only").split())
    assert graph["train@tiny_cnn-16-0"] == {"prepare@16"}
    assert graph["explain@tiny_cnn-24-0"] == {"prepare@24", "train@tiny_cnn-24-0"}
    assert graph["aggregate"] == CELLS | PROFILE
    assert [set(wave) for wave in waves(graph)] == [
        PREPARE,
        PROFILE | {"train@tiny_cnn-16-0", "train@tiny_cnn-24-0"},
        CELLS - {"train@tiny_cnn-16-0", "train@tiny_cnn-24-0"},
        {"aggregate"},
    ]


def test_targets_restrict_the_pending_set_to_them_and_their_upstream(fresh_repo, monkeypatch):
    monkeypatch.chdir(fresh_repo)
    assert pending_graph(["train@tiny_cnn-16-0"]) == {"prepare@16": set(), "train@tiny_cnn-16-0": {"prepare@16"}}
    assert set(pending_graph(["profile"])) == PREPARE | PROFILE


def test_stages_already_reproduced_leave_the_pending_set(fresh_repo, tmp_path, monkeypatch):
    repo = copy_of(fresh_repo, tmp_path)
    dvc(repo, "repro", "prepare")
    monkeypatch.chdir(repo)
    graph = pending_graph([])
    assert set(graph) == EVERY_STAGE - PREPARE
    assert graph["train@tiny_cnn-16-0"] == set() and graph["profile@tiny_cnn-24"] == set()


def test_an_unknown_target_or_a_folder_other_than_the_repo_root_is_a_one_line_error(fresh_repo, tmp_path, monkeypatch):
    monkeypatch.chdir(fresh_repo)
    with pytest.raises(ResoMapError, match="Stage 'nope' not found"):
        pending_graph(["nope"])
    monkeypatch.chdir(fresh_repo / "stages")
    with pytest.raises(ResoMapError, match="run this from the DVC repo root"):
        pending_graph([])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ResoMapError, match="is not in a DVC repo"):
        pending_graph([])


def test_the_command_reports_bad_input_in_one_line_and_exits_2(fresh_repo):
    done = parallel_repro(fresh_repo, "--gpus", "7")
    assert done.returncode == 2
    assert done.stderr.startswith("error: --gpus") and len(done.stderr.splitlines()) == 1


# --- two CPU workers over the whole tiny grid ---------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    repo = make_study_repo(tmp_path_factory.mktemp("parallel_built") / "study")
    return repo, parallel_repro(repo, "--workers", "2")


@pytest.mark.slow
def test_two_cpu_workers_reproduce_the_grid_and_leave_dvc_consistent(built):
    repo, done = built
    assert done.returncode == 0, done.stdout + done.stderr
    assert ran(done.stdout) == EVERY_STAGE and through_workers(done.stdout)
    assert {"[cpu 0]", "[cpu 1]"} <= set(re.findall(r"^\[cpu \d\]", done.stdout, flags=re.M))
    assert done.stdout.rstrip().endswith("parallel_repro: 11 ran, 0 unchanged, 0 failed, 0 not started")
    assert set(yaml.safe_load((repo / "dvc.lock").read_text())["stages"]) == EVERY_STAGE
    assert "Data and pipelines are up to date." in dvc(repo, "status")
    assert not any(json.loads((repo / ".dvc/tmp/rwlock").read_text()).values())  # no path left locked
    assert (repo / "reports/report.html").is_file()


@pytest.mark.slow
def test_a_second_run_runs_nothing(built):
    repo, _ = built
    done = parallel_repro(repo, "--workers", "2")
    assert done.returncode == 0
    assert done.stdout.strip() == "parallel_repro: nothing to reproduce, every stage is up to date"


@pytest.mark.slow
def test_a_failed_stage_stops_its_downstream_and_the_others_finish(built, tmp_path):
    repo = copy_of(built[0], tmp_path)
    edit_explain(repo, 'import sys\nif sys.argv[2] == "24":\n    sys.exit("broken on purpose")\n')
    done = parallel_repro(repo, "--workers", "2")
    assert done.returncode == 1
    assert re.search(r"^\[cpu \d\] explain@tiny_cnn-24-0 \| broken on purpose$", done.stdout, flags=re.M)
    assert ran(done.stdout) == EXPLAIN and through_workers(done.stdout)
    assert "1 ran, 0 unchanged, 1 failed (explain@tiny_cnn-24-0), 1 not started (aggregate)" in done.stdout
    assert stale(repo) == {"explain@tiny_cnn-24-0", "aggregate"}


@pytest.mark.slow
def test_ctrl_c_stops_every_running_stage_and_records_none(built, tmp_path):
    repo = copy_of(built[0], tmp_path)
    edit_explain(repo, 'import time\nprint("explain waiting", flush=True)\ntime.sleep(120)\n')
    command = [sys.executable, "-m", "resomap.parallel_repro", "--workers", "2"]
    with subprocess.Popen(command, cwd=repo, env=tool_env(), stdout=subprocess.PIPE, text=True) as child:
        waiting = 0
        for line in child.stdout:
            waiting += line.endswith("| explain waiting\n")
            if waiting == 2:  # both explain cells are running
                break
        child.send_signal(signal.SIGINT)
        rest = child.communicate(timeout=60)[0]
    assert child.returncode == 130
    assert rest.rstrip().endswith("1 not started (aggregate) - interrupted")
    assert stale(repo) == EXPLAIN | {"aggregate"}
    assert not any(json.loads((repo / ".dvc/tmp/rwlock").read_text()).values())  # no path left locked
