"""Where each stage writes, per cell: one home for the layout that dvc.yaml declares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class FinetuneCell:
    """A FixRes fine-tune: cell (model, source, seed) tuned at `target` (grid.finetune's entries)."""

    model: str
    source: int = field(metadata={"key": "from"})
    target: int = field(metadata={"key": "to"})
    seed: int

    @property
    def origin(self) -> Cell:
        return Cell(self.model, self.source, self.seed)

    @property
    def key(self) -> Path:
        return Path(self.model) / f"{self.source}to{self.target}" / str(self.seed)

    def __str__(self) -> str:
        return f"{self.model}-{self.source}to{self.target}-{self.seed}"


SOURCE_FINGERPRINT = Path("data/source.json")  # the check stage's output; prepare depends on it


def prepared_dir(resolution: int) -> Path:
    return Path("data/prepared") / str(resolution)


UNLABELED = "unlabeled"  # prepared_dir's folder of the pseudo-labelling pool, beside train/val/test when there is one


def _per_cell(root: str) -> Callable[[Cell | FinetuneCell], Path]:
    """The folder of one cell under `root`: root/MODEL/RESOLUTION/SEED (a fine-tune's: root/MODEL/FROMtoTO/SEED)."""

    def folder(cell: Cell | FinetuneCell) -> Path:
        return Path(root) / cell.key

    return folder


model_dir = _per_cell("models")
train_metrics_dir = _per_cell("metrics/train")
evaluate_metrics_dir = _per_cell("metrics/evaluate")
evaluate_plots_dir = _per_cell("plots/evaluate")
surface_metrics_dir = _per_cell("metrics/surface")
surface_plots_dir = _per_cell("plots/surface")
explain_metrics_dir = _per_cell("metrics/explain")
explanations_dir = _per_cell("explanations")
explain_plots_dir = _per_cell("plots/explain")
gallery_plots_dir = _per_cell("plots/gallery")

# fine-tune cells (FinetuneCell; Params.finetune_cells lists the study's): FROMtoTO in place of the resolution
finetune_model_dir = _per_cell("models/finetune")
finetune_metrics_dir = _per_cell("metrics/finetune")
finetune_plots_dir = _per_cell("plots/finetune")


def profile_metrics_dir(model: str, resolution: int) -> Path:
    return Path("metrics/profile") / model / str(resolution)


REPORTS_DIR = Path("reports")
