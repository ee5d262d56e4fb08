"""tools.parallel_repro: worker planning, and on real DVC (tools.dag) which stages are pending and in what order,
and bad input (the whole grid on two workers is in tests/e2e/test_parallel_repro_grid.py)."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers.parallel import CELLS, EVERY_STAGE, FINETUNE, PREPARE, PROFILE, SURFACE, copy_of, parallel_repro, tiny_graph
from helpers.study_repo import dvc, make_study_repo
from resomap.core.errors import ResoMapError
from tools.dag import always_changed_stages, pending_graph, waves
from tools.parallel_repro import Scheduler, Worker, may_start, plan_workers, timing_stages, wait_awake

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



def test_profile_runs_alone_on_gpu_workers_too():
    """On GPUs profile still times the host's cores and reads a whole-GPU energy counter, and with
    more workers than GPUs two stages would share one: it never runs beside another stage."""
    graph = {"train@a-16-0": set(), "train@b-16-0": set(), "profile@a-16": set(), "profile@b-16": set()}
    assert timing_stages(graph) == {"profile@a-16", "profile@b-16"}
    workers = plan_workers(None, 3, ["0", "1"])  # three workers on two GPUs
    running, overlaps, lock = set(), [], threading.Lock()

    class Recording(Scheduler):
        def _repro(self, stage: str, worker: Worker) -> str:
            with lock:
                if running and (stage.startswith("profile@") or any(s.startswith("profile@") for s in running)):
                    overlaps.append((stage, sorted(running)))
                running.add(stage)
            time.sleep(0.05)
            with lock:
                running.discard(stage)
            return "ran"

    summary = Recording(graph, workers, timing_stages(graph)).run()
    assert summary.stages("ran") == sorted(graph) and overlaps == []

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
    assert set(graph) == EVERY_STAGE == set(dvc(fresh_repo, "stage", "list", "--name-only").split()) - {"check"}
    assert always_changed_stages([]) == ["check"]  # run first, alone: not in the graph
    assert graph["train@tiny_cnn-16-0"] == {"prepare@16"}
    assert graph["explain@tiny_cnn-24-0"] == {"prepare@24", "train@tiny_cnn-24-0"}
    assert graph["aggregate"] == CELLS | PROFILE | SURFACE | FINETUNE
    assert graph == tiny_graph()  # the graph tests/test_slurm_repro.py plans from
    assert [set(wave) for wave in waves(graph)] == [
        PREPARE,
        PROFILE | {"train@tiny_cnn-16-0", "train@tiny_cnn-24-0"},
        CELLS - {"train@tiny_cnn-16-0", "train@tiny_cnn-24-0"} | SURFACE | FINETUNE,
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
