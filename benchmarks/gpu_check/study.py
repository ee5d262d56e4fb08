"""A tiny study through a real `dvc repro` on CUDA with every explain method, trained with the
recipes whose GPU paths the CPU tests cannot reach: the LR range test (CUDA random state forked),
progressive resizing on the device, the micro-batch probe, mixing, EMA, top-k checkpoints and a
pseudo-labelling phase.

The project's code is copied into a fresh git + DVC repo (the tests' make_study_repo); the study
is composed into params.yaml from conf/ by `python -m tools.compose` with a tiny grid as Hydra
overrides; `dvc repro` runs with RESOMAP_DEVICE=cuda. Passes when every stage ran, the train and profile metrics say cuda, and
every method left explain scores, and the train metrics hold what each recipe records."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from benchmarks.gpu_check.common import check_main, require, result, tool_env

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from helpers.study_repo import compose, git_commit, make_study_repo  # noqa: E402  (the tests' study repo, not a copy of it)

METHODS = ["gradcam", "gradcam_pp", "integrated_gradients", "saliency", "smoothgrad"]
MODEL, RESOLUTION = "tiny_cnn", 32
OVERRIDES = [  # Hydra's, as after `dvc exp run -S`: the composed params.yaml keeps a valid stamp
    f"models=[{MODEL}]", f"resolutions=[{RESOLUTION}]", "seeds=[0]",
    "data.images.train=200", "data.images.val=40", "data.images.test=40",
    "train.epochs=2", "train.batch_size=32", "train.warmup_epochs=0",
    "profile.batch_size=8", "profile.warmup=2", "profile.repeats=5", "profile.min_seconds=0.0", "profile.batch_repeats=2",
    "explain.num_images=4", f"explain.methods=[{','.join(METHODS)}]", "explain.ig_steps=8",
]
RECIPES = [
    "train.lr=auto", "train.lr_range.steps=20", "train.progressive={start_resolution:16,end_epoch:2}",
    "train.micro_batch_size=auto", "train.mixup_alpha=0.2", "train.cutmix_alpha=1.0", "train.ema_decay=0.9",
    "train.augment.policy=randaugment", "train.save_top_k=2",
    "data.images.unlabeled=100", "train.pseudo_label={threshold:0.3,epochs:1,lr_factor:0.1}",
]
CELL = f"{MODEL}-{RESOLUTION}-0"
STAGES = {"check", f"prepare@{RESOLUTION}", f"train@{CELL}", f"evaluate@{CELL}", f"profile@{MODEL}-{RESOLUTION}", f"explain@{CELL}", "aggregate"}


def sh(command: list[str], cwd: Path, env: dict | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, env=env or tool_env(), capture_output=True, text=True)
    output = done.stdout + done.stderr
    print(f"$ {' '.join(command)}\n{output}", flush=True)
    require(done.returncode == 0, f"`{' '.join(command[:4])}` failed (exit {done.returncode}): {output.strip().splitlines()[-1:] or ''}")
    return output


def run(work: Path) -> dict:
    repo = make_study_repo(work / "study", tiny=False)
    compose(repo, *OVERRIDES, *RECIPES)
    git_commit(repo, "tiny GPU study")
    output = sh([sys.executable, "-m", "dvc", "repro"], repo, tool_env(RESOMAP_DEVICE="cuda"))
    ran = set(re.findall(r"Running stage '([^']+)'", output))
    missing = sorted(STAGES - ran)
    require(not missing, f"stages that did not run: {', '.join(missing)}")
    train = json.loads((repo / f"metrics/train/{MODEL}/{RESOLUTION}/0/metrics.json").read_text())
    profile = json.loads((repo / f"metrics/profile/{MODEL}/{RESOLUTION}/metrics.json").read_text())
    explain = json.loads((repo / f"metrics/explain/{MODEL}/{RESOLUTION}/0/metrics.json").read_text())
    evaluate = json.loads((repo / f"metrics/evaluate/{MODEL}/{RESOLUTION}/0/metrics.json").read_text())
    devices = {"train": train.get("device"), "profile": profile.get("device")}
    require(all(device == "cuda" for device in devices.values()), f"metrics say device {devices}, not cuda")
    absent = [method for method in METHODS if method not in explain]
    require(not absent, f"explain metrics lack {', '.join(absent)}")
    require((repo / "reports/report.html").is_file(), "aggregate wrote no reports/report.html")
    pseudo = train.get("pseudo_label") or {}
    require(train.get("lr_found") and train.get("micro_batch_size") == 32 and pseudo.get("pool") == 100 and train["epochs_run"] == 3,
            f"recipe records: lr_found {train.get('lr_found')}, micro_batch_size {train.get('micro_batch_size')} (32 fits), "
            f"pseudo_label {pseudo}, epochs_run {train['epochs_run']} (2 + 1)")
    figure = (f"{len(ran)} stages ran on cuda ({profile.get('device_name')}), 5 explain methods, "
              f"test accuracy {evaluate['accuracy']:.3f}, profile {profile['latency_ms']:.3f} ms/img; "
              f"lr_found {train['lr_found']:.3g}, {pseudo['kept']}/100 pseudo-labels kept")
    return result(True, figure, stages=sorted(ran), devices=devices, explain_methods=[m for m in METHODS if m in explain],
                  test_accuracy=evaluate["accuracy"], latency_ms=profile["latency_ms"], power_w_mean=profile.get("power_w_mean"),
                  train_seconds=train.get("train_seconds"), lr_found=train["lr_found"], pseudo_label=pseudo,
                  micro_batch_size=train["micro_batch_size"])


if __name__ == "__main__":
    check_main(run, __doc__)
