"""Usage: python -m benchmarks.stage_overhead [--tiny] [--out benchmarks/results/stage_overhead.json]

Where the default study's time goes: the stages' work, or the pipeline's own cost around it. In a
fresh git + DVC copy of the project (its params.yaml: the default study) it runs

- the whole study with `dvc repro`, every stage logging its start-up (interpreter + imports) and
  its work (RESOMAP_STAGE_LOG): the wall time against the sum of the work;
- per stage kind, on the smallest cell: `python -X importtime` of the stage module (total and the
  top imports), the stage's command run alone (start-up and work), and `dvc repro -f -s` of it
  (DVC's own time = its wall time less the command's);
- `dvc repro` with nothing to do.

--tiny runs the tests' tiny study instead (seconds, for a smoke test; its figures mean little).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from resomap.core import io
from resomap.core.config import load_params
from resomap.core.environment import STAGE_LOG_ENV

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers.study_repo import make_study_repo, tool_env  # noqa: E402  (the tests' study repo, not a copy of it)

KINDS = ("check", "prepare", "train", "evaluate", "profile", "explain", "aggregate")


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    """Wall seconds of `cmd`, which must succeed."""
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds


def stage_log(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    path.unlink(missing_ok=True)
    return rows


def import_profile(kind: str, cwd: Path, env: dict, top: int = 6) -> dict:
    """`python -X importtime -c 'import stages.KIND'`: its total, and the costliest packages it
    pulls in (each package's own import, wherever in the tree it first happens)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import stages.{kind}"], cwd=cwd, env=env,
                          capture_output=True, text=True, check=True)
    cumulative = {}
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| *(\S+)", line)
        if match:
            cumulative[match.group(2)] = int(match.group(1)) / 1e6
    packages = {name: s for name, s in cumulative.items() if "." not in name and name not in ("stages", "resomap")}
    ranked = sorted(packages.items(), key=lambda item: -item[1])[:top]
    return {"imports_s": round(cumulative[f"stages.{kind}"], 3), "top_imports": {name: round(s, 3) for name, s in ranked}}


def smallest_cells(repo: Path) -> dict[str, tuple[str, list[str]]]:
    """Per kind: the DVC stage name and the argv of the study's smallest cell."""
    params = load_params(repo / "params.yaml")
    model, resolution, seed = params.models[0], str(min(params.grid_resolutions)), str(params.seeds[0])
    cell = f"{model}-{resolution}-{seed}"
    return {
        "check": ("check", []),
        "prepare": (f"prepare@{resolution}", [resolution]),
        "train": (f"train@{cell}", [model, resolution, seed]),
        "evaluate": (f"evaluate@{cell}", [model, resolution, seed]),
        "profile": (f"profile@{model}-{resolution}", [model, resolution]),
        "explain": (f"explain@{cell}", [model, resolution, seed]),
        "aggregate": ("aggregate", []),
    }


def measure_kind(kind: str, stage: str, argv: list[str], repo: Path, env: dict, log: Path) -> dict:
    row = import_profile(kind, repo, env)
    row["command_s"] = round(timed([sys.executable, "-m", f"stages.{kind}", *argv], repo, env), 3)
    (alone,) = stage_log(log)
    row.update(startup_s=alone["startup_s"], work_s=alone["work_s"])
    dvc_wall = timed([sys.executable, "-m", "dvc", "repro", "-f", "-s", stage], repo, env)
    (under_dvc,) = stage_log(log)
    row["dvc_repro_s"] = round(dvc_wall, 3)
    row["dvc_own_s"] = round(dvc_wall - under_dvc["startup_s"] - under_dvc["work_s"], 3)
    print(f"{kind}: imports {row['imports_s']:.2f} s, alone {row['command_s']:.2f} s "
          f"(work {row['work_s']:.2f} s), under dvc {dvc_wall:.2f} s", flush=True)
    return row


def measure_study(repo: Path, env: dict, log: Path) -> dict:
    wall = timed([sys.executable, "-m", "dvc", "repro"], repo, env)
    rows = stage_log(log)
    work = sum(r["work_s"] for r in rows)
    startup = sum(r["startup_s"] for r in rows)
    by_kind = {kind: round(sum(r["work_s"] for r in rows if r["stage"] == kind), 2) for kind in KINDS}
    train_seconds = sum(
        json.loads(p.read_text())["train_seconds"] for p in (repo / "metrics/train").rglob("metrics.json")
    )
    print(f"study: {len(rows)} stages in {wall:.1f} s, work {work:.1f} s ({work / wall:.0%})", flush=True)
    return {
        "stages": len(rows), "wall_s": round(wall, 2), "work_s": round(work, 2), "startup_s": round(startup, 2),
        "dvc_own_s": round(wall - work - startup, 2), "fixed_cost_share": round(1 - work / wall, 3),
        "work_s_by_kind": by_kind, "train_seconds": round(train_seconds, 2),
    }


def conditions() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"date": datetime.date.today().isoformat(), "cpu": cpu, "cores": len(os.sched_getaffinity(0)),
            "torch_version": torch.__version__, "device": "cuda" if torch.cuda.is_available() else "cpu"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/stage_overhead.json"))
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny study, not the default one")
    args = parser.parse_args()
    result = {"conditions": {**conditions(), "study": "tiny" if args.tiny else "default"}}
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_study_repo(Path(tmp) / "study", tiny=args.tiny)
        log = Path(tmp) / "stages.jsonl"
        env = tool_env(**{STAGE_LOG_ENV: str(log)})
        result["study"] = measure_study(repo, env, log)
        result["stages"] = {kind: measure_kind(kind, *cell, repo, env, log) for kind, cell in smallest_cells(repo).items()}
        timed([sys.executable, "-m", "dvc", "repro"], repo, env)  # aggregate again, after the forced cells
        stage_log(log)
        result["noop_repro_s"] = round(min(timed([sys.executable, "-m", "dvc", "repro"], repo, env) for _ in range(3)), 3)
    io.write_json(args.out, result)
    print(f"dvc repro with nothing to do: {result['noop_repro_s']:.2f} s -> {args.out}")


if __name__ == "__main__":
    main()
