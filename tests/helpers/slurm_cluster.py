"""A real single-node SLURM cluster on loopback, for the tests of tools.slurm_repro: a private
munged (its own key and socket), slurmctld and slurmd, started in the foreground from a generated
slurm.conf in a temp folder, and torn down (jobs cancelled, daemons killed) however the test ends.

Accounting goes to a job-completion log (`JobCompType=jobcomp/filetxt`), so `sacct --completion`
answers without slurmdbd; plain `sacct` says "Slurm accounting storage is disabled". Where the
binaries are missing (`apt-get install slurm-wlm munge`; .ci/run installs them) it skips, saying so.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.env import free_ports
from helpers.study_repo import tool_env

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scontrol", "scancel", "sacct")
SBIN = os.pathsep.join(("/usr/sbin", "/sbin", "/usr/local/sbin"))  # the daemons, off a non-root PATH
START_TIMEOUT_S = 60


def missing_binaries() -> list[str]:
    path = f"{os.environ.get('PATH', '')}{os.pathsep}{SBIN}"
    return [name for name in DAEMONS + CLIENTS if shutil.which(name, path=path) is None]


def slurm_conf(folder: Path, ports: list[int]) -> str:
    host, user = os.uname().nodename.split(".")[0], getpass.getuser()
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 * 9 // 10  # slurmd drains a node that has less
    return f"""\
ClusterName=resomap
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
AuthInfo=socket={folder}/munge.sock
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={folder}/jobcomp.txt
MinJobAge=86400
SchedulerParameters=sched_interval=1
NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _stop(daemon: subprocess.Popen) -> None:
    if daemon.poll() is None:
        daemon.terminate()
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def _logs(folder: Path) -> str:
    return "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in sorted(folder.glob("*.log")))


@contextlib.contextmanager
def slurm_cluster() -> Iterator[dict]:
    """Start the cluster, wait until its one node is idle, yield the environment every client
    command needs (SLURM_CONF, and PATH with this venv's bin/ first); tear it down on exit."""
    missing = missing_binaries()
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge")
    folder = Path(tempfile.mkdtemp(prefix="resomap-slurm-"))
    folder.chmod(0o755)  # munged refuses a socket in a folder others cannot traverse
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    (folder / "slurm.conf").write_text(slurm_conf(folder, free_ports(2)))
    env = tool_env(SLURM_CONF=str(folder / "slurm.conf"))
    env["PATH"] = f"{env['PATH']}{os.pathsep}{SBIN}"
    daemons: list[subprocess.Popen] = []
    try:
        subprocess.run(["mungekey", "--create", f"--keyfile={folder}/munge.key"], env=env, check=True, capture_output=True)
        munge = [f"--socket={folder}/munge.sock", f"--key-file={folder}/munge.key", f"--pid-file={folder}/munged.pid",
                 f"--log-file={folder}/munged.log", f"--seed-file={folder}/munged.seed"]
        for command in (["munged", "--foreground", *munge], ["slurmctld", "-D", "-f", env["SLURM_CONF"]], ["slurmd", "-D", "-f", env["SLURM_CONF"]]):
            daemons.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=(folder / f"{command[0]}.err.log").open("w")))
            if command[0] == "munged":
                _wait_for(lambda: (folder / "munge.sock").exists(), daemons, folder, "munged's socket")
        _wait_for(lambda: _node_state(env) == "idle", daemons, folder, "the node to be idle in sinfo")
        yield env
    finally:
        if daemons:
            _cancel_every_job(env)
        for daemon in reversed(daemons):
            _stop(daemon)
        shutil.rmtree(folder, ignore_errors=True)


def _node_state(env: dict) -> str:
    done = subprocess.run(["sinfo", "--noheader", "--format=%T"], env=env, capture_output=True, text=True)
    return done.stdout.strip()


def _wait_for(ready, daemons: list[subprocess.Popen], folder: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        dead = [daemon.args[0] for daemon in daemons if daemon.poll() is not None]
        if dead or time.monotonic() > deadline:
            problem = f"{', '.join(dead)} exited" if dead else f"no sign after {START_TIMEOUT_S} s"
            raise RuntimeError(f"SLURM test cluster: waiting for {what}: {problem}\n{_logs(folder)}")
        time.sleep(0.2)


def _cancel_every_job(env: dict) -> None:
    """scancel what is still queued or running, and give slurmd a moment to kill the job steps
    (proctrack/linuxproc: they would outlive a killed slurmd)."""
    ids = subprocess.run(["squeue", "--noheader", "--format=%i"], env=env, capture_output=True, text=True).stdout.split()
    if not ids:
        return
    subprocess.run(["scancel", *ids], env=env, capture_output=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not subprocess.run(["squeue", "--noheader", "--format=%i"], env=env, capture_output=True, text=True).stdout.split():
            return
        time.sleep(0.5)
