"""Usage: python -m stages.aggregate

Collect every cell of the grid in params.yaml into reports/cells.csv and reports/summary.json.
"""

import itertools

from resomap import io
from resomap.aggregate import cells_table, study_summary
from resomap.config import load_params
from resomap.errors import ResoMapError
from resomap.paths import REPORTS_DIR, Cell
from resomap.stage import run_stage


def main(argv: list[str]) -> None:
    if argv:
        raise ResoMapError(f"usage: {__doc__.splitlines()[0]}")
    params = load_params()
    cells = [Cell(*c) for c in itertools.product(params.models, sorted(params.resolutions), params.seeds)]
    table = cells_table(cells)
    with io.atomic_open(REPORTS_DIR / "cells.csv") as f:
        table.to_csv(f, index=False, lineterminator="\n")
    io.write_json(REPORTS_DIR / "summary.json", study_summary(table))
    print(f"aggregate: {len(table)} cells, {len(table.columns)} columns -> {REPORTS_DIR / 'cells.csv'}")


if __name__ == "__main__":
    run_stage(main)
