"""The throughput benchmark runs end to end (its figures come from a GPU machine, not from here)."""

import json
import subprocess
import sys

from helpers.env import REPO, stage_env


def test_train_throughput_writes_one_row_per_model_and_resolution(tmp_path):
    out = tmp_path / "throughput.json"
    command = [sys.executable, "-m", "benchmarks.train_throughput", "--models", "simple_cnn", "tiny_cnn",
               "--resolutions", "16", "--steps", "2", "--warmup", "1", "--batch-size", "8", "--workers", "1", "--out", str(out)]
    done = subprocess.run(command, cwd=REPO, env=stage_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [(row["model"], row["resolution"]) for row in rows] == [("simple_cnn", 16), ("tiny_cnn", 16)]
    for row in rows:
        assert set(row) == {"model", "resolution", "ours_img_s", "textbook_img_s", "device"}
        assert row["ours_img_s"] > 0 and row["textbook_img_s"] > 0 and row["device"].startswith("cpu")
