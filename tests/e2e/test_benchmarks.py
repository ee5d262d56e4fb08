"""The benchmarks run end to end and write what their docs promise (the figures themselves are
measured by running them, never asserted here)."""

import json
import subprocess
import sys

from helpers.env import REPO, stage_env
from helpers.parallel import EVERY_STAGE


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


def test_stage_overhead_splits_the_study_and_every_stage_kind(tmp_path):
    out = tmp_path / "overhead.json"
    command = [sys.executable, "-m", "benchmarks.stage_overhead", "--tiny", "--out", str(out)]
    done = subprocess.run(command, cwd=REPO, env=stage_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    study = result["study"]
    assert study["stages"] == len(EVERY_STAGE) + 1 and result["conditions"]["study"] == "tiny"
    assert 0 < study["work_s"] < study["wall_s"] and 0 < study["fixed_cost_share"] < 1
    assert set(result["stages"]) == {"check", "prepare", "train", "evaluate", "profile", "explain", "aggregate"}
    for kind, row in result["stages"].items():
        # work within its own command's run; the run under DVC is another run, so no order between them is asserted
        assert row["imports_s"] > 0 and 0 < row["work_s"] < row["command_s"] and row["dvc_repro_s"] > 0, kind
        assert "torch" in row["top_imports"] or kind in ("check", "prepare"), kind
    assert "torch" not in result["stages"]["prepare"]["top_imports"] and "torch" not in result["stages"]["check"]["top_imports"]
    assert 0 < result["noop_repro_s"] < study["wall_s"]


def test_streaming_measures_memory_and_cold_reads_on_a_small_split(tmp_path):
    out = tmp_path / "streaming.json"
    for part in ("memory", "cold"):
        command = [sys.executable, "-m", "benchmarks.streaming", "--part", part, "--images", "600", "--resolution", "32",
                   "--work", str(tmp_path / "work"), "--out", str(out)]
        done = subprocess.run(command, cwd=REPO, env=stage_env(), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    memory = result["memory"]
    assert memory["train_images"] == 600 and memory["prepare"]["img_s"] > 0
    epoch = memory["epoch"]
    assert epoch["images"] == 512 and epoch["trained_at_px"] == 64 and epoch["samples"] > 0  # whole batches of 128
    assert epoch["rss_anon_peak_gib"] > 0 and epoch["rss_anon_median_gib"] <= epoch["rss_anon_peak_gib"]
    runs = result["cold"]["runs"]
    assert len(runs) == 3 and all(run["images"] == 600 and run["img_s"] > 0 for run in runs.values())
