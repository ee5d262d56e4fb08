"""Run a command with a small or read-only tmpfs mounted over one folder: a real full disk and a
real read-only filesystem, in a private mount namespace (`unshare`), so nothing outside changes."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

_SCRIPT = """
mount -t tmpfs -o "$1" tmpfs "$2" || exit 99
dir="$2"; shift 2
"$@"
rc=$?
find "$dir" -type f -printf '%P\\n' > "$LEFT"
exit $rc
"""


def on_tmpfs(folder: Path, options: str, command: list[str], cwd: Path, env: dict) -> tuple[subprocess.CompletedProcess, list[str]]:
    """`command` run with a tmpfs (mount `options`, e.g. "size=1m" or "ro") over `folder`; its
    result and the files (not folders) left under the folder when it ended (the mount goes with the namespace).
    Skips the test where this host cannot make a mount namespace."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.strip()}")
    folder.mkdir(parents=True, exist_ok=True)
    left = cwd / ".left-on-tmpfs.txt"
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", _SCRIPT, "sh", options, str(folder), *command],
        cwd=cwd, env={**env, "LEFT": str(left)}, capture_output=True, text=True, timeout=300,
    )
    if done.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    return done, sorted(left.read_text().split()) if left.exists() else []


def file_size_limit(nbytes: int):
    """preexec_fn for subprocess: files may grow to `nbytes` at most, and going past it is the
    error EFBIG (SIGXFSZ ignored), as a full disk is ENOSPC: the stand-in where no tmpfs can be mounted."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return limit


def tree(folder: Path) -> list[str]:
    """Every file under `folder`, relative, hidden ones too."""
    return sorted(str(Path(dirpath, name).relative_to(folder)) for dirpath, _, names in os.walk(folder) for name in names)
