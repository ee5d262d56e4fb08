"""`python -m benchmarks.train_throughput` for resnet18 and resnet50 at 64 and 224 px against the
textbook loop, on the GPU; its rows are merged into benchmarks/results/train_throughput.json (a
row of the same model, resolution and device replaced, the others kept; `device` is the GPU's
name) and a copy goes to the evidence folder. Passes when every standing target holds (targets
are set for one H100): >= 3x the textbook loop at <= 128 px, >= 1.5x at >= 224 px, resnet50 at
224 px >= 3,000 img/s, resnet18 at 224 px >= 8,000 img/s in training."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.gpu_check.common import check_main, require, result, tool_env

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks/results/train_throughput.json"
MODELS, RESOLUTIONS = ["resnet18", "resnet50"], [64, 224]
ARGS = ["--batch-size", "256", "--steps", "20", "--warmup", "5"]
IMG_S_TARGETS = {("resnet50", 224): 3000.0, ("resnet18", 224): 8000.0}


def speedup_target(resolution: int) -> float | None:
    """The standing speed-up target over the textbook loop at `resolution` (none between 128 and 224 px)."""
    if resolution <= 128:
        return 3.0
    if resolution >= 224:
        return 1.5
    return None


def verdicts(rows: list[dict], models=MODELS, resolutions=RESOLUTIONS) -> list[dict]:
    """One verdict per target: what it asks, the measured value (None when the row is missing), pass."""
    by_cell = {(row["model"], row["resolution"]): row for row in rows}
    out = []
    for model in models:
        for resolution in resolutions:
            row = by_cell.get((model, resolution))
            needed = speedup_target(resolution)
            if needed is not None:
                value = row["ours_img_s"] / row["textbook_img_s"] if row and row["textbook_img_s"] else None
                out.append({"target": f"{model} {resolution}px ours/textbook >= {needed:g}x", "value": value,
                            "ok": value is not None and value >= needed})
            if (model, resolution) in IMG_S_TARGETS:
                needed = IMG_S_TARGETS[(model, resolution)]
                value = row["ours_img_s"] if row else None
                out.append({"target": f"{model} {resolution}px >= {needed:,.0f} img/s", "value": value,
                            "ok": value is not None and value >= needed})
    return out


def merge_rows(existing: list[dict], new: list[dict]) -> list[dict]:
    """`existing` with each row of `new` replacing the row of the same model, resolution and device
    (in place), or appended."""
    key = lambda row: (row["model"], row["resolution"], row["device"])
    merged = list(existing)
    index = {key(row): i for i, row in enumerate(merged)}
    for row in new:
        if key(row) in index:
            merged[index[key(row)]] = row
        else:
            index[key(row)] = len(merged)
            merged.append(row)
    return merged


def run(work: Path) -> dict:
    out = work / "rows.json"
    command = [sys.executable, "-m", "benchmarks.train_throughput", "--models", *MODELS,
               "--resolutions", *map(str, RESOLUTIONS), *ARGS, "--out", str(out)]
    done = subprocess.run(command, cwd=REPO, env=tool_env(RESOMAP_DEVICE="cuda"), capture_output=True, text=True)
    print(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}", flush=True)
    require(done.returncode == 0 and out.is_file(), f"train_throughput failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    rows = json.loads(out.read_text())
    require(all(not row["device"].startswith("cpu") for row in rows), f"rows measured on {rows[0]['device'] if rows else 'nothing'}, not a GPU")
    existing = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    RESULTS.write_text(json.dumps(merge_rows(existing, rows), indent=2) + "\n")
    if os.environ.get("GPU_CHECK_OUT"):
        shutil.copy(RESULTS, Path(os.environ["GPU_CHECK_OUT"]) / "train_throughput.json")
    checked = verdicts(rows)
    failed = [v for v in checked if not v["ok"]]
    speedups = ", ".join(f"{r['model']}@{r['resolution']} {r['ours_img_s']:,.0f} img/s {r['ours_img_s'] / r['textbook_img_s']:.2f}x" for r in rows)
    figure = f"{len(checked) - len(failed)}/{len(checked)} targets met: {speedups}"
    if failed:
        figure += "; missed: " + "; ".join(v["target"] for v in failed)
    return result(not failed, figure, device=rows[0]["device"] if rows else None, rows=rows, targets=checked, args=ARGS)


if __name__ == "__main__":
    check_main(run, __doc__)
