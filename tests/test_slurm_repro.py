"""tools.slurm_repro without a cluster: the sbatch command lines and their dependencies for a pending
graph, what a re-run keeps of the jobs still queued, how job states are read (fake sacct/scontrol on
PATH), and its one-line errors. The real cluster runs the tiny study in tests/e2e/test_slurm_repro_grid.py."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from itertools import count
from pathlib import Path

import pytest

from helpers.env import REPO
from helpers.parallel import CELLS, EVERY_STAGE, FINETUNE, PREPARE, PROFILE, SURFACE, tiny_graph
from resomap.core.errors import ResoMapError
from tools.slurm_repro import NO_SBATCH, Job, Resources, job_states, plan, sbatch, sbatch_command, submit_plan

ROOT = Path("/shared/study")


class FakeSlurm:
    """sbatch's stand-in: numbers the jobs from 100, keeps every command line by its stage."""

    def __init__(self):
        self.ids = count(100)
        self.commands: dict[str, list[str]] = {}
        self.stage_of: dict[str, str] = {}

    def __call__(self, command: list[str]) -> str:
        stage = option(command, "--job-name")
        assert stage not in self.commands, f"{stage} submitted twice"
        job_id = str(next(self.ids))
        self.commands[stage], self.stage_of[job_id] = command, stage
        return job_id

    def dependencies(self, stage: str) -> dict[str, set[str]]:
        """`--dependency=afterok:1:2,afterany:3` as {"afterok": {"1", "2"}, "afterany": {"3"}}."""
        text = option(self.commands[stage], "--dependency")
        if text is None:
            return {}
        return {kind: set(ids.split(":")) for kind, ids in (part.split(":", 1) for part in text.split(","))}


def option(command: list[str], name: str) -> str | None:
    values = [arg.split("=", 1)[1] for arg in command if arg.startswith(f"{name}=")]
    assert len(values) <= 1
    return values[0] if values else None


# --- a fresh repo: every pending stage one job, after exactly its pending upstream -----------------


def test_every_stage_becomes_one_job_after_exactly_the_jobs_of_its_pending_upstream():
    graph, slurm = tiny_graph(), FakeSlurm()
    assert set(graph) == EVERY_STAGE
    submitted = submit_plan(graph, plan(graph, {}), ROOT, Resources(), slurm)
    assert set(submitted) == set(slurm.commands) == EVERY_STAGE
    for stage, upstream in graph.items():
        depends = slurm.dependencies(stage)
        assert {slurm.stage_of[job] for job in depends.get("afterok", set())} == upstream
        assert set(depends) <= {"afterok"}
        assert (option(slurm.commands[stage], "--kill-on-invalid-dep") == "yes") == bool(upstream)
    assert slurm.dependencies("aggregate")["afterok"] == {submitted[stage] for stage in CELLS | PROFILE | SURFACE | FINETUNE}


def test_jobs_are_submitted_upstream_first_so_every_afterok_names_an_existing_job():
    graph, slurm = tiny_graph(), FakeSlurm()
    submit_plan(graph, plan(graph, {}), ROOT, Resources(), slurm)
    order = list(slurm.commands)  # submission order
    for stage, upstream in graph.items():
        assert all(order.index(up) < order.index(stage) for up in upstream)
    assert set(order[:2]) == PREPARE and order[-1] == "aggregate"


def test_a_job_runs_its_stage_with_dvc_in_the_repo_root_and_logs_to_a_file_per_stage_and_job():
    command = sbatch_command("train@tiny_cnn-16-0", ["101"], [], ROOT, Resources())
    assert command[:2] == ["sbatch", "--parsable"]
    assert option(command, "--job-name") == "train@tiny_cnn-16-0"
    assert option(command, "--chdir") == str(ROOT)
    assert option(command, "--output") == f"{ROOT}/.resomap/slurm/logs/train@tiny_cnn-16-0-%j.log"
    assert option(command, "--dependency") == "afterok:101"
    wrap = option(command, "--wrap")
    assert wrap.endswith(f"{sys.executable} -m dvc --wait-for-lock repro -s train@tiny_cnn-16-0")
    assert subprocess.run(["sh", "-n", "-c", wrap]).returncode == 0  # valid shell, whatever the names


def test_resources_are_the_cluster_defaults_unless_given_and_extra_args_pass_through_as_given():
    assert Resources().args() == []
    given = Resources("gpu", "gpu:1", "2:00:00", 8, "16G", ("--account=lab", "--exclusive"))
    assert given.args() == ["--partition=gpu", "--gres=gpu:1", "--time=2:00:00", "--cpus-per-task=8", "--mem=16G",
                            "--account=lab", "--exclusive"]
    command = sbatch_command("prepare@16", [], [], ROOT, given)
    assert command[-1].startswith("--wrap=") and given.args() == command[-8:-1]


# --- a re-run: jobs still queued are kept, and new jobs wait for them ---------------------------------


def test_a_rerun_keeps_the_stages_still_queued_and_new_jobs_depend_on_their_ids():
    graph, slurm = tiny_graph(), FakeSlurm()
    active = {"prepare@16": ("7", Job("RUNNING")), "train@tiny_cnn-16-0": ("8", Job("PENDING", "Dependency"))}
    planned = plan(graph, active)
    assert planned.kept == {"prepare@16": "7", "train@tiny_cnn-16-0": "8"}
    assert not planned.cancel and not planned.after_running
    submit_plan(graph, planned, ROOT, Resources(), slurm)
    assert set(slurm.commands) == EVERY_STAGE - {"prepare@16", "train@tiny_cnn-16-0"}
    assert slurm.dependencies("profile@tiny_cnn-16") == {"afterok": {"7"}}
    assert slurm.dependencies("explain@tiny_cnn-16-0") == {"afterok": {"7", "8"}}
    assert "8" in slurm.dependencies("aggregate")["afterok"]  # aggregate needs train, not prepare


def test_a_rerun_while_everything_is_queued_submits_nothing():
    graph = tiny_graph()
    active = {stage: (str(index), Job("PENDING")) for index, stage in enumerate(sorted(graph))}
    planned = plan(graph, active)
    assert planned.submit == [] and set(planned.kept) == EVERY_STAGE


def test_a_queued_job_whose_upstream_gets_a_new_job_is_replaced_after_it():
    """prepare@16 failed (its downstream was cancelled), aggregate still pends on other jobs: the
    re-run must not leave aggregate to run before the new train@tiny_cnn-16-0."""
    graph = tiny_graph()
    active = {"aggregate": ("30", Job("PENDING")), "profile@tiny_cnn-24": ("31", Job("RUNNING")), "prepare@24": ("29", Job("RUNNING"))}
    planned = plan(graph, active)
    assert planned.kept == {"prepare@24": "29", "profile@tiny_cnn-24": "31"}
    assert planned.cancel == {"aggregate": "30"}
    slurm = FakeSlurm()
    submit_plan(graph, planned, ROOT, Resources(), slurm)
    assert "aggregate" in slurm.commands and "31" in slurm.dependencies("aggregate")["afterok"]
    # a superseded job that already runs is not cancelled: the new one starts after it ends
    running = plan({"a": set(), "b": {"a"}}, {"b": ("5", Job("RUNNING"))})
    assert running.after_running == {"b": "5"} and not running.cancel
    assert option(sbatch_command("b", ["6"], ["5"], ROOT, Resources()), "--dependency") == "afterok:6,afterany:5"


@pytest.mark.parametrize(
    ("job", "active", "ok"),
    [
        (Job("PENDING", "Dependency"), True, False),
        (Job("RUNNING"), True, False),
        (Job("COMPLETING"), True, False),
        (Job("COMPLETED"), False, True),
        (Job("PENDING", "DependencyNeverSatisfied"), False, False),  # without --kill-on-invalid-dep
        (Job("CANCELLED", "DependencyNeverSatisfied"), False, False),
        (Job("OUT_OF_MEMORY"), False, False),
        (Job("UNKNOWN"), False, False),
    ],
)
def test_which_jobs_count_as_still_queued_and_which_as_done(job, active, ok):
    assert (job.active, job.ok) == (active, ok)


# --- reading job states and submitting, through fake SLURM commands on PATH -----------------------------


def fake_commands(folder: Path, **scripts: str) -> None:
    """Put shell scripts named like SLURM's commands first on PATH."""
    folder.mkdir(exist_ok=True)
    for name, body in scripts.items():
        path = folder / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def fake_bin(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "bin"
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


def test_without_accounting_job_states_come_from_scontrol_then_the_completion_log(fake_bin):
    fake_commands(
        fake_bin,
        sacct='case "$*" in *--completion*) echo "3|COMPLETED";; *) echo "Slurm accounting storage is disabled" >&2; exit 1;; esac',
        scontrol='echo "JobId=1 JobName=a JobState=RUNNING Reason=None"\n'
        'echo "JobId=2 JobName=b JobState=CANCELLED Reason=DependencyNeverSatisfied"',
    )
    assert job_states(["1", "2", "3", "4"]) == {
        "1": Job("RUNNING", "None"),
        "2": Job("CANCELLED", "DependencyNeverSatisfied"),
        "3": Job("COMPLETED"),  # ended longer than MinJobAge ago: only the completion log has it
        "4": Job("UNKNOWN"),
    }


def test_with_accounting_sacct_answers_and_its_cancelled_by_user_is_cancelled(fake_bin):
    fake_commands(fake_bin, sacct='echo "1|CANCELLED by 1000"\necho "2|PENDING"', scontrol="exit 1")
    assert job_states(["1", "2"]) == {"1": Job("CANCELLED"), "2": Job("PENDING")}


def test_sbatch_refusing_a_job_is_one_line_with_its_message(fake_bin):
    fake_commands(fake_bin, sbatch='echo "sbatch: error: invalid partition specified: gpux" >&2\n'
                  'echo "sbatch: error: Batch job submission failed: Invalid partition name specified" >&2; exit 1')
    with pytest.raises(ResoMapError) as refused:
        sbatch(sbatch_command("prepare@16", [], [], ROOT, Resources(partition="gpux")))
    assert str(refused.value) == ("sbatch refused job prepare@16: sbatch: error: invalid partition specified: gpux "
                                  "sbatch: error: Batch job submission failed: Invalid partition name specified")
    fake_commands(fake_bin, sbatch='echo "4242;resomap"')  # --parsable on a federation: ID;CLUSTER
    assert sbatch(sbatch_command("prepare@16", [], [], ROOT, Resources())) == "4242"


def test_without_sbatch_on_path_the_command_says_where_to_run_it_and_exits_2(tmp_path):
    env = {**os.environ, "PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "tools.slurm_repro"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == f"error: {NO_SBATCH}\n" and re.search("login node", done.stderr)
