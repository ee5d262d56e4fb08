"""Every test here drives real DVC, servers, subprocess stages or a browser: all are marked slow,
so `pytest -m "not slow"` runs the unit tests alone."""

from pathlib import Path

import pytest

from helpers.browser import CHROMIUM, QUIET

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items):
    for item in items:
        if HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.slow)




@pytest.fixture
def offline_chromium():
    """Debian's Chromium, driven by Playwright, with networking off: a function that opens a URL in a
    fresh page and returns (page, console errors, every URL requested), so a test can tell that a page
    works on its own."""
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian's Chromium: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=QUIET)

        def visit(url: str):
            errors, requests = [], []
            page = browser.new_context(offline=True).new_page()
            page.on("console", lambda message: message.type == "error" and errors.append(message.text))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(url, wait_until="load")
            return page, errors, requests

        yield visit
        browser.close()
