"""prepare killed with SIGKILL resumes at split granularity (resomap/prepare/resume.py): the stage
run as a user runs it, killed for real, rerun, and compared with an uninterrupted run."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_stage_faults import last_line, stage, study_dir

from helpers.env import stage_env
from helpers.small_disk import on_tmpfs
from helpers.study_repo import set_params

RES = "32"
# train is done in a tenth of a second, val takes a second or more: a kill right after train's
# marker appears lands while val is being written
SIZES = {"train": 64, "val": 1500, "test": 64}
SCRATCH = Path(".resomap/prepare") / RES


def stopped_after_train(cwd: Path, signum: int = signal.SIGKILL) -> tuple[Path, subprocess.CompletedProcess]:
    """Run prepare and send it `signum` as soon as its train split is marked done: the scratch
    folder of its key, and how the process ended."""
    process = subprocess.Popen([sys.executable, "-m", "stages.prepare", RES], cwd=cwd, env=stage_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (markers := list((cwd / SCRATCH).glob("*/train.done.json"))):
        assert process.poll() is None and time.monotonic() < deadline, "prepare ended before its train split was marked done"
        time.sleep(0.005)
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    key = markers[0].parent
    assert not (key / "val.done.json").exists(), "inconclusive: val was finished before the signal landed; raise SIZES['val']"
    return key, subprocess.CompletedProcess(process.args, process.returncode, out, err)


def prepared_bytes(cwd: Path) -> dict[str, bytes]:
    folder = cwd / "data/prepared" / RES
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_prepare_resumes_after_kill_9_without_rewriting_the_finished_split(tmp_path):
    cwd = study_dir(tmp_path / "killed", images=SIZES)
    key, _ = stopped_after_train(cwd)
    before = (key / "train/images.npy").stat()
    done = stage(cwd, "stages.prepare", RES)
    assert done.returncode == 0, done.stderr
    assert f"prepare {RES}px: train already prepared (resumed), 2 splits left" in done.stdout
    assert f"prepare {RES}px: 1,564 images in " in done.stdout  # val and test only
    after = (cwd / "data/prepared" / RES / "train/images.npy").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), "train was rewritten, not moved"
    assert not (cwd / SCRATCH).exists(), "the scratch is removed once the output is complete"

    fresh = study_dir(tmp_path / "fresh", images=SIZES)
    assert stage(fresh, "stages.prepare", RES).returncode == 0
    assert prepared_bytes(cwd) == prepared_bytes(fresh)


def test_ctrl_c_keeps_the_finished_splits_for_the_next_run(tmp_path):
    cwd = study_dir(tmp_path / "study", images=SIZES)
    _, interrupted = stopped_after_train(cwd, signal.SIGINT)
    assert interrupted.returncode == 130
    assert f"the splits already finished wait in {SCRATCH} for the next run" in last_line(interrupted)
    done = stage(cwd, "stages.prepare", RES)
    assert done.returncode == 0, done.stderr
    assert f"prepare {RES}px: train already prepared (resumed), 2 splits left" in done.stdout


def test_a_changed_param_does_not_reuse_the_scratch(tmp_path):
    cwd = study_dir(tmp_path / "study", images=SIZES)
    key, _ = stopped_after_train(cwd)
    set_params(cwd, {"data.seed": 1})
    done = stage(cwd, "stages.prepare", RES)
    assert done.returncode == 0, done.stderr
    assert f"prepare {RES}px: removed the scratch of an earlier run with other data params" in done.stdout
    assert "resumed" not in done.stdout
    assert f"prepare {RES}px: 1,628 images in " in done.stdout  # every split written afresh
    assert not key.exists() and not (cwd / SCRATCH).exists()


def test_the_disk_check_counts_only_the_splits_left_on_the_scratch_disk(tmp_path):
    cwd = study_dir(tmp_path / "study", images=SIZES)
    key, _ = stopped_after_train(cwd)
    # val, when begun, is half-written with its full size reserved: the rerun deletes it first
    shutil.rmtree(key / "val", ignore_errors=True)
    saved = tmp_path / "saved"
    (cwd / ".resomap/prepare").rename(saved)
    # the killed run's scratch on a 2 MB disk: room for its train split, not for val and test
    resume = f"cp -a {saved}/. .resomap/prepare/ && exec {sys.executable} -m stages.prepare {RES}"
    done, _ = on_tmpfs(cwd / ".resomap/prepare", "size=2m", ["sh", "-c", resume], cwd, stage_env())
    assert done.returncode == 2, done.stderr
    assert last_line(done).startswith(f"error: prepare {RES}px (1564 images) needs 4.9 MB in {SCRATCH} but only ")
    assert last_line(done).endswith("free disk space, or move the repository to a larger disk")
