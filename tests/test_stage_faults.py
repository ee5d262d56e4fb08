"""Stages run directly, as a user would, on the faults of docs/robustness.md: each ends with one
line and a non-zero exit (130 for Ctrl-C), and nothing half-written is left behind."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.env import stage_env
from helpers.small_disk import file_size_limit, on_tmpfs, tree
from helpers.study_repo import shipped_params
from resomap.core import io
from resomap.core.errors import ResoMapError
from resomap.core.io import save_state_dict
from resomap.models.registry import build_model


def study_dir(path: Path, **data) -> Path:
    """A folder holding params.yaml (the shipped one, one cell at 32 px, tiny training, `data` changes)."""
    grid = {"models": ["tiny_cnn"], "resolutions": [32], "seeds": [0], "train.epochs": 1, "train.warmup_epochs": 0}
    return shipped_params(path, grid | {f"data.{key}": value for key, value in data.items()})


def stage(cwd: Path, *argv: str, **popen) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *argv], cwd=cwd, env=stage_env(), capture_output=True, text=True, timeout=300, **popen)


def temp_files(folder: Path) -> list[str]:
    return [name for name in tree(folder) if name.endswith(".tmp")]


def last_line(done: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr.strip().splitlines()[-1]


@pytest.fixture
def trained_cell(tmp_path, tiny_synthetic) -> Path:
    """A study folder with the prepared 32 px data and untrained tiny_cnn weights as its model."""
    cwd = study_dir(tmp_path / "study")
    shutil.copytree(tiny_synthetic, cwd / "data/prepared/32")
    save_state_dict(cwd / "models/tiny_cnn/32/0/model.pt", build_model("tiny_cnn", 10).state_dict())
    return cwd


def test_a_truncated_model_file_is_one_line_naming_it_and_the_fix(trained_cell):
    weights = trained_cell / "models/tiny_cnn/32/0/model.pt"
    weights.write_bytes(weights.read_bytes()[:1000])
    done = stage(trained_cell, "stages.evaluate", "tiny_cnn", "32", "0")
    assert done.returncode == 2
    assert last_line(done).startswith("error: models/tiny_cnn/32/0/model.pt is truncated or corrupt (")
    assert "restore it with `dvc checkout models/tiny_cnn/32/0/model.pt`" in last_line(done)
    assert tree(trained_cell / "metrics") == []


def test_a_missing_model_file_is_one_line(trained_cell):
    (trained_cell / "models/tiny_cnn/32/0/model.pt").unlink()
    done = stage(trained_cell, "stages.explain", "tiny_cnn", "32", "0")
    assert done.returncode == 2
    weights = "models/tiny_cnn/32/0/model.pt"
    assert last_line(done) == f"error: {weights} not found: run `dvc repro` (or `dvc checkout {weights}`) to make it"


def test_a_read_only_models_folder_stops_train_before_it_writes_anything(trained_cell):
    shutil.rmtree(trained_cell / "models")
    done, left = on_tmpfs(trained_cell / "models", "ro", [sys.executable, "-m", "stages.train", "tiny_cnn", "32", "0"],
                          trained_cell, stage_env())
    assert done.returncode == 2, done.stderr
    assert last_line(done) == (
        "error: cannot write models/tiny_cnn/32/0: Read-only file system: "
        "the filesystem is read-only: run where it is writable; nothing was replaced"
    )
    assert left == [] and tree(trained_cell / "metrics") == []  # no curves that would not match a model.pt


def test_a_disk_too_small_for_prepare_is_named_with_the_bytes_before_anything_is_written(tmp_path):
    cwd = study_dir(tmp_path / "study", images={"train": 400, "val": 100, "test": 100})
    done, left = on_tmpfs(cwd / "data/prepared", "size=1m", [sys.executable, "-m", "stages.prepare", "32"], cwd, stage_env())
    assert done.returncode == 2, done.stderr
    assert last_line(done) == (
        "error: prepare 32px (600 images) needs 2.0 MB in data/prepared/32 but only 1.0 MB is free there: "
        "free disk space, or move the repository to a larger disk"
    )
    assert left == []


def test_a_disk_that_fills_during_prepare_is_an_error_not_sigbus_and_leaves_no_temp_file(tmp_path):
    # the space check passes (the disk is large) but the file may not grow past 1 MB: the
    # reservation fails as it would on a disk filled by another process meanwhile
    cwd = study_dir(tmp_path / "study", images={"train": 400, "val": 100, "test": 100})
    done = stage(cwd, "stages.prepare", "32", preexec_fn=file_size_limit(1_000_000))
    assert done.returncode == 2, done.stderr
    line = last_line(done)
    assert line.startswith("error: cannot write data/prepared/32/train/images.npy: File too large: ")
    assert line.endswith("raise the file-size limit (ulimit -f); nothing was replaced")
    assert tree(cwd / "data") == []
    assert temp_files(cwd / ".resomap/prepare") == []  # where the split was being written


def test_atomic_writes_turn_a_full_disk_into_one_line(tmp_path):
    code = (
        "import sys\nfrom pathlib import Path\nfrom resomap.core import io\n"
        "try:\n    io.write_npy(Path('out/big.npy'), __import__('numpy').zeros(2_000_000))\n"
        "except io.ResoMapError as e:\n    print(e)\n"
    )
    done, left = on_tmpfs(tmp_path / "out", "size=1m", [sys.executable, "-c", code], tmp_path, stage_env())
    assert done.stdout.strip() == "cannot write out/big.npy: No space left on device: free disk space there; nothing was replaced"
    assert left == []


def test_temp_files_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "metrics.json"
    writer = subprocess.Popen(
        [sys.executable, "-c", f"from resomap.core import io\nwith io.atomic_open({str(target)!r}) as f:\n"
                               "    f.write('x'); f.flush(); print('writing', flush=True); import time; time.sleep(60)"],
        env=stage_env(), stdout=subprocess.PIPE, text=True,
    )
    assert writer.stdout.readline() == "writing\n"
    writer.kill()
    writer.wait()
    (orphan,) = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert f"-{writer.pid}." in orphan.name
    io.write_json(target, {"ok": True})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_live_writers_temp_file_is_left_alone(tmp_path):
    target = tmp_path / "state.pt"
    with io.atomic_path(target) as mine:
        mine.write_text("in progress")
        io.write_json(target, {})  # the same path written meanwhile, by this live process
        assert mine.exists()


def test_ctrl_c_during_prepare_is_one_line_exit_130_and_leaves_no_temp_file(tmp_path):
    cwd = study_dir(tmp_path / "study", images={"train": 1500, "val": 200, "test": 200})
    process = subprocess.Popen([sys.executable, "-m", "stages.prepare", "64"], cwd=cwd, env=stage_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    scratch = cwd / ".resomap/prepare/64"
    deadline = time.monotonic() + 60
    while not temp_files(scratch):  # the train split being written
        assert time.monotonic() < deadline and process.poll() is None, "prepare never started writing"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err.strip().splitlines()[-1] == (
        "error: prepare interrupted (Ctrl-C): nothing half-written was kept, and the splits already finished "
        "wait in .resomap/prepare/64 for the next run; run `dvc repro` again"
    )
    assert tree(cwd / "data") == [] and temp_files(scratch) == []


def test_ctrl_c_while_a_stage_is_still_importing_is_one_line_exit_130(trained_cell):
    process = subprocess.Popen([sys.executable, "-m", "stages.explain", "tiny_cnn", "32", "0"], cwd=trained_cell,
                               env=stage_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # past the interpreter's start, inside torch's import (seconds)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err.strip() in (
        "error: interrupted (Ctrl-C) while starting, before any work: nothing was written",
        "error: explain interrupted (Ctrl-C): nothing half-written was kept; run `dvc repro` again",  # a slow host
    )


def test_a_thin_image_never_becomes_a_huge_one(tmp_path):
    # 1 x 1,000,000 px: under the pixel limit, but "shorter side to R" first would be R x 10^6 R
    path = tmp_path / "thin.png"
    Image.fromarray(np.full((1, 1_000_000, 3), 200, dtype=np.uint8)).save(path)
    code = (
        "from pathlib import Path\nfrom resomap.prepare.decode import load_rgb\nfrom resomap.prepare.resize import resize_image\n"
        f"out = resize_image(load_rgb({str(path)!r}), 64)\n"
        "peak_kb = [line.split()[1] for line in Path('/proc/self/status').read_text().splitlines() if line.startswith('VmHWM')][0]\n"
        "print(out.shape, int(out.mean()), int(peak_kb) // 1024)"  # VmHWM: this process's peak (ru_maxrss outlives exec)
    )
    done = subprocess.run([sys.executable, "-c", code], env=stage_env(), capture_output=True, text=True, check=True)
    shape, value, peak_mb = done.stdout.rsplit(" ", 2)
    assert shape == "(64, 64, 3)" and value == "200"
    assert int(peak_mb) < 300, f"peak RSS {peak_mb} MB"  # was 1.85 GB at 16 px, MemoryError at 64


def test_a_square_image_resizes_as_before(tmp_path):
    # the crop box of a square is the whole image: the built-in data's arrays did not change
    from resomap.prepare.resize import resize_image

    rgb = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(rgb).resize((32, 32), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(resize_image(rgb, 32), expected)


def test_check_writable_names_the_folder(tmp_path):
    blocker = tmp_path / "models"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(ResoMapError, match=r"^cannot write .*models/x: "):
        io.check_writable(blocker / "x")
