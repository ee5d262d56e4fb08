"""Where each stage writes, per cell: one home for the layout that dvc.yaml declares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Cell:
    model: str
    resolution: int
    seed: int

    @property
    def key(self) -> Path:
        return Path(self.model) / str(self.resolution) / str(self.seed)

    def __str__(self) -> str:
        return f"{self.model}-{self.resolution}-{self.seed}"


SOURCE_FINGERPRINT = Path("data/source.json")  # the check stage's output; prepare depends on it


def prepared_dir(resolution: int) -> Path:
    return Path("data/prepared") / str(resolution)


def model_dir(cell: Cell) -> Path:
    return Path("models") / cell.key


def train_metrics_dir(cell: Cell) -> Path:
    return Path("metrics/train") / cell.key


def evaluate_metrics_dir(cell: Cell) -> Path:
    return Path("metrics/evaluate") / cell.key


def evaluate_plots_dir(cell: Cell) -> Path:
    return Path("plots/evaluate") / cell.key


def profile_metrics_dir(model: str, resolution: int) -> Path:
    return Path("metrics/profile") / model / str(resolution)


def explain_metrics_dir(cell: Cell) -> Path:
    return Path("metrics/explain") / cell.key


def explanations_dir(cell: Cell) -> Path:
    return Path("explanations") / cell.key


def explain_plots_dir(cell: Cell) -> Path:
    return Path("plots/explain") / cell.key


REPORTS_DIR = Path("reports")
