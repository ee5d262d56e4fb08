"""aggregate on a study with known answers (tests/helpers/study_files.py; the `aggregated`
fixture in conftest.py runs the real stage on it): the statistics, the table
against the cell files, the summary metrics, the report, and dvc.yaml's top-level plots."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from helpers.env import REPO
from helpers.study_files import MODELS, RESOLUTIONS, SEEDS, write_study
from resomap.core.config import AggregateParams
from resomap.report.analysis import analyse
from resomap.report.findings import data_caveats
from resomap.report.study import load_study


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return load_study(write_study())


def test_accuracy_statistics_per_model_and_resolution(study):
    stats = analyse(study, AggregateParams(bootstrap_samples=500)).stats.set_index(["model", "resolution"])
    row = stats.loc[("tiny_cnn", 32)]
    assert row.seeds == 2
    assert row.accuracy_mean == pytest.approx((140 + 139) / 400)
    assert row.accuracy_std == pytest.approx(pd.Series([0.7, 0.695]).std())
    assert row.accuracy_ci_low < row.accuracy_mean < row.accuracy_ci_high
    assert row.accuracy_ci_high - row.accuracy_ci_low < 0.2
    assert stats.loc[("simple_cnn", 64)].macro_f1_ci_low < stats.loc[("simple_cnn", 64)].macro_f1_mean


def test_neighbouring_resolutions_get_a_paired_test(study):
    steps = analyse(study, AggregateParams(bootstrap_samples=100)).steps.set_index(["model", "resolution_low"])
    big = steps.loc[("tiny_cnn", 16)]
    assert (big.gained, big.lost, bool(big.significant)) == (80, 0, True)  # 40 per seed, pooled
    small = steps.loc[("tiny_cnn", 32)]
    assert (small.gained, small.lost) == (2, 0) and small.p_value == pytest.approx(0.5) and not small.significant
    assert big.flops_ratio == pytest.approx(4.0) and big.latency_ratio == pytest.approx(2**0.5)


def test_cost_exponents_are_recovered(study):
    scaling = analyse(study, AggregateParams(bootstrap_samples=100)).scaling.set_index(["model", "metric"])["exponent"]
    assert scaling[("simple_cnn", "flops")] == pytest.approx(2.0)
    assert scaling[("simple_cnn", "latency_ms")] == pytest.approx(0.5)
    assert scaling[("tiny_cnn", "peak_memory_mb")] == pytest.approx(1.0)
    assert scaling[("tiny_cnn", "throughput_img_s")] == pytest.approx(-2.0)
    assert pd.isna(scaling[("tiny_cnn", "energy_j_per_img")])  # not measured on CPU


def test_recommendation_takes_the_smallest_resolution_within_tolerance(study):
    recs = analyse(study, AggregateParams(tolerance=0.01, bootstrap_samples=100)).recommendations.set_index("model")
    assert recs.loc["tiny_cnn", "best_resolution"] == 64 and recs.loc["tiny_cnn", "recommended_resolution"] == 32
    assert recs.loc["simple_cnn", "recommended_resolution"] == 64
    strict = analyse(study, AggregateParams(tolerance=0.0, bootstrap_samples=100)).recommendations.set_index("model")
    assert strict.loc["tiny_cnn", "recommended_resolution"] == 64


def test_budgets_pick_the_best_cell_that_fits(study):
    pick = analyse(study, AggregateParams(latency_budget_ms=0.5, bootstrap_samples=100)).budget_pick
    assert (pick["model"], pick["resolution"]) == ("tiny_cnn", 16)  # 0.4 ms; 32 px takes 0.57 ms
    assert analyse(study, AggregateParams(latency_budget_ms=0.1, bootstrap_samples=100)).budget_pick is None
    unlimited = analyse(study, AggregateParams(bootstrap_samples=100)).budget_pick
    assert (unlimited["model"], unlimited["resolution"]) == ("tiny_cnn", 64)


def test_explanation_consistency_separates_drifting_from_stable_maps(study):
    consistency = analyse(study, AggregateParams(bootstrap_samples=100)).consistency
    by_method = consistency[consistency["model"] == "tiny_cnn"].groupby("method")["spearman"].min()
    assert by_method["saliency"] > 0.95 > by_method["gradcam"]
    assert len(consistency) == len(MODELS) * 2 * 3  # methods x resolution pairs


def test_the_table_matches_the_cell_files(aggregated):
    folder, _ = aggregated
    table = pd.read_csv(folder / "reports/cells.csv")
    assert len(table) == len(MODELS) * len(RESOLUTIONS) * len(SEEDS)
    for required in ("model", "family", "resolution", "seed", "accuracy", "macro_f1", "latency_ms",
                     "throughput_img_s", "peak_memory_mb", "flops", "params", "gradcam.deletion_auc"):
        assert required in table.columns
    for row in table.itertuples():
        evaluate = json.loads((folder / f"metrics/evaluate/{row.model}/{row.resolution}/{row.seed}/metrics.json").read_text())
        profile = json.loads((folder / f"metrics/profile/{row.model}/{row.resolution}/metrics.json").read_text())
        assert (row.accuracy, row.macro_f1) == (evaluate["accuracy"], evaluate["macro_f1"])
        assert (row.flops, row.latency_ms) == (profile["flops"], profile["latency_ms"])


def test_summary_metrics_hold_the_study_level_answers(aggregated):
    folder, stdout = aggregated
    summary = json.loads((folder / "reports/summary.json").read_text())
    assert summary["tiny_cnn"]["recommended_resolution"] == 32 and summary["tiny_cnn"]["best_resolution"] == 64
    assert summary["tiny_cnn"]["significant_steps"] == 1 and summary["simple_cnn"]["significant_steps"] == 2
    assert summary["simple_cnn"]["exponent"]["flops"] == pytest.approx(2.0)
    assert summary["simple_cnn"]["exponent"]["energy_j_per_img"] is None
    assert summary["under_budget"] == {"found": True, "model": "tiny_cnn", "resolution": 16, "accuracy": 0.4975,
                                       "latency_ms": 0.4, "peak_memory_mb": 16.0}
    assert "recommended: tiny_cnn 32 px, simple_cnn 64 px" in stdout


def test_the_report_states_the_findings_from_the_data(aggregated):
    folder, _ = aggregated
    markdown = (folder / "reports/report.md").read_text()
    assert "tiny_cnn gains +20.0 points from 16 to 32 px" in markdown
    assert "tiny_cnn gains +0.5 points from 32 to 64 px, which is not significant (McNemar p = 0.5" in markdown
    assert "tiny_cnn: use 32 px" in markdown and "1.41× faster" in markdown
    assert "Best cell within latency ≤ 0.5 ms: tiny_cnn at 16 px" in markdown
    assert "Energy per image was not measured on this device." in markdown
    linked = [line.split("](")[1].rstrip(")") for line in markdown.splitlines() if line.startswith("![")]
    assert len(linked) >= 7 + len(MODELS)
    assert all((folder / "reports" / path).is_file() for path in linked)


def test_the_html_report_is_self_contained(aggregated):
    folder, _ = aggregated
    page = (folder / "reports/report.html").read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert page.count('src="data:image/png;base64,') == len(list((folder / "reports/figures").glob("*.png")))
    for resolution in RESOLUTIONS:
        assert f"<td>{resolution}</td>" in page


def test_dvc_plots_show_draws_one_line_per_model(aggregated, tmp_path):
    """dvc.yaml's top-level plots with the custom templates, rendered by real DVC."""
    folder, _ = aggregated
    repo = tmp_path / "repo"
    shutil.copytree(folder / "reports", repo / "reports")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    shutil.copytree(REPO / ".dvc/plots", repo / ".dvc/plots")
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots}))
    shown = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--json"], cwd=repo,
                           capture_output=True, text=True, check=True)
    specs = {name: entries[0]["content"] for name, entries in json.loads(shown.stdout)["data"].items()}
    assert len(specs) == len(plots)
    for spec in specs.values():
        values = spec["data"]["values"]
        assert {v["model"] for v in values} == set(MODELS)
        assert '"field": "model"' in json.dumps(spec)
    accuracy = specs["accuracy_vs_resolution"]
    assert {v["metric"] for v in accuracy["data"]["values"]} == {"accuracy", "macro_f1"}


def test_a_test_split_of_200_images_with_every_class_has_no_caveats(study, aggregated):
    assert data_caveats(study) == []
    assert "## Caveats" not in (aggregated[0] / "reports/report.md").read_text()


def test_a_one_image_test_split_and_a_class_without_test_images_are_caveats(study):
    table = study.table.assign(num_samples=1, **{"per_class_support.class_3": 0})
    first, second = data_caveats(dataclasses.replace(study, table=table))
    assert first.startswith("The test split has only 1 image: a 95% interval on an accuracy near 50% spans about ±98 points")
    assert second.startswith("The test split has no image of class_3: their per-class accuracy is undefined")
