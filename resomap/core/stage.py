"""What every stage script shares: its cell from argv, one-line errors, a non-zero exit, and
SIGINT/SIGTERM turned into a flag that long loops poll at safe points."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from types import FrameType

from resomap.core.errors import ResoMapError
from resomap.core.grid import Cell


def cell_from_argv(argv: list[str], usage: str) -> Cell:
    """MODEL RESOLUTION SEED, as dvc.yaml passes them."""
    if len(argv) != 3 or not argv[1].isdigit() or not argv[2].isdigit():
        raise ResoMapError(f"usage: {usage}")
    return Cell(argv[0], int(argv[1]), int(argv[2]))


def run_stage(main: Callable[[list[str]], None]) -> None:
    """Run a stage's main; a user-fixable error prints one line and exits 2, anything else raises."""
    try:
        main(sys.argv[1:])
    except ResoMapError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


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
