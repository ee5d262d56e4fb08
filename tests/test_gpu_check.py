"""The GPU check (benchmarks/gpu_check.sh) on a machine without CUDA: it refuses at once with one
line and exit status 2; every check module imports; the runner's and the checks' pure logic."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest
import torch

from benchmarks.gpu_check import common, summary
from benchmarks.gpu_check.__main__ import BUDGET_S, CHECKS, Check, not_run, run_check
from benchmarks.gpu_check.compiled import recompiles_after
from benchmarks.gpu_check.energy import relative_gap
from benchmarks.gpu_check.host_sync import per_step_syncs
from benchmarks.gpu_check.pinned import block_bytes, host_stat, pinned_limit
from benchmarks.gpu_check.throughput import merge_rows, verdicts
from helpers.env import REPO

NAMES = [check.name for check in CHECKS]


def test_without_cuda_the_script_stops_at_once_with_one_line_and_exit_2(tmp_path):
    out = tmp_path / "evidence"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": "", "OUT": str(out)}  # no VIRTUAL_ENV: it activates .venv
    done = subprocess.run(["bash", str(REPO / "benchmarks/gpu_check.sh")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: no CUDA device is visible"), lines
    assert not out.exists(), "nothing is written without CUDA"


def test_the_nine_checks_each_have_a_module_that_imports_on_cpu():
    assert NAMES == ["study", "host_sync", "rerun", "pinned", "oom", "fp16", "compiled", "energy", "throughput"]
    modules = {path.stem for path in (REPO / "benchmarks/gpu_check").glob("*.py")} - {"__init__", "__main__", "common", "summary"}
    assert modules == set(NAMES)
    for name in NAMES:
        module = importlib.import_module(f"benchmarks.gpu_check.{name}")
        assert callable(module.run) and module.__doc__, name
    assert sum(check.timeout_s for check in CHECKS) <= 15 * 60 and BUDGET_S <= 9 * 60


def line(ok: bool, figure: str = "x", **details) -> str:
    return common.RESULT_MARKER + json.dumps(common.result(ok, figure, **details))


def test_a_check_passes_only_when_its_result_line_says_so_and_it_exited_0():
    output = f"noise\n{line(True, '0 syncs per step', syncs=0)}\n"
    row = summary.parse_result("host_sync", output, 0, False, 90, 3.21)
    assert row == {"check": "host_sync", "ok": True, "figure": "0 syncs per step", "details": {"syncs": 0}, "seconds": 3.2, "returncode": 0}
    assert not summary.parse_result("x", line(False, "3 syncs"), 1, False, 90, 1)["ok"]
    lying = summary.parse_result("x", line(True, "fine"), 1, False, 90, 1)
    assert not lying["ok"] and lying["figure"] == "fine (but exit code 1)"
    last = summary.parse_result("x", f"{line(True)}\n{line(False, 'second')}", 1, False, 90, 1)
    assert last["figure"] == "second"


def test_a_crash_or_a_timeout_is_a_failed_row_saying_why():
    crashed = summary.parse_result("oom", "Traceback ...\nRuntimeError: boom\n", 1, False, 120, 2)
    assert not crashed["ok"] and crashed["figure"] == "no result (exit code 1): RuntimeError: boom"
    timed_out = summary.parse_result("study", line(True), -9, True, 180, 180.4)
    assert not timed_out["ok"] and timed_out["figure"] == "timed out after 180 s"
    assert summary.parse_result("x", "", 0, False, 9, 0)["figure"] == "no result (exit code 0): no output"


def test_the_table_and_the_exit_status():
    rows = [summary.parse_result("a", line(True, "fine"), 0, False, 9, 1), summary.parse_result("b", line(False, "p|q"), 1, False, 9, 2)]
    assert summary.table(rows).splitlines() == [
        "| check | result | key figure | seconds |", "|---|---|---|---|", "| a | pass | fine | 1.0 |", "| b | FAIL | p\\|q | 2.0 |"]
    assert summary.exit_code(rows, 2) == 1 and summary.exit_code(rows[:1], 1) == 0
    assert summary.exit_code(rows[:1], 2) == 1, "a check that never ran fails the run"
    assert summary.exit_code([*rows[:1], not_run("c", 540)], 2) == 1
    assert summary.tail("abcdef", 10) == "abcdef" and summary.tail("abcdef", 2).endswith("\nef")


def test_the_runner_records_a_module_without_a_result_line_as_failed(tmp_path):
    with open(tmp_path / "gpu_check.log", "w") as log:
        row = run_check(Check("summary", 60, "prints nothing"), tmp_path, log)
    assert not row["ok"] and row["figure"] == "no result (exit code 0): no output"
    assert "===== summary: " in (tmp_path / "gpu_check.log").read_text()


def run_main(monkeypatch, capsys, run) -> tuple[int, dict]:
    monkeypatch.setattr(sys, "argv", ["check"])
    with pytest.raises(SystemExit) as exited:
        common.check_main(run, "a check")
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(common.RESULT_MARKER)
    return exited.value.code, json.loads(last[len(common.RESULT_MARKER):])


def test_check_main_turns_a_pass_a_failed_assertion_and_a_crash_into_one_result_line(monkeypatch, capsys):
    assert run_main(monkeypatch, capsys, lambda work: common.result(work.is_dir(), "ok")) == (0, common.result(True, "ok"))
    code, failed = run_main(monkeypatch, capsys, lambda work: common.require(False, "RESOMAP_X is missing"))
    assert code == 1 and failed == common.result(False, "RESOMAP_X is missing")

    def crash(work):
        raise KeyError("placement")

    code, crashed = run_main(monkeypatch, capsys, crash)
    assert code == 1 and crashed["figure"] == "error: KeyError: 'placement'"


ROWS = [
    {"model": "resnet18", "resolution": 64, "ours_img_s": 30000.0, "textbook_img_s": 9000.0, "device": "NVIDIA H100"},
    {"model": "resnet50", "resolution": 64, "ours_img_s": 9000.0, "textbook_img_s": 3500.0, "device": "NVIDIA H100"},
    {"model": "resnet18", "resolution": 224, "ours_img_s": 8500.0, "textbook_img_s": 4000.0, "device": "NVIDIA H100"},
    {"model": "resnet50", "resolution": 224, "ours_img_s": 2900.0, "textbook_img_s": 1500.0, "device": "NVIDIA H100"},
]


def test_throughput_targets_each_get_a_verdict():
    checked = {v["target"]: v for v in verdicts(ROWS)}
    assert [t for t, v in checked.items() if not v["ok"]] == ["resnet50 64px ours/textbook >= 3x", "resnet50 224px >= 3,000 img/s"]
    assert checked["resnet18 224px >= 8,000 img/s"]["ok"] and checked["resnet18 224px ours/textbook >= 1.5x"]["value"] == 8500 / 4000
    assert len(checked) == 6
    missing = verdicts(ROWS[:1])
    assert len(missing) == 6 and sum(v["ok"] for v in missing) == 1 and all(v["value"] is None for v in missing[1:])


def test_throughput_rows_replace_their_own_cell_and_device_and_keep_the_rest():
    cpu = {"model": "resnet18", "resolution": 64, "ours_img_s": 71.0, "textbook_img_s": 72.5, "device": "cpu (2 cores, 2 threads)"}
    old = {**ROWS[0], "ours_img_s": 1.0}
    merged = merge_rows([cpu, old], ROWS)
    assert merged == [cpu, ROWS[0], *ROWS[1:]]
    assert merge_rows(merged, ROWS) == merged


def test_the_checks_small_assertions():
    assert per_step_syncs(3, 3, 4) == 0 and per_step_syncs(3, 7, 4) == 1
    assert block_bytes(786_432) == 2**20 and block_bytes(2**20) == 2**20 and block_bytes(1) == 1
    assert pinned_limit(786_432) == 4 * 2**20
    assert host_stat({"allocated_bytes.peak": 5}, "allocated_bytes") == 5
    assert host_stat({"allocated_bytes.all.peak": 6}, "allocated_bytes") == 6 and host_stat({}, "allocated_bytes") is None
    assert relative_gap(110, 100) == pytest.approx(0.1) and relative_gap(1, 0) == float("inf")
    assert recompiles_after([2, 2, 2]) == 0 and recompiles_after([1, 3]) == 2 and recompiles_after([]) == 0


def test_max_abs_diff_of_two_state_dicts():
    a = {"w": torch.zeros(3), "n": torch.tensor(2)}
    assert common.max_abs_diff(a, {"w": torch.zeros(3), "n": torch.tensor(2)}) == 0
    assert common.max_abs_diff(a, {"w": torch.tensor([0.0, -0.5, 0.25]), "n": torch.tensor(2)}) == 0.5
    assert common.max_abs_diff(a, {"w": torch.zeros(3), "n": torch.tensor(5)}) == 3
    assert common.max_abs_diff(a, {"w": torch.zeros(4), "n": torch.tensor(2)}) == float("inf")
    assert common.max_abs_diff(a, {"w": torch.zeros(3)}) == float("inf")
