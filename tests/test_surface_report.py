"""The report side of the train x test surface, on the known study of tests/helpers/study_files.py
with planted surfaces: the best test resolution, its interval and McNemar counts, the gains of
recalibration, fine-tuning and TTA, the summary keys, surface.csv, the table and the heatmap."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from helpers.study_files import FINETUNED, MODELS, RESOLUTIONS, SEEDS, surface_correct, write_study, write_surface
from resomap.core import io
from resomap.core.config import AggregateParams
from resomap.core.errors import ResoMapError
from resomap.core.grid import Cell, FinetuneCell, evaluate_metrics_dir
from resomap.report.analysis import analyse, summary_metrics
from resomap.report.charts.surface import surface_chart
from resomap.report.document import Paragraph, Table, surface_section, surface_table
from resomap.report.study import load_study

PARAMS = AggregateParams(bootstrap_samples=100)
FINETUNE = [FinetuneCell(model, 16, 32, seed) for model in MODELS for seed in SEEDS]
# tiny_cnn trained at 16 px (100 images right there) gets 10 more right at 32 px, 10 fewer at 64 px
PLANTED = {16: 100, 32: 110, 64: 90}


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, list[Cell]]:
    """The known study, written once, with PLANTED as tiny_cnn 16 px's surface."""
    folder = tmp_path_factory.mktemp("planted")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        cells = write_study()
        for seed in SEEDS:
            write_surface(Cell("tiny_cnn", 16, seed), PLANTED)
    return folder, cells


@pytest.fixture
def cells(planted, tmp_path, monkeypatch) -> list[Cell]:
    """A copy of the planted study to edit, as the current directory."""
    folder, cells = planted
    monkeypatch.chdir(shutil.copytree(folder, tmp_path / "study"))
    return cells


def test_the_best_test_resolution_with_its_interval_and_paired_test(cells):
    best = analyse(load_study(cells, FINETUNE), PARAMS).surface.best.set_index(["model", "train_resolution"])
    moved = best.loc[("tiny_cnn", 16)]
    assert moved.best_test_resolution == 32
    assert moved.accuracy == pytest.approx((110 + 109) / 400)  # seed 1 also misses image 0
    assert moved.gain == pytest.approx(10 / 200)
    assert (moved.gained, moved.lost) == (20, 0)  # 10 per seed, pooled
    assert moved.p_value == pytest.approx(2 * 0.5**20) and moved.significant
    assert moved.ci_low < moved.accuracy < moved.ci_high
    assert moved.latency_ms == pytest.approx(0.1 * 32**0.5) and moved.flops == pytest.approx(1000 * 32**2)
    assert moved.latency_ratio == pytest.approx(2**0.5)
    kept = best.loc[("tiny_cnn", 32)]  # the helper's surfaces fall off away from the diagonal
    assert kept.best_test_resolution == 32 and kept.p_value == 1.0 and kept.gain == 0 and not kept.significant
    assert kept.ci_low < kept.accuracy < kept.ci_high


def test_one_step_up_is_the_next_test_resolution_above(cells):
    one_up = analyse(load_study(cells), PARAMS).surface.one_up.set_index(["model", "train_resolution"])
    assert list(one_up.index) == [(m, r) for m in MODELS for r in RESOLUTIONS[:-1]]
    assert one_up.loc[("tiny_cnn", 16), "test_resolution"] == 32 and one_up.loc[("tiny_cnn", 16), "gained"] == 20
    assert one_up.loc[("simple_cnn", 32), "lost"] == 40 and one_up.loc[("simple_cnn", 32), "gain"] == pytest.approx(-0.1)


def test_finetuning_is_compared_with_its_source_at_both_resolutions(cells):
    finetune = analyse(load_study(cells, FINETUNE), PARAMS).surface.finetune.set_index("model")
    tiny = finetune.loc["tiny_cnn"]
    assert (tiny.from_resolution, tiny.to_resolution) == (16, 32)
    assert tiny.accuracy == pytest.approx((FINETUNED + FINETUNED - 1) / 400)
    assert tiny.vs_plain_gain == pytest.approx((FINETUNED - PLANTED[32]) / 200)  # over the source tested at 32 px
    assert tiny.vs_source_gain == pytest.approx((FINETUNED - PLANTED[16]) / 200)  # over the source at 16 px
    assert (tiny.vs_source_gained, tiny.vs_source_lost) == (60, 0)


def test_recalibration_and_tta_gains(cells):
    recalibrated = {32: 120, 64: 85}
    write_surface(Cell("tiny_cnn", 16, 0), PLANTED, recalibrated)
    path = evaluate_metrics_dir(Cell("simple_cnn", 64, 0)) / "metrics.json"
    io.write_json(path, io.read_json(path) | {"tta": {"views": ["identity", "hflip"], "accuracy": 0.55, "macro_f1": 0.5,
                                                      "ece": 0.1, "latency_multiplier": 2}})
    surface = analyse(load_study(cells), PARAMS).surface
    gains = surface.recalibration.set_index("test_resolution")
    assert list(gains["model"]) == ["tiny_cnn"] * 2 and 16 not in gains.index  # the seed that recalibrated, off the diagonal
    assert gains.loc[32, "gain"] == pytest.approx(10 / 200) and gains.loc[32, "gained"] == 10
    assert gains.loc[64, "gain"] == pytest.approx(-5 / 200) and gains.loc[64, "lost"] == 5
    tta = surface.tta.iloc[0]
    assert (tta.model, tta.resolution, tta.views, tta.latency_multiplier) == ("simple_cnn", 64, "identity+hflip", 2)
    assert tta.gain == pytest.approx(0.55 - 0.5)  # seed 1 has no TTA entry: seed 0's 100 of 200 right
    assert "BatchNorm recalibration moves off-diagonal accuracy by -2.5 to +5.0 points" in surface_finding_text(surface)
    assert len(surface_chart(surface.grid, "tiny_cnn").axes) == 3  # plain, recalibrated, colour bar


def surface_finding_text(surface) -> str:
    return next(b.text for b in surface_section(surface, {}) if isinstance(b, Paragraph))


def test_a_study_without_finetune_cells_or_recalibration(cells):
    analysis = analyse(load_study(cells), PARAMS)
    surface = analysis.surface
    assert surface.finetune.empty and surface.recalibration.empty and surface.tta.empty
    assert set(surface.grid["variant"]) == {"plain"}
    summary = summary_metrics(analysis)["tiny_cnn"]
    assert summary["best_test_resolution"] == {"16": 32, "32": 32, "64": 64}
    assert summary["fixres_gain"] == {"16": 0.05, "32": 0.0, "64": 0.0}
    assert "finetune_gain" not in summary
    tables = [b for b in surface_section(surface, {}) if isinstance(b, Table)]
    assert len(tables) == 2  # the surface and the best test resolutions: no gain table without its data
    text = surface_finding_text(surface)
    assert text.startswith("Testing one step above the training resolution helps: tiny_cnn trained at 16 px gains "
                           "5.0 points at 32 px (McNemar p < 0.0001); not elsewhere: tiny_cnn trained at 32 px loses 10.0 points")
    assert "for 5 of 6 trained resolutions" in text and "Fine-tuning" not in text


def test_the_training_resolution_left_out_of_the_test_resolutions_is_evaluates_score(cells):
    for seed in SEEDS:
        write_surface(Cell("simple_cnn", 64, seed), {t: n for t, n in surface_correct(Cell("simple_cnn", 64, seed)).items() if t != 64})
    study = load_study(cells)
    row = study.surface.table.query("model == 'simple_cnn' and train_resolution == 64 and test_resolution == 64")
    assert list(row["accuracy"]) == list(study.table.query("model == 'simple_cnn' and resolution == 64")["accuracy"])
    assert analyse(study, PARAMS).surface.best.set_index(["model", "train_resolution"]).loc[("simple_cnn", 64), "p_value"] == 1.0


def test_unpaired_test_images_are_refused(cells):
    path = "plots/surface/tiny_cnn/16/0/predictions.csv"
    frame = pd.read_csv(path)
    frame.loc[(frame["test_resolution"] == 32) & (frame["index"] == 5), "actual"] = "class_9"
    frame.to_csv(path, index=False)
    with pytest.raises(ResoMapError, match="test images at 16 and 32 px differ"):
        analyse(load_study(cells), PARAMS)


def test_the_table_and_the_heatmap_mark_the_diagonal(cells, tmp_path):
    grid = analyse(load_study(cells), PARAMS).surface.grid
    table = surface_table(grid).set_index(["model", "trained px"])
    assert list(table.columns) == ["tested 16 px", "tested 32 px", "tested 64 px"]
    assert list(table.loc[("tiny_cnn", "16")]) == ["[49.8]", "54.8", "44.8"]
    assert [v.startswith("[") for v in table.loc[("simple_cnn", "32")]] == [False, True, False]
    fig = surface_chart(grid, "tiny_cnn")
    outlined = [(p.get_x() + 0.5, p.get_y() + 0.5) for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    assert outlined == [(0, 0), (1, 1), (2, 2)]
    assert {"49.8", "54.8", "44.8"} <= {t.get_text() for t in fig.findobj(Text)}


def test_the_stage_writes_the_surface_outputs(aggregated):
    folder, _ = aggregated
    summary = json.loads((folder / "reports/summary.json").read_text())
    assert summary["tiny_cnn"]["best_test_resolution"] == {"16": 16, "32": 32, "64": 64}
    assert summary["simple_cnn"]["finetune_gain"] == {"16to32": pytest.approx((FINETUNED - 60) / 200)}
    assert summary["tiny_cnn"]["recommended_resolution"] == 32  # the keys before the surface, untouched
    table = pd.read_csv(folder / "reports/surface.csv")
    assert list(table.columns) == ["model", "seed", "train_resolution", "test_resolution", "variant", "accuracy", "macro_f1", "ece"]
    assert len(table) == len(MODELS) * len(RESOLUTIONS) ** 2 * len(SEEDS) + len(FINETUNE)
    markdown = (folder / "reports/report.md").read_text()
    assert "## Testing at other resolutions than the training one" in markdown
    assert "Fine-tuning simple_cnn from 16 to 32 px reaches" in markdown
    assert all((folder / "reports/figures" / f"surface_{m}.png").is_file() for m in MODELS)
