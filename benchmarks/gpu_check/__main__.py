"""Usage: python -m benchmarks.gpu_check [--only NAME ...] [--out DIR]   (bash benchmarks/gpu_check.sh)

Every GPU-only code path, exercised once: each check runs as its own process
(`python -m benchmarks.gpu_check.NAME`) under a timeout, a failing one does not stop the others,
and the evidence goes to one folder ($OUT if set, else benchmarks/results/gpu_check/):
summary.json, summary.md (the table printed at the end), gpu_check.log (every check's output) and
train_throughput.json (the throughput check's merged results). Exit status: 0 when every check
passed, 1 when any failed, 2 at once without CUDA.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.gpu_check.summary import exit_code, parse_result, table, tail

DEFAULT_OUT = Path("benchmarks/results/gpu_check")
BUDGET_S = 540  # the whole run, worst case: under a device runner's 10-minute command
LOG_LIMIT = 1_500_000  # characters of each check's output kept in the log (9 checks: under 16 MB)


@dataclass(frozen=True)
class Check:
    name: str
    timeout_s: int
    what: str
    env: dict = field(default_factory=dict)


CHECKS = [
    Check("study", 140, "tiny study through dvc repro on CUDA, all five explain methods, the training recipes"),
    Check("host_sync", 60, "host synchronisations in one bf16 training epoch"),
    Check("rerun", 150, "rerun and resume weight differences, default and RESOMAP_DETERMINISTIC=1"),
    Check("pinned", 60, "RESOMAP_DATA_PLACEMENT=host: page-locked bytes against the split", {"RESOMAP_DATA_PLACEMENT": "host"}),
    Check("oom", 90, "out-of-memory back-off under a memory cap, then the micro-batch probe"),
    Check("fp16", 60, "fp16 + GradScaler + gradient clipping"),
    Check("compiled", 140, "torch.compile: recompiles after epoch 1, compile seconds", {"TORCH_LOGS": "recompiles"}),
    Check("energy", 45, "NVML energy counter against nvidia-smi power.draw"),
    Check("throughput", 155, "benchmarks.train_throughput against the standing targets"),
]


def cuda_or_exit() -> str:
    """The GPU's name; without CUDA one line and exit status 2, before anything is written."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a driverless machine's CUDA probe warnings are not the line
        import torch

        available = torch.cuda.is_available()
    if not available:
        print("error: no CUDA device is visible (torch.cuda.is_available() is False): the GPU check needs an NVIDIA GPU; nothing was run",
              file=sys.stderr, flush=True)
        sys.exit(2)
    return torch.cuda.get_device_name(0)


def run_check(check: Check, out: Path, log, timeout_s: float | None = None) -> dict:
    env = {**os.environ, **check.env, "GPU_CHECK_OUT": str(out.resolve()), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", f"benchmarks.gpu_check.{check.name}"]
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as output:
        proc = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True, text=True)
        timed_out = False
        try:
            proc.wait(timeout=timeout_s or check.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)  # the check and what it started (dvc, stages)
            proc.wait()
        output.seek(0)
        text = output.read()
    seconds = time.perf_counter() - start
    log.write(f"\n===== {check.name}: {' '.join(command)} ({seconds:.1f} s, exit {proc.returncode}) =====\n")
    log.write(tail(text, LOG_LIMIT))
    log.flush()
    return parse_result(check.name, text, proc.returncode, timed_out, timeout_s or check.timeout_s, seconds)


def not_run(name: str, budget: float) -> dict:
    return {"check": name, "ok": False, "figure": f"not run: the {budget:.0f} s budget was spent", "details": {}, "seconds": 0.0,
            "returncode": None}


def write_summary(out: Path, gpu: str, rows: list[dict], started: str, expected: int) -> None:
    import torch

    summary = {
        "gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda, "started": started,
        "checks_run": len(rows), "checks": expected, "passed": sum(row["ok"] for row in rows),
        "total_seconds": round(sum(row["seconds"] for row in rows), 1), "rows": rows,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out / "summary.md").write_text(f"# GPU check: {gpu}, torch {torch.__version__}, {started}\n\n{table(rows)}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=[check.name for check in CHECKS], help="run only these checks")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole run; a check gets what is left")
    parser.add_argument("--out", type=Path, default=None, help="evidence folder (default: $OUT, else benchmarks/results/gpu_check)")
    args = parser.parse_args()
    gpu = cuda_or_exit()
    out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else DEFAULT_OUT)
    out.mkdir(parents=True, exist_ok=True)
    checks = [check for check in CHECKS if not args.only or check.name in args.only]
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    rows = []
    print(f"GPU check on {gpu}: {len(checks)} checks, evidence in {out}", flush=True)
    with open(out / "gpu_check.log", "w") as log:
        deadline = time.monotonic() + args.budget
        for check in checks:
            left = deadline - time.monotonic()
            if left < 5:
                row = not_run(check.name, args.budget)
            else:
                timeout = min(check.timeout_s, left)
                print(f"-- {check.name}: {check.what} (timeout {timeout:.0f} s)", flush=True)
                row = run_check(check, out, log, timeout)
            rows.append(row)
            print(f"   {'pass' if row['ok'] else 'FAIL'}: {row['figure']} ({row['seconds']:.1f} s)", flush=True)
            write_summary(out, gpu, rows, started, len(checks))  # after every check: a killed run keeps what it has
    print("\n" + table(rows), flush=True)
    passed = sum(row["ok"] for row in rows)
    print(f"\n{passed}/{len(checks)} checks passed; evidence in {out}", flush=True)
    sys.exit(exit_code(rows, len(checks)))


if __name__ == "__main__":
    main()
