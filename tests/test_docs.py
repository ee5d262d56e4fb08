"""The documentation stands on its own: every link resolves inside the repository, nothing points
outside it, and README stays a short front door that starts with the two set-up commands."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from helpers.env import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold commands, not links
    return LINK.findall(text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_resolves_to_a_file_in_the_repository(page):
    for target in links(page):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(REPO), f"{page.name} links outside the repository: {target}"
        assert path.exists(), f"{page.name} links to a missing file: {target}"


# how a citation of design notes kept outside the repository reads (spelled out of parts, so this
# file does not hold one itself)
OUTSIDE_CITATIONS = ("/".join(["..", "shared"]), "DESIGN \u00a7")


def test_nothing_in_the_project_cites_notes_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    texts = [REPO / f for f in tracked if f.endswith((".py", ".md", ".yaml", ".toml", ".txt", ".ini")) or f.startswith(".ci/")]
    assert len(texts) > 50
    citing = [str(p.relative_to(REPO)) for p in texts if p.is_file() and any(c in p.read_text() for c in OUTSIDE_CITATIONS)]
    assert not citing, f"these cite notes outside the repository (use docs/design.md): {citing}"


def test_readme_is_short_and_starts_with_the_two_set_up_commands():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    commands = [line for line in lines if line.startswith("python3 -m venv")]
    assert commands[0].endswith("pip install -r requirements.txt && dvc repro")
    assert commands[1].endswith("pip install -r requirements-dev.txt && python -m pytest")
    assert lines.index(commands[1]) < 20


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_code_path_a_page_names_exists(page):
    named = set(re.findall(r"\b(?:resomap|stages|tools|benchmarks|tests)/[A-Za-z0-9_./]+\.(?:py|json)", page.read_text()))
    assert not {path for path in named if not (REPO / path).exists()}, f"{page.name} names files that do not exist"
