"""The HTML report in a real headless browser (Debian's Chromium, driven by Playwright), offline:
it renders, logs no console error, requests nothing from the network, and every image loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.browser import CHROMIUM, QUIET

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's Chromium: apt-get install chromium (.ci/run does)"
)


def test_the_report_renders_offline_with_every_image(aggregated, tmp_path):
    from playwright.sync_api import sync_playwright

    report = aggregated[0] / "reports/report.html"
    errors, requests = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=QUIET)
        page = browser.new_context(offline=True).new_page()
        page.on("console", lambda message: message.type == "error" and errors.append(message.text))
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("request", lambda request: requests.append(request.url))
        page.goto(report.as_uri(), wait_until="load")
        images = page.evaluate("Array.from(document.images, i => [i.complete, i.naturalWidth, i.naturalHeight])")
        headings = page.locator("h2").all_inner_texts()
        tables = page.locator("table").count()
        page.screenshot(path=tmp_path / "report.png", full_page=True)
        browser.close()
    assert errors == []
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
    assert len(images) >= 9 and all(complete and width > 100 and height > 100 for complete, width, height in images)
    assert "Which resolution to use" in headings and "Where the model looks" in headings
    assert tables >= 5
    assert (tmp_path / "report.png").stat().st_size > 10_000
