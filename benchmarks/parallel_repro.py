"""Usage: python -m benchmarks.parallel_repro [--out benchmarks/results/parallel_repro.json]

Does tools.parallel_repro pay on this host? It builds a small study (tests/helpers/study_repo.py's tiny
settings, a 2-model x 3-resolution grid) and reproduces it from scratch (fresh copy, empty cache)
serially with `dvc repro`, then with parallel_repro on 1 and 2 CPU workers, and on 2 workers with
one torch thread each (OMP_NUM_THREADS=1: no oversubscription, but CPU training is not bit-identical
across thread counts). Each row holds the wall time, the stages run, the load average around it
(other work on the host skews the figures) and whether the weights match the serial run's.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dvc
import torch
import yaml

from resomap.core import io

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers.study_repo import make_study_repo, ran, set_params, tool_env  # noqa: E402  (the tests' tiny study, not a copy of it)

GRID = {"models": ["tiny_cnn", "simple_cnn"], "resolutions": [16, 24, 32]}
MODES = [  # (name, workers, command after `python`, extra environment); the first is the reference
    ("dvc repro", 1, ["-m", "dvc", "repro"], {}),
    ("parallel_repro --workers 1", 1, ["-m", "tools.parallel_repro", "--workers", "1"], {}),
    ("parallel_repro --workers 2", 2, ["-m", "tools.parallel_repro", "--workers", "2"], {}),
    ("parallel_repro --workers 2, OMP_NUM_THREADS=1", 2, ["-m", "tools.parallel_repro", "--workers", "2"],
     {"OMP_NUM_THREADS": "1"}),
]


def weights_md5(repo: Path) -> dict[str, str]:
    """The md5 DVC recorded for each cell's weights folder."""
    stages = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    outs = [out for stage in stages.values() for out in stage.get("outs", [])]
    return {out["path"]: out["md5"] for out in outs if out["path"].startswith("models/")}


def reproduce(base: Path, workdir: Path, mode: str, workers: int, args: list[str], extra_env: dict
              ) -> tuple[dict, dict[str, str]]:
    """Reproduce a fresh copy of the study (no dvc.lock, empty cache) one way; its row and weights."""
    repo = Path(shutil.copytree(base, workdir / re.sub(r"\W+", "_", mode), symlinks=True))
    env = tool_env(**extra_env, CUDA_VISIBLE_DEVICES="")  # on the CPU, as the results' "device" says
    load_before = os.getloadavg()
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=repo, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{mode} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    row = {
        "mode": mode,
        "workers": workers,
        "env": extra_env,
        "wall_s": round(wall, 1),
        "stages_run": len(ran(done.stdout + done.stderr)),
        "loadavg_1min_before": round(load_before[0], 2),
        "loadavg_1min_after": round(os.getloadavg()[0], 2),
    }
    return row, weights_md5(repo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--out", default="benchmarks/results/parallel_repro.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="parallel_repro_bench_") as tmp:
        base = make_study_repo(Path(tmp) / "base")
        set_params(base, GRID)
        rows, serial_weights = [], None
        # warm the page cache, so the first mode timed does not pay for loading torch and DVC from disk
        subprocess.run([sys.executable, "-c", "import torch, dvc.repo, dvclive"], check=True)
        for mode, workers, command, extra_env in MODES:
            row, weights = reproduce(base, Path(tmp), mode, workers, command, extra_env)
            serial_weights = serial_weights or weights
            row["weights_match_serial"] = weights == serial_weights
            rows.append(row)
            print(row, flush=True)
    serial, one_worker = rows[0]["wall_s"], rows[1]["wall_s"]
    for row in rows:
        row["speedup_vs_serial"] = round(serial / row["wall_s"], 2)
        row["speedup_vs_1_worker"] = round(one_worker / row["wall_s"], 2)
    io.write_json(args.out, {
        "grid": GRID,
        "device": "cpu",
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads_default": torch.get_num_threads(),
        "dvc": dvc.__version__,
        "rows": rows,
    })


if __name__ == "__main__":
    main()
