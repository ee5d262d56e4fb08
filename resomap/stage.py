"""What every stage script shares: its cell from argv, one-line errors, a non-zero exit."""

from __future__ import annotations

import sys
from typing import Callable

from resomap.errors import ResoMapError
from resomap.paths import Cell


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
