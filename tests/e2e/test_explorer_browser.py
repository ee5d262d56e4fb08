"""The explorer (python -m resomap.explore) on a real tiny study, driven in Debian's headless
Chromium through Playwright: it loads with no request off loopback and no console error, shows for
a chosen test image the same top-1 class as each cell's predictions.csv, takes a PNG upload, and
answers a text file with a message in the page."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.browser import CHROMIUM, QUIET
from helpers.env import free_ports
from helpers.study_repo import make_study_repo, repro, tool_env

RESOLUTIONS = (16, 24)  # the tiny study's
IMAGE = 3  # the test image the browser picks


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    """The tiny study reproduced for real, and the explorer serving it: (repo, url)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian's Chromium: apt-get install chromium (.ci/run does)")
    repo = make_study_repo(tmp_path_factory.mktemp("explore") / "study")
    repro(repo)
    (port,) = free_ports(1)
    log = repo / "explore.log"
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "resomap.explore", "--port", str(port)], cwd=repo, env=tool_env(),
                                  stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        while "explore: 2 trained cells" not in log.read_text():  # printed once it serves
            if server.poll() is not None:
                pytest.fail(f"the explorer exited with {server.returncode}:\n{log.read_text()}")
            time.sleep(0.5)
        yield repo, f"http://127.0.0.1:{port}/"
    finally:
        server.terminate()
        server.wait(timeout=30)


def predicted(repo: Path, resolution: int, index: int) -> str:
    with (repo / f"plots/evaluate/tiny_cnn/{resolution}/0/predictions.csv").open() as f:
        return next(row["predicted"] for row in csv.DictReader(f) if int(row["index"]) == index)


def upload(page, path: Path) -> None:
    """Through the Upload tab's file chooser, as a person would."""
    page.get_by_role("tab", name="Upload").click()
    with page.expect_file_chooser() as chooser:
        page.locator("#upload button.upload-container").click(timeout=60_000)
    chooser.value.set_files(path)


def test_the_explorer_shows_each_cells_own_prediction_uploads_work_and_nothing_leaves_loopback(explorer, tmp_path):
    from playwright.sync_api import sync_playwright

    repo, url = explorer
    png, text = tmp_path / "photo.png", tmp_path / "notes.txt"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(png)
    text.write_text("not an image\n")
    errors, requests = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=QUIET)
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.on("console", lambda message: message.type == "error" and errors.append(message.text))
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("request", lambda request: requests.append(request.url))
        page.goto(url, wait_until="load")
        page.locator(f'#gallery button[aria-label^="Thumbnail {IMAGE + 1} of"]').click(timeout=60_000)  # captioned #{IMAGE}
        page.wait_for_function(f"document.querySelector('#chosen').innerText.includes('Test image #{IMAGE},')", timeout=120_000)
        shown = {r: page.locator(f"#top5-{r} h2").inner_text(timeout=30_000) for r in RESOLUTIONS}

        upload(page, png)
        page.wait_for_function("document.querySelector('#chosen').innerText.includes('photo.png')", timeout=120_000)
        uploaded = {r: page.locator(f"#top5-{r} h2").inner_text() for r in RESOLUTIONS}
        page.screenshot(path=tmp_path / "explorer.png", full_page=True)

        page.reload(wait_until="load")  # a fresh, empty upload field
        upload(page, text)
        page.wait_for_function("document.querySelector('#upload-message').innerText.includes('notes.txt')", timeout=60_000)
        message = page.locator("#upload-message").inner_text()
        browser.close()
    assert shown == {r: predicted(repo, r, IMAGE) for r in RESOLUTIONS}
    assert all(uploaded.values())
    assert message == "Not used: notes.txt cannot be used as an image: not an image PIL can read (unknown format or not an image)"
    assert errors == []
    assert requests and all(u.startswith(url) or u.startswith(("data:", "blob:")) for u in requests), \
        [u for u in requests if not u.startswith(url)]
