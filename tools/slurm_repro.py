"""Usage: python -m tools.slurm_repro [--partition P] [--gres G] [--time T] [--cpus-per-task N] [--mem M] [--sbatch-arg ARG] [--wait] [--dry] [TARGET]

Submits the pending stages of the pipeline to SLURM, one job per stage: each job is
`dvc --wait-for-lock repro -s STAGE`, with `--dependency=afterok:` on the jobs of the pending
stages it needs and `--kill-on-invalid-dep=yes`, so a failed job cancels its downstream and SLURM
runs everything else in DAG order. DVC still owns the locking and dvc.lock; this module only says
what depends on what. The repo must lie on a filesystem that every node mounts at the same path
(jobs run in it, with this Python), as must its DVC cache.

First the always-changed stages (check) run here, in the foreground; if one fails nothing is
submitted. Pending is what tools.parallel_repro runs; TARGETs restrict it like `dvc repro TARGET`.
Job ids are kept in .resomap/slurm/jobs.json: run it again and a stage whose job is still PENDING or
RUNNING is not submitted again, and new jobs wait for it. Logs: .resomap/slurm/logs/STAGE-JOBID.log.
--wait follows the jobs until all have ended and exits 1 naming every stage whose job did not
complete, with its log; --dry prints the sbatch command lines and submits nothing (nor runs check).
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from resomap.core.errors import ResoMapError
from resomap.core.io import read_json, write_json
from resomap.core.stage import run_stage
from tools.dag import StageGraph, always_changed_stages, pending_graph, run_first, waves

STATE_DIR = Path(".resomap/slurm")
STATE_FILE = STATE_DIR / "jobs.json"  # {"jobs": {stage: {"job": id, "log": path, "submitted": time}}}
LOG_DIR = STATE_DIR / "logs"
POLL_S = 2.0  # how often --wait reads the job states
NO_SBATCH = "sbatch not found: run this on a SLURM login node, or use dvc repro / tools.parallel_repro"
FAILED = {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "CANCELLED", "BOOT_FAIL", "DEADLINE", "PREEMPTED", "REVOKED"}
GONE = "UNKNOWN"  # a job neither sacct nor scontrol lists (scontrol forgets ended jobs after MinJobAge)
NEVER_SATISFIED = "DependencyNeverSatisfied"  # the Reason of a job whose upstream job failed


@dataclass(frozen=True)
class Resources:
    """The sbatch flags every job gets; None leaves the cluster's default."""

    partition: str | None = None
    gres: str | None = None
    time: str | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    extra: tuple[str, ...] = ()  # --sbatch-arg, passed on as given

    def args(self) -> list[str]:
        flags = {"partition": self.partition, "gres": self.gres, "time": self.time, "cpus-per-task": self.cpus_per_task, "mem": self.mem}
        return [f"--{name}={value}" for name, value in flags.items() if value is not None] + list(self.extra)


@dataclass(frozen=True)
class Job:
    state: str  # SLURM's, first word ("CANCELLED by 0" -> CANCELLED); GONE when no tool lists it
    reason: str = ""  # scontrol's Reason (sacct -X has none)

    @property
    def active(self) -> bool:
        """Will still run (or runs): PENDING, RUNNING, COMPLETING, SUSPENDED... but not a job whose
        dependency can never be met (without --kill-on-invalid-dep it would pend forever)."""
        return self.state not in FAILED | {"COMPLETED", GONE} and self.reason != NEVER_SATISFIED

    @property
    def ok(self) -> bool:
        return self.state == "COMPLETED"


@dataclass(frozen=True)
class Plan:
    """What to submit for a pending graph, given the stages whose earlier job is still active."""

    submit: list[str]  # in an order where every stage comes after its pending upstream
    kept: dict[str, str]  # stage -> its still-active job id: not submitted again
    cancel: dict[str, str]  # stage -> its PENDING job, superseded: an upstream stage gets a new job
    after_running: dict[str, str]  # stage -> its RUNNING superseded job: the new one starts after it ends


def plan(graph: StageGraph, active: dict[str, tuple[str, Job]]) -> Plan:
    """Keep a stage's active job only if every pending stage it needs is kept too: a job queued
    before one of its upstream stages got a new job would run without waiting for that one."""
    order = [stage for wave in waves(graph) for stage in wave]
    kept: dict[str, str] = {}
    for stage in order:
        if stage in active and all(up in kept for up in graph[stage]):
            kept[stage] = active[stage][0]
    submit = [stage for stage in order if stage not in kept]
    superseded = {stage: active[stage] for stage in submit if stage in active}
    cancel = {stage: job_id for stage, (job_id, job) in superseded.items() if job.state == "PENDING"}
    after_running = {stage: job_id for stage, (job_id, _) in superseded.items() if stage not in cancel}
    return Plan(submit, kept, cancel, after_running)


def sbatch_command(stage: str, after_ok: list[str], after_any: list[str], root: Path, resources: Resources) -> list[str]:
    """The sbatch command line of one stage's job; the log path keeps SLURM's %j (the job id)."""
    dependency = ",".join(f"{kind}:{':'.join(ids)}" for kind, ids in (("afterok", after_ok), ("afterany", after_any)) if ids)
    depends = [f"--dependency={dependency}", "--kill-on-invalid-dep=yes"] if dependency else []
    repro = f"PYTHONUNBUFFERED=1 exec {shlex.quote(sys.executable)} -m dvc --wait-for-lock repro -s {shlex.quote(stage)}"
    log = root / LOG_DIR / f"{stage}-%j.log"
    return ["sbatch", "--parsable", f"--job-name={stage}", f"--chdir={root}", f"--output={log}", *depends, *resources.args(), f"--wrap={repro}"]


def submit_plan(graph: StageGraph, planned: Plan, root: Path, resources: Resources, sbatch: Callable[[list[str]], str]) -> dict[str, str]:
    """Submit every stage of the plan through `sbatch` (a command line -> its job id), upstream
    first, each after the jobs of its pending upstream; the job ids of the stages submitted."""
    ids = dict(planned.kept)
    submitted = {}
    for stage in planned.submit:
        after_ok = [ids[up] for up in sorted(graph[stage])]
        after_any = [planned.after_running[stage]] if stage in planned.after_running else []
        ids[stage] = submitted[stage] = sbatch(sbatch_command(stage, after_ok, after_any, root, resources))
    return submitted


# --- SLURM's commands ------------------------------------------------------------------------------


def slurm(command: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True)
    except FileNotFoundError:
        raise ResoMapError(NO_SBATCH if command[0] == "sbatch" else f"{command[0]} not found: run this on a SLURM login node") from None


def sbatch(command: list[str]) -> str:
    """Submit; the job id (--parsable prints `ID` or `ID;CLUSTER`), or sbatch's own message as the error."""
    done = slurm(command)
    if done.returncode:
        message = " ".join(done.stderr.split()) or f"exit code {done.returncode}"
        raise ResoMapError(f"sbatch refused job {command_stage(command)}: {message}")
    return done.stdout.strip().split(";")[0]


def command_stage(command: list[str]) -> str:
    return next(arg.split("=", 1)[1] for arg in command if arg.startswith("--job-name="))


def job_states(ids: list[str]) -> dict[str, Job]:
    """Each job's state: from sacct where the cluster keeps accounting; the jobs it does not list
    (no accounting storage, or not recorded yet) from scontrol, which lists ended jobs for MinJobAge
    seconds; the jobs scontrol forgot from sacct --completion, where the cluster writes a
    job-completion log (JobCompType=jobcomp/filetxt); GONE where none lists it."""
    states: dict[str, Job] = {}
    for source in (sacct, scontrol_jobs, lambda missing: sacct(missing, completion=True)):
        missing = [job for job in ids if job not in states]
        if missing:
            states |= source(missing) or {}
    return {job: states.get(job, Job(GONE)) for job in ids}


def sacct(ids: list[str], completion: bool = False) -> dict[str, Job] | None:
    """None when sacct cannot answer (no accounting storage: "Slurm accounting storage is disabled")."""
    source = ["--completion"] if completion else ["--allocations"]
    done = slurm(["sacct", *source, "--noheader", "--parsable2", "--format=JobID,State", f"--jobs={','.join(ids)}"])
    if done.returncode or "disabled" in done.stderr:
        return None
    rows = (line.split("|") for line in done.stdout.splitlines() if "|" in line)
    return {job: Job(state.split()[0] if state else GONE) for job, state, *_ in rows if job in ids}


def scontrol_jobs(ids: list[str]) -> dict[str, Job]:
    """`scontrol show job -o` lists every job slurmctld still holds, one line each (KEY=VALUE ...)."""
    done = slurm(["scontrol", "show", "job", "--oneliner"])
    if done.returncode and "No jobs in the system" not in done.stderr + done.stdout:
        raise ResoMapError(f"scontrol show job: {' '.join(done.stderr.split())}: is slurmctld up (scontrol ping)?")
    out = {}
    for line in done.stdout.splitlines():
        fields = dict(field.split("=", 1) for field in line.split() if "=" in field)
        if fields.get("JobId") in ids:
            out[fields["JobId"]] = Job(fields.get("JobState", GONE), fields.get("Reason", ""))
    return out


# --- the state file ----------------------------------------------------------------------------------


def load_jobs() -> dict[str, dict]:
    try:
        return read_json(STATE_FILE)["jobs"]
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError):
        raise ResoMapError(f"{STATE_FILE} is not a job list this wrote: delete it (jobs still queued would then be submitted again)") from None


def save_jobs(jobs: dict[str, dict]) -> None:
    write_json(STATE_FILE, {"jobs": dict(sorted(jobs.items()))})


def log_of(stage: str, job_id: str) -> str:
    return str(LOG_DIR / f"{stage}-{job_id}.log")


# --- the command -------------------------------------------------------------------------------------


def wait_for(jobs: dict[str, str]) -> list[str]:
    """Poll until every job (stage -> id) has ended, printing each as it ends; the failure lines."""
    left = dict(jobs)
    failures = []
    while left:
        states = job_states(sorted(left.values()))
        for stage, job_id in sorted(left.items()):
            job = states[job_id]
            if job.active:
                continue
            del left[stage]
            reason = f" ({job.reason})" if job.reason and job.reason != "None" else ""
            print(f"slurm_repro: job {job_id} {stage} {job.state}{reason}", flush=True)
            if not job.ok:
                log = log_of(stage, job_id)
                where = f"log {log}" if Path(log).exists() else "never started: a job it needs did not complete"
                failures.append(f"{stage} (job {job_id} {job.state}{reason}, {where})")
        if left:
            time.sleep(POLL_S)
    return failures


def show(command: list[str]) -> str:
    """--dry's sbatch: print the command line; the job id it stands for is `<STAGE>`."""
    print(shlex.join(command))
    return f"<{command_stage(command)}>"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.slurm_repro", description=__doc__.split("\n\n")[1])
    parser.add_argument("--partition", help="sbatch --partition of every job (default: the cluster's)")
    parser.add_argument("--gres", help="sbatch --gres of every job, e.g. gpu:1")
    parser.add_argument("--time", help="sbatch --time of every job, e.g. 2:00:00")
    parser.add_argument("--cpus-per-task", type=int, help="sbatch --cpus-per-task of every job")
    parser.add_argument("--mem", help="sbatch --mem of every job, e.g. 16G")
    parser.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                        help="any other sbatch flag, as one word (--sbatch-arg=--account=lab); repeatable")
    parser.add_argument("--wait", action="store_true", help="follow the jobs until they end; exit 1 if one failed")
    parser.add_argument("--dry", action="store_true", help="print the sbatch command lines, submit nothing")
    parser.add_argument("targets", nargs="*", help="stages, matrix names or dvc.yaml files, with their upstream")
    args = parser.parse_args(argv)
    resources = Resources(args.partition, args.gres, args.time, args.cpus_per_task, args.mem, tuple(args.sbatch_arg))
    if not args.dry:
        if shutil.which("sbatch") is None:
            raise ResoMapError(NO_SBATCH)
        for stage in always_changed_stages(args.targets):
            run_first(stage, then="nothing was submitted")
    root = Path.cwd()
    jobs = load_jobs()
    try:
        graph = pending_graph(args.targets)
    except ResoMapError as error:
        if "is busy" not in str(error):
            raise
        running = still_active(jobs)  # dvc status cannot read the outputs a running job writes
        if not running:
            raise
        if not args.wait:
            raise ResoMapError(f"{len(running)} job(s) of the last submission still run, and DVC cannot tell what is pending "
                               "while one writes its outputs: run this again once they end (squeue), or add --wait to follow them") from None
        print(f"slurm_repro: {len(running)} job(s) of the last submission still run: following them, submitting nothing", flush=True)
        follow(running)
        return
    recorded = {stage: jobs[stage]["job"] for stage in graph if stage in jobs}
    states = job_states(sorted(set(recorded.values()))) if recorded else {}
    active = {stage: (job_id, states[job_id]) for stage, job_id in recorded.items() if states[job_id].active}
    planned = plan(graph, active)
    if args.dry:
        for stage, job_id in planned.kept.items():
            print(f"# {stage}: job {job_id} still {active[stage][1].state}, not submitted again")
        for stage, job_id in planned.cancel.items():
            print(f"scancel {job_id}  # {stage}: queued before an upstream stage got a new job")
        submit_plan(graph, planned, root, resources, show)
        print(f"slurm_repro: would submit {len(planned.submit)} stage(s) ({len(planned.kept)} still queued from before)")
        return
    if planned.cancel:
        slurm(["scancel", *planned.cancel.values()])
    (root / LOG_DIR).mkdir(parents=True, exist_ok=True)
    submitted: dict[str, str] = {}

    def submit(command: list[str]) -> str:
        job_id = sbatch(command)
        stage = command_stage(command)
        submitted[stage] = job_id
        jobs[stage] = {"job": job_id, "log": log_of(stage, job_id), "submitted": datetime.datetime.now().isoformat(timespec="seconds")}
        print(f"slurm_repro: job {job_id} {stage}", flush=True)
        return job_id

    try:
        submit_plan(graph, planned, root, resources, submit)
    finally:  # also when sbatch refused one: what was submitted stays known to the next run
        if submitted:
            save_jobs(jobs)
    for stage, job_id in planned.kept.items():
        print(f"slurm_repro: job {job_id} {stage} still {active[stage][1].state}, not submitted again")
    if not graph:
        print("slurm_repro: nothing to reproduce, every stage is up to date")
        return
    print(f"slurm_repro: submitted {len(submitted)} stage(s) as SLURM jobs, {len(planned.kept)} still queued from before "
          f"(squeue to follow them; logs in {LOG_DIR}/)", flush=True)
    if args.wait:
        follow({**planned.kept, **submitted})


def still_active(jobs: dict[str, dict]) -> dict[str, str]:
    """The recorded jobs (stage -> id) that are still queued or running."""
    states = job_states(sorted({job["job"] for job in jobs.values()})) if jobs else {}
    return {stage: job["job"] for stage, job in jobs.items() if states[job["job"]].active}


def follow(followed: dict[str, str]) -> None:
    """--wait: until every job (stage -> id) has ended; exit 1 naming those that did not complete."""
    try:
        failures = wait_for(followed)
    except KeyboardInterrupt:
        print("slurm_repro: stopped waiting; the jobs carry on (squeue shows them, scancel stops them)", file=sys.stderr)
        sys.exit(130)
    print(f"slurm_repro: {len(followed) - len(failures)} job(s) completed, {len(failures)} did not", flush=True)
    if failures:
        for line in sorted(failures):
            print(f"failed: {line}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run_stage(main)
