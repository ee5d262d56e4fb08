"""What every check shares: the result line it prints for the runner, the CUDA device, small
synthetic data through the project's own prepare, and the train params with a check's changes.

A check's `run(work)` returns `result(ok, figure, **details)` or raises; `check_main` turns either
into one line `GPU_CHECK_RESULT {json}` on stdout (the runner reads it) and the exit status.
torch and the project are imported inside the functions: importing a check module is cheap and
works on any machine."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

RESULT_MARKER = "GPU_CHECK_RESULT "
NUM_CLASSES = 10


class CheckFailed(Exception):
    """A check's assertion or a missing interface: its message is the check's key figure."""


def result(ok: bool, figure: str, **details) -> dict:
    return {"ok": bool(ok), "figure": figure, "details": details}


def require(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def check_main(run: Callable[[Path], dict], doc: str | None) -> None:
    """argv: [--work DIR] (default: a temp folder, removed afterwards). Prints the result line last
    and exits 0 when the check passed, 1 when it failed or raised."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0] if doc else None)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp folder)")
    args = parser.parse_args()
    try:
        if args.work is not None:
            args.work.mkdir(parents=True, exist_ok=True)
            outcome = run(args.work)
        else:
            with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
                outcome = run(Path(tmp))
    except CheckFailed as failed:
        outcome = result(False, str(failed))
    except Exception as error:  # a crash is this check's failure, never the runner's
        traceback.print_exc()
        outcome = result(False, f"error: {type(error).__name__}: {first_line(str(error))}")
    sys.stdout.flush()
    print(RESULT_MARKER + json.dumps(outcome, default=str), flush=True)
    sys.exit(0 if outcome["ok"] else 1)


def first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else ""


def cuda_device():
    """The GPU as the stages pick it (RESOMAP_DEVICE=cuda), backends configured as they do."""
    os.environ["RESOMAP_DEVICE"] = "cuda"
    from resomap.core.device import configure_backends, pick_device

    device = pick_device()
    configure_backends(device)
    return device


def prepare(root: Path, resolution: int, train: int, val: int = 100, test: int = NUM_CLASSES) -> Path:
    """The built-in synthetic data through prepare's own code: a data/prepared/RES-style folder."""
    from resomap.core.config import DataParams, ImageCounts
    from resomap.prepare.resolution import prepare_resolution

    out = root / "prepared" / str(resolution)
    if not (out / "manifest.json").is_file():
        prepare_resolution(DataParams(images=ImageCounts(train=train, val=val, test=test)), resolution, out)
    return out


def train_params(**changes):
    """params.yaml's train section (the repo root's), with `changes`; a study's `lr: auto` is the
    default rate here (the checks time and exercise code paths; the study check runs the test)."""
    import dataclasses

    from resomap.core.config import TrainParams, load_params

    train = load_params().train
    return dataclasses.replace(train, **{"lr": TrainParams.lr if train.lr == "auto" else train.lr, **changes})


def tool_env(**extra: str) -> dict:
    """os.environ with this interpreter's bin/ first on PATH (dvc and the stages' python are this
    venv's), plus `extra`."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, **extra}


def max_abs_diff(first: dict, second: dict) -> float:
    """Largest absolute difference over two state dicts' floating tensors (inf when keys or shapes differ)."""
    import torch

    if first.keys() != second.keys():
        return float("inf")
    worst = 0.0
    for key, a in first.items():
        b = second[key]
        if a.shape != b.shape:
            return float("inf")
        if a.is_floating_point():
            worst = max(worst, (a.detach().double().cpu() - b.detach().double().cpu()).abs().max().item() if a.numel() else 0.0)
        elif not torch.equal(a.cpu(), b.cpu()):
            worst = max(worst, (a.cpu().double() - b.cpu().double()).abs().max().item())
    return worst
