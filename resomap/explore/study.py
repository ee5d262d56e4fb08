"""What the explorer reads from the workspace: the trained cells of params.yaml's grid, their
scores, and the test split at each resolution (image i is the same scene at every one)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from resomap.core import io
from resomap.core.config import Params
from resomap.core.errors import ResoMapError
from resomap.core.grid import Cell, evaluate_metrics_dir, evaluate_plots_dir, model_dir, prepared_dir, profile_metrics_dir
from resomap.data.prepared import Split, load_classes, load_split
from resomap.prepare.resize import resize_image


@dataclass(frozen=True)
class ExploredCell:
    cell: Cell
    accuracy: float | None  # test accuracy (evaluate), None before evaluate ran
    latency_ms: float | None  # batch-1 latency (profile)


def _read_key(path: Path, key: str) -> float | None:
    return io.read_json(path).get(key) if path.is_file() else None


@dataclass
class ExploredStudy:
    params: Params
    classes: list[str]
    cells: list[ExploredCell]  # the grid's cells whose weights exist, by model, seed, resolution
    _tests: dict[int, Split] = field(default_factory=dict)

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(c.cell.model for c in self.cells))

    @property
    def seeds(self) -> list[int]:
        return sorted({c.cell.seed for c in self.cells})

    @property
    def resolutions(self) -> list[int]:
        return sorted({c.cell.resolution for c in self.cells})

    def cells_of(self, model: str, seed: int) -> dict[int, ExploredCell]:
        """By resolution: the trained cells of one model and seed."""
        return {c.cell.resolution: c for c in self.cells if (c.cell.model, c.cell.seed) == (model, seed)}

    def _test(self, resolution: int) -> Split:
        """The test split at `resolution`, read once."""
        if resolution not in self._tests:
            self._tests[resolution] = load_split(prepared_dir(resolution) / "test")
        return self._tests[resolution]

    def test_images(self, resolution: int) -> np.ndarray:
        """uint8 (N, R, R, 3): the test split as prepare wrote it, the images that cell was scored on."""
        return self._test(resolution).images.permute(0, 2, 3, 1).numpy()  # a view: prepare wrote N x R x R x 3

    @cached_property
    def test_labels(self) -> np.ndarray:
        return self._test(self.resolutions[0]).labels.numpy()

    def predictions(self, cell: Cell) -> pd.DataFrame | None:
        """The evaluate stage's per-image predictions of a cell, None before evaluate ran."""
        path = evaluate_plots_dir(cell) / "predictions.csv"
        return pd.read_csv(path) if path.is_file() else None


class NoTrainedCells(ResoMapError):
    """The workspace holds no weights of the grid: nothing to explore yet."""


def load_explored_study(params: Params) -> ExploredStudy:
    """The grid's cells whose model.pt exists, with their test accuracy and latency."""
    grid = itertools.product(params.models, params.seeds, sorted(params.grid_resolutions))
    trained = [Cell(model, resolution, seed) for model, seed, resolution in grid if (model_dir(Cell(model, resolution, seed)) / "model.pt").is_file()]
    if not trained:
        raise NoTrainedCells("no trained cell in this workspace (models/MODEL/RES/SEED/model.pt): run `dvc repro` first, "
                             "or `dvc pull` to fetch a study's outputs")
    cells = [ExploredCell(cell, _read_key(evaluate_metrics_dir(cell) / "metrics.json", "accuracy"),
                          _read_key(profile_metrics_dir(cell.model, cell.resolution) / "metrics.json", "latency_ms"))
             for cell in trained]
    return ExploredStudy(params, load_classes(prepared_dir(trained[0].resolution)), cells)


@dataclass(frozen=True)
class Source:
    """The image being looked at: test image `index`, or an upload (its decoded pixels)."""

    index: int | None = None
    upload: np.ndarray | None = None
    name: str = ""

    @property
    def key(self) -> str:
        return f"test-{self.index}" if self.index is not None else f"upload-{self.name}-{hash(self.upload.tobytes())}"


def seen_at(study: ExploredStudy, source: Source, resolution: int) -> np.ndarray:
    """The image as the cell at `resolution` sees it: the prepared test image, or the upload resized
    by prepare's own policy (shorter side to R, bicubic, centre crop)."""
    if source.index is not None:
        return study.test_images(resolution)[source.index]
    return resize_image(source.upload, resolution)
