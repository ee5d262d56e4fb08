"""What every stage script shares: its cell from argv, one-line errors, a non-zero exit,
SIGINT/SIGTERM turned into a flag that long loops poll at safe points, and (on request) a line of
timings that splits the stage's wall time into start-up and work."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from resomap.core.environment import stage_log
from resomap.core.errors import Interrupted, ResoMapError
from resomap.core.grid import Cell


def usage_error(doc: str) -> ResoMapError:
    """The one-line error for bad arguments: the usage line a stage script's docstring starts with."""
    return ResoMapError(doc.splitlines()[0].replace("Usage: ", "usage: ", 1))


def cell_from_argv(argv: list[str], doc: str) -> Cell:
    """MODEL RESOLUTION SEED, as dvc.yaml passes them."""
    if len(argv) != 3 or not argv[1].isdigit() or not argv[2].isdigit():
        raise usage_error(doc)
    return Cell(argv[0], int(argv[1]), int(argv[2]))


def run_stage(main: Callable[[list[str]], None]) -> None:
    """Run a stage's main and exit: 0; 2 after one line for a user-fixable error; 130 after one
    line for Ctrl-C (143 for SIGTERM in training). Anything else raises as usual (a traceback)."""
    startup_s, start = _process_age_s(), time.perf_counter()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on Ctrl-C is KeyboardInterrupt, caught below
    log = None
    try:
        log = stage_log()  # checked first: a bad path would otherwise fail after the work
        main(sys.argv[1:])
        code = 0
    except KeyboardInterrupt:  # Ctrl-C outside training's safe points: the atomic writers kept nothing half-written
        error = Interrupted(f"{Path(sys.argv[0]).stem} interrupted (Ctrl-C): nothing half-written was kept; run `dvc repro` again")
        print(f"error: {error}", file=sys.stderr)
        code = error.exit_code
    except ResoMapError as error:
        print(f"error: {error}", file=sys.stderr)
        code = error.exit_code
    if log is not None:
        _log_timings(log, startup_s, time.perf_counter() - start)
    _exit_now(code)


def exit_quietly_on_ctrl_c() -> None:
    """Until run_stage starts: a Ctrl-C while a stage is still importing (torch takes seconds) is
    one line and exit code 130, not a traceback from inside an import. Nothing is written yet."""

    def leave(signum: int, frame: FrameType | None) -> None:
        print("error: interrupted (Ctrl-C) while starting, before any work: nothing was written", file=sys.stderr)
        _exit_now(128 + signum)

    signal.signal(signal.SIGINT, leave)


def _exit_now(code: int) -> None:
    """Leave without Python's finalisation: with torch loaded, tearing down the module graph takes
    0.3-1 s of every stage. Every output is written and closed by now (atomic writes, context
    managers); only the standard streams are left to flush."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _process_age_s() -> float | None:
    """Seconds since this process started (Linux, 10 ms resolution): at a stage's main, the
    interpreter's start-up and the imports. None where /proc does not say."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])
        return uptime_s - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time in ticks
    except (OSError, ValueError, IndexError):
        return None


def _log_timings(path: Path, startup_s: float | None, work_s: float) -> None:
    """One line per stage run; appended in one write, so stages running at once do not interleave."""
    startup = None if startup_s is None else round(startup_s, 2)
    row = {"stage": Path(sys.argv[0]).stem, "argv": sys.argv[1:], "startup_s": startup, "work_s": round(work_s, 4)}
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


class StopSignals:
    """SIGINT/SIGTERM set a flag that training polls at safe points; a second signal acts as usual."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __call__(self) -> bool:
        return self.received is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else ""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __enter__(self) -> StopSignals:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
