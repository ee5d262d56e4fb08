"""tools.parallel_repro with two CPU workers over the whole tiny grid: DVC left consistent, failures
and Ctrl-C stop only what they must (its wall time is in benchmarks/parallel_repro.py)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers.parallel import EVERY_STAGE, EXPLAIN, copy_of, edit_explain, parallel_repro, through_workers
from helpers.study_repo import ALWAYS_RUN, make_study_repo, ran, stale, tool_env

# --- two CPU workers over the whole tiny grid ---------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    repo = make_study_repo(tmp_path_factory.mktemp("parallel_built") / "study")
    return repo, parallel_repro(repo, "--workers", "2")


def test_two_cpu_workers_reproduce_the_grid_and_leave_dvc_consistent(built):
    repo, done = built
    assert done.returncode == 0, done.stdout + done.stderr
    assert ran(done.stdout) == EVERY_STAGE and through_workers(done.stdout)
    assert {"[cpu 0]", "[cpu 1]"} <= set(re.findall(r"^\[cpu \d\]", done.stdout, flags=re.M))
    assert done.stdout.rstrip().endswith(f"parallel_repro: {len(EVERY_STAGE)} ran, 0 unchanged, 0 failed, 0 not started")
    assert set(yaml.safe_load((repo / "dvc.lock").read_text())["stages"]) == EVERY_STAGE | ALWAYS_RUN
    assert stale(repo) == set()
    assert not any(json.loads((repo / ".dvc/tmp/rwlock").read_text()).values())  # no path left locked
    assert (repo / "reports/report.html").is_file()


def test_a_second_run_runs_nothing(built):
    repo, _ = built
    done = parallel_repro(repo, "--workers", "2")
    assert done.returncode == 0
    assert done.stdout.strip().endswith("parallel_repro: nothing to reproduce, every stage is up to date")


def test_a_failed_stage_stops_its_downstream_and_the_others_finish(built, tmp_path):
    repo = copy_of(built[0], tmp_path)
    edit_explain(repo, 'import sys\nif sys.argv[2] == "24":\n    sys.exit("broken on purpose")\n')
    done = parallel_repro(repo, "--workers", "2")
    assert done.returncode == 1
    assert re.search(r"^\[cpu \d\] explain@tiny_cnn-24-0 \| broken on purpose$", done.stdout, flags=re.M)
    assert ran(done.stdout) == EXPLAIN and through_workers(done.stdout)
    assert "1 ran, 0 unchanged, 1 failed (explain@tiny_cnn-24-0), 1 not started (aggregate)" in done.stdout
    assert stale(repo) == {"explain@tiny_cnn-24-0", "aggregate"}


def test_ctrl_c_stops_every_running_stage_and_records_none(built, tmp_path):
    repo = copy_of(built[0], tmp_path)
    edit_explain(repo, 'import time\nprint("explain waiting", flush=True)\ntime.sleep(120)\n')
    command = [sys.executable, "-m", "tools.parallel_repro", "--workers", "2"]
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
