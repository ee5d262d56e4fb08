"""`dvc plots show` and `dvc plots diff` pages in headless Chromium with networking off: with the
repository's template (.dvc/plots/offline.html, Vega inlined) every Vega plot draws and nothing is
requested; the same plots on DVC's default page (Vega from cdn.jsdelivr.net) draw nothing, so the
check can fail."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import yaml
from dvc_render.html import PAGE_HTML

from helpers.env import REPO
from helpers.study_repo import dvc, git_commit, make_study_repo

CELL = "tiny_cnn/16/0"
CELL_PLOTS = [  # one cell's plots, as the train and evaluate stages declare them
    {f"metrics/train/{CELL}/plots/metrics": {"x": "step"}},
    {f"plots/evaluate/{CELL}/predictions.csv": {"template": "confusion", "x": "actual", "y": "predicted"}},
]
TOP_LEVEL = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
PLOTS = len(TOP_LEVEL) + 4 + 1  # the cell's plots/metrics folder draws 4 (loss, accuracy x train, val), then the matrix
CONTAINER = '<div id = "'  # how dvc_render opens each Vega plot's <div>
# Each Vega plot's canvas, the count of its pixels that are drawn and not white (the background)
INKED = """() => Array.from(document.querySelectorAll('.vega-embed canvas'), canvas => {
    const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let inked = 0;
    for (let i = 0; i < pixels.length; i += 4) inked += pixels[i + 3] > 0 && pixels[i] + pixels[i + 1] + pixels[i + 2] < 750;
    return inked;
})"""


@pytest.fixture(scope="module")
def plots_repo(aggregated, tmp_path_factory) -> Path:
    """A repo as make_study_repo makes them (.dvc/config and .dvc/plots copied from this one) whose
    dvc.yaml holds only plots, on the aggregate stage's real outputs: dvc.yaml's top-level plots and one
    cell's curves and confusion matrix; committed, then the accuracy table edited, for `dvc plots diff`."""
    folder, _ = aggregated
    repo = make_study_repo(tmp_path_factory.mktemp("plots") / "repo", tiny=False)
    for name in ("reports/plots", f"metrics/train/{CELL}/plots", f"plots/evaluate/{CELL}"):
        shutil.copytree(folder / name, repo / name)
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"plots": TOP_LEVEL + CELL_PLOTS}))
    git_commit(repo, "plots")
    accuracy = repo / "reports/plots/accuracy.csv"
    rows = list(csv.DictReader(accuracy.read_text().splitlines()))
    with accuracy.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=rows[0])
        writer.writeheader()
        writer.writerows({**row, "value": float(row["value"]) * 0.9} for row in rows)
    return repo


def rendered(offline_chromium, page_file: Path, wait: bool = True) -> tuple[int, list[int], list[str], list[str]]:
    """Open `page_file` offline: (Vega plots on the page, inked pixels of each drawn plot, console errors,
    requests that left file: and data:). With `wait`, until every plot has a canvas."""
    containers = page_file.read_text(encoding="utf-8").count(CONTAINER)
    page, errors, requests = offline_chromium(page_file.as_uri())
    if wait:
        page.wait_for_function("n => document.querySelectorAll('.vega-embed canvas').length >= n", arg=containers)
    page.wait_for_timeout(500)  # vega draws on the next animation frames
    online = [url for url in requests if not url.startswith(("file:", "data:"))]
    return containers, page.evaluate(INKED), errors, online


def test_dvc_plots_show_draws_every_plot_offline(plots_repo, offline_chromium, tmp_path):
    dvc(plots_repo, "plots", "show", "-o", str(tmp_path / "show"))
    containers, inked, errors, online = rendered(offline_chromium, tmp_path / "show/index.html")
    assert containers == PLOTS
    assert len(inked) == containers and min(inked) > 1000, inked
    assert errors == [] and online == []


def test_dvc_plots_diff_draws_every_plot_offline(plots_repo, offline_chromium, tmp_path):
    dvc(plots_repo, "plots", "diff", "HEAD", "-o", str(tmp_path / "diff"))
    page = tmp_path / "diff/index.html"
    assert "workspace" in page.read_text() and "HEAD" in page.read_text()
    containers, inked, errors, online = rendered(offline_chromium, page)
    assert containers == PLOTS
    assert len(inked) == containers and min(inked) > 1000, inked
    assert errors == [] and online == []


def test_dvc_default_page_draws_nothing_offline(plots_repo, offline_chromium, tmp_path):
    """The same plots on dvc_render's own page: it asks cdn.jsdelivr.net for Vega, which fails offline."""
    (tmp_path / "default.html").write_text(PAGE_HTML)
    dvc(plots_repo, "plots", "show", "-o", str(tmp_path / "show"), "--html-template", str(tmp_path / "default.html"))
    containers, inked, errors, online = rendered(offline_chromium, tmp_path / "show/index.html", wait=False)
    assert containers == PLOTS and inked == []
    assert any("vegaEmbed is not defined" in error for error in errors)
    assert online and all(url.startswith("https://cdn.jsdelivr.net/") for url in online)
