"""Debian's Chromium for the browser tests (driven by Playwright, which never downloads a browser)."""

import shutil

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
QUIET = ["--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
