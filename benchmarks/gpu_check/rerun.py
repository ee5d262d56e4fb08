"""Rerun and resume weight differences of the real train stage, default and deterministic.

One small cell (`python -m stages.train`, as DVC runs it) is trained twice and once stopped by
SIGTERM after its first epoch and resumed, with default settings and with RESOMAP_DETERMINISTIC=1.
Reports the max abs weight difference of the rerun and of the resumed run against the first run;
passes when deterministic mode gives 0 for both (default mode may differ: cudnn autotuning and
atomics)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from benchmarks.gpu_check.common import check_main, max_abs_diff, prepare, result, tool_env

REPO = Path(__file__).resolve().parents[2]
MODEL, RESOLUTION, SEED, EPOCHS = "resnet8", 32, 0, 6
DETERMINISTIC_ENV = "RESOMAP_DETERMINISTIC"
WEIGHTS = Path(f"models/{MODEL}/{RESOLUTION}/{SEED}/model.pt")


def deterministic_interface() -> bool:
    """Whether the project reads RESOMAP_DETERMINISTIC (another change adds it to resomap/core)."""
    return any(DETERMINISTIC_ENV in (REPO / "resomap/core" / name).read_text() for name in ("environment.py", "device.py"))


def cell_dir(path: Path, prepared: Path) -> Path:
    path.mkdir(parents=True)
    shutil.copytree(prepared, path / f"data/prepared/{RESOLUTION}")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(models=[MODEL], resolutions=[RESOLUTION], seeds=[SEED])
    params["train"].update(epochs=EPOCHS, warmup_epochs=1)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def train(cwd: Path, env: dict, stop_after_epoch: int | None = None) -> str:
    """The train stage in `cwd`, its stdout and stderr; with `stop_after_epoch`, one SIGTERM once it has
    printed that epoch's summary line (stdout holds only the stage's prints; progress bars go to stderr)."""
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen([sys.executable, "-m", "stages.train", MODEL, str(RESOLUTION), str(SEED)], cwd=cwd, env=env,
                                stdout=subprocess.PIPE, stderr=errors, text=True)
        lines, signalled = [], False
        for line in proc.stdout:
            lines.append(line)
            if stop_after_epoch is not None and not signalled and line.startswith(f"epoch {stop_after_epoch}/") and "train_loss" in line:
                proc.send_signal(signal.SIGTERM)  # once: a second signal acts as usual (kills)
                signalled = True
        proc.wait()
        errors.seek(0)
        output = "".join(lines) + errors.read()
    print(f"$ stages.train in {cwd} (exit {proc.returncode})\n{output}", flush=True)
    if stop_after_epoch is None and proc.returncode != 0:
        raise RuntimeError(f"train stage failed (exit {proc.returncode}): {output.strip().splitlines()[-1:]}")
    return output


def weights(cwd: Path) -> dict:
    from resomap.core import io

    return io.load_state_dict(cwd / WEIGHTS)


def mode(work: Path, prepared: Path, name: str, env: dict) -> dict:
    first = cell_dir(work / name / "first", prepared)
    second = cell_dir(work / name / "second", prepared)
    resumed = cell_dir(work / name / "resumed", prepared)
    train(first, env)
    train(second, env)
    stopped = train(resumed, env, stop_after_epoch=1)
    interrupted = not (resumed / WEIGHTS).exists() and "stopped by SIGTERM" in stopped
    rerun = train(resumed, env) if interrupted else ""
    reference = weights(first)
    return {
        "rerun_max_abs_diff": max_abs_diff(reference, weights(second)),
        "resume_max_abs_diff": max_abs_diff(reference, weights(resumed)) if interrupted else None,
        "resumed": interrupted and "resumed train" in rerun,
    }


def run(work: Path) -> dict:
    prepared = prepare(work, RESOLUTION, train=1024)
    base = tool_env(PYTHONPATH=str(REPO), RESOMAP_DEVICE="cuda")
    base.pop(DETERMINISTIC_ENV, None)
    default = mode(work, prepared, "default", base)
    deterministic = mode(work, prepared, "deterministic", {**base, DETERMINISTIC_ENV: "1"})
    interface = deterministic_interface()

    def show(figures: dict) -> str:
        resume = "not resumed" if not figures["resumed"] else f"{figures['resume_max_abs_diff']:.3g}"
        return f"rerun {figures['rerun_max_abs_diff']:.3g}, resume {resume}"

    figure = f"max abs weight diff: default {show(default)}; deterministic {show(deterministic)}"
    ok = interface and deterministic["resumed"] and deterministic["rerun_max_abs_diff"] == 0 and deterministic["resume_max_abs_diff"] == 0
    if not interface:
        figure = f"{DETERMINISTIC_ENV} is not read by resomap/core (interface missing); {figure}"
    return result(ok, figure, model=MODEL, resolution=RESOLUTION, epochs=EPOCHS, default=default, deterministic=deterministic,
                  deterministic_interface=interface)


if __name__ == "__main__":
    check_main(run, __doc__)
