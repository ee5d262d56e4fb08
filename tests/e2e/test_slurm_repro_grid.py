"""tools.slurm_repro on a real single-node SLURM cluster (tests/helpers/slurm_cluster.py) over the
whole tiny grid: one job per stage, in DAG order, DVC left as a serial `dvc repro` leaves it; a re-run
submits nothing; a failed job cancels its downstream, the others finish; held jobs are not submitted again."""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers.parallel import EVERY_STAGE, EXPLAIN, copy_of, edit_explain, tiny_graph
from helpers.slurm_cluster import slurm_cluster
from helpers.study_repo import dvc, make_study_repo, proc, ran, stale

JOBS = Path(".resomap/slurm/jobs.json")
LOGS = Path(".resomap/slurm/logs")
SAME_BYTES = ("data/prepared/", "models/", "explanations/", "metrics/evaluate/", "plots/")  # the other outs hold timings


@pytest.fixture(scope="module")
def cluster():
    with slurm_cluster() as env:
        yield env


def slurm_repro(repo: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return proc([sys.executable, "-m", "tools.slurm_repro", *args], repo, env)


def finished_jobs(env: dict) -> list[dict]:
    """Every ended job of the cluster, from the job-completion log (`sacct --completion`)."""
    done = subprocess.run(["sacct", "--completion", "--parsable2", "--format=JobID,JobName,State,Start,End"],
                          env=env, capture_output=True, text=True, check=True)
    header, *rows = [line.split("|") for line in done.stdout.splitlines()]
    return [dict(zip(header, row)) for row in rows]


def when(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


@pytest.fixture(scope="module")
def built(cluster, tmp_path_factory):
    repo = make_study_repo(tmp_path_factory.mktemp("slurm_built") / "study")
    dry = slurm_repro(repo, cluster, "--dry")
    assert not (repo / JOBS).exists(), "--dry submitted nothing"
    done = slurm_repro(repo, cluster, "--wait")
    return repo, dry, done


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> Path:
    repo = make_study_repo(tmp_path_factory.mktemp("slurm_serial") / "study")
    dvc(repo, "repro")
    return repo


def test_dry_prints_one_sbatch_line_per_stage_after_its_upstream(built):
    _, dry, _ = built
    assert dry.returncode == 0, dry.stderr
    lines = [line for line in dry.stdout.splitlines() if line.startswith("sbatch ")]
    names = [re.search(r"--job-name=(\S+)", line)[1] for line in lines]
    assert sorted(names) == sorted(EVERY_STAGE)
    for line, stage in zip(lines, names):
        needs = set(re.findall(r"<([^>]+)>", line))
        assert needs == tiny_graph()[stage] and all(names.index(up) < names.index(stage) for up in needs)
    assert dry.stdout.rstrip().endswith(f"slurm_repro: would submit {len(EVERY_STAGE)} stage(s) (0 still queued from before)")


def test_every_stage_ran_once_as_its_own_job_in_dag_order(built, cluster):
    repo, _, done = built
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"slurm_repro: submitted {len(EVERY_STAGE)} stage(s) as SLURM jobs, 0 still queued from before" in done.stdout
    assert done.stdout.rstrip().endswith(f"slurm_repro: {len(EVERY_STAGE)} job(s) completed, 0 did not")
    jobs = json.loads((repo / JOBS).read_text())["jobs"]
    assert set(jobs) == EVERY_STAGE
    for stage, job in jobs.items():  # each job's log holds its stage's run, and only that
        assert ran((repo / job["log"]).read_text()) == {stage}, stage
    assert sorted(log.name for log in (repo / LOGS).iterdir()) == sorted(Path(job["log"]).name for job in jobs.values())
    rows = {row["JobID"]: row for row in finished_jobs(cluster)}
    timing = {stage: rows[job["job"]] for stage, job in jobs.items()}
    assert all(row["JobName"] == stage and row["State"] == "COMPLETED" for stage, row in timing.items())
    for stage, upstream in tiny_graph().items():
        for up in upstream:  # sacct's times are whole seconds: a job may start in the second its upstream ended
            assert when(timing[stage]["Start"]) >= when(timing[up]["End"]), f"{stage} started before {up} ended"


def test_dvc_is_left_as_a_serial_repro_leaves_it(built, serial):
    repo, _, done = built
    assert done.returncode == 0
    assert stale(repo) == set()
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    serial_lock = yaml.safe_load((serial / "dvc.lock").read_text())["stages"]
    assert set(lock) == set(serial_lock)
    def outs(stages: dict) -> dict[str, str]:
        return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs", []) if out["path"].startswith(SAME_BYTES)}

    assert {path.split("/")[0] for path in outs(lock)} == {"data", "models", "explanations", "metrics", "plots"}
    assert outs(lock) == outs(serial_lock)  # weights, prepared arrays, heatmaps, predictions: the same bytes
    assert not any(json.loads((repo / ".dvc/tmp/rwlock").read_text()).values())  # no path left locked


def test_a_second_run_submits_nothing(built, cluster):
    repo, _, _ = built
    before, jobs = len(finished_jobs(cluster)), (repo / JOBS).read_text()
    again = slurm_repro(repo, cluster, "--wait")
    assert again.returncode == 0, again.stderr
    assert again.stdout.rstrip().endswith("slurm_repro: nothing to reproduce, every stage is up to date")
    assert (repo / JOBS).read_text() == jobs and len(finished_jobs(cluster)) == before
    assert not subprocess.run(["squeue", "--noheader"], env=cluster, capture_output=True, text=True).stdout.strip()


def test_a_failed_job_cancels_its_downstream_the_others_finish_and_queued_jobs_are_not_submitted_twice(built, cluster, tmp_path):
    repo = copy_of(built[0], tmp_path)
    edit_explain(repo, 'import sys\nif sys.argv[2] == "24":\n    sys.exit("broken on purpose")\n')
    held = slurm_repro(repo, cluster, "--sbatch-arg=--hold")  # queued, not running: as on a busy cluster
    assert held.returncode == 0, held.stderr
    assert "submitted 3 stage(s) as SLURM jobs, 0 still queued from before" in held.stdout
    jobs = json.loads((repo / JOBS).read_text())["jobs"]
    ids = {stage: jobs[stage]["job"] for stage in EXPLAIN | {"aggregate"}}

    queued = slurm_repro(repo, cluster)
    assert queued.returncode == 0, queued.stderr
    assert "submitted 0 stage(s) as SLURM jobs, 3 still queued from before" in queued.stdout
    assert f"job {ids['aggregate']} aggregate still PENDING, not submitted again" in queued.stdout
    subprocess.run(["scontrol", "release", ",".join(ids.values())], env=cluster, check=True)

    done = slurm_repro(repo, cluster, "--wait")  # follows the released jobs, submits none
    assert done.returncode == 1, done.stdout + done.stderr
    # dvc status cannot read the outputs a running job writes: then it only follows the jobs
    assert re.search(r"submitted 0 stage\(s\) as SLURM jobs, 3 still queued from before|"
                     r"3 job\(s\) of the last submission still run: following them, submitting nothing", done.stdout)
    assert json.loads((repo / JOBS).read_text())["jobs"] == jobs
    log = f"{LOGS}/explain@tiny_cnn-24-0-{ids['explain@tiny_cnn-24-0']}.log"
    failed = done.stderr.splitlines()
    assert failed == [
        f"failed: aggregate (job {ids['aggregate']} CANCELLED (DependencyNeverSatisfied), never started: a job it needs did not complete)",
        f"failed: explain@tiny_cnn-24-0 (job {ids['explain@tiny_cnn-24-0']} FAILED (NonZeroExitCode), log {log})",
    ]
    assert "broken on purpose" in (repo / log).read_text()
    assert f"job {ids['explain@tiny_cnn-16-0']} explain@tiny_cnn-16-0 COMPLETED" in done.stdout
    assert not (repo / LOGS / f"aggregate-{ids['aggregate']}.log").exists()
    assert stale(repo) == {"explain@tiny_cnn-24-0", "aggregate"}
