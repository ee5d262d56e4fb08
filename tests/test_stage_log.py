"""A stage run leaves with its exit code and its output flushed (it skips Python's finalisation),
and with RESOMAP_STAGE_LOG set it appends one line splitting its time into start-up and work."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import yaml

from helpers.env import REPO, shipped, stage_env


def run(args: list[str], cwd, log) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=stage_env(RESOMAP_STAGE_LOG=str(log)),
                          capture_output=True, text=True)


def test_a_finished_stage_logs_its_start_up_and_work_and_exits_0(tmp_path):
    params = shipped()
    params["data"]["images"] = {"train": 20, "val": 10, "test": 10}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    log = tmp_path / "stages.jsonl"
    done = run(["stages.prepare", "8"], tmp_path, log)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("prepare 8px: 10 classes, 20 train, 10 val, 10 test")  # flushed before the exit
    (row,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert row["stage"] == "prepare" and row["argv"] == ["8"]
    assert 0 < row["startup_s"] < 60 and 0 < row["work_s"] < 60
    assert (tmp_path / "data/prepared/8/test/images.npy").is_file()


def test_a_failed_stage_keeps_its_one_line_error_and_exit_code(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    log = tmp_path / "stages.jsonl"
    done = run(["stages.evaluate", "tiny_cnn"], tmp_path, log)
    assert done.returncode == 2
    assert done.stderr == "error: usage: python -m stages.evaluate MODEL RESOLUTION SEED\n"
    assert json.loads(log.read_text())["stage"] == "evaluate"


def test_a_log_path_that_cannot_be_written_stops_the_stage_before_its_work(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    done = run(["stages.prepare", "8"], tmp_path, tmp_path / "missing" / "stages.jsonl")
    assert done.returncode == 2 and done.stderr.startswith("error: RESOMAP_STAGE_LOG=")
    assert not (tmp_path / "data").exists()
