"""The committed offline plots page (.dvc/plots/offline.html) is the tool's output, loads nothing by URL,
and keeps what DVC fills in; the repository's DVC config points at it."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from configobj import ConfigObj

from helpers.env import REPO
from tools import vega_template

SCRIPT = re.compile(r"<script>.*?</script>", re.DOTALL)


class Fetches(HTMLParser):
    """What a browser would fetch from the markup: every src/href/srcset/data/action attribute and
    every <link>, with the <script> tags seen."""

    def __init__(self):
        super().__init__()
        self.urls, self.scripts = [], []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in {"src", "href", "srcset", "data", "action"}]
        self.urls += ["<link>"] * (tag == "link")
        self.scripts += [dict(attrs)] * (tag == "script")


def test_the_committed_template_is_what_the_tool_writes():
    assert vega_template.TEMPLATE.read_text(encoding="utf-8") == vega_template.page(), (
        "run `python -m tools.vega_template` and commit .dvc/plots/offline.html"
    )


def test_the_page_inlines_the_three_libraries_and_fetches_nothing():
    """URLs inside the libraries (schema ids, the editor link of the actions menu) are strings in code,
    not fetched on load: the e2e test watches the requests. Outside them the page has no URL at all."""
    page = vega_template.TEMPLATE.read_text(encoding="utf-8")
    fetches = Fetches()
    fetches.feed(page)
    assert fetches.urls == []
    assert fetches.scripts == [{}, {}, {}]  # inline, no src
    markup = SCRIPT.sub("", page)
    assert not re.search(r"https?:|//cdn|url\(|@import", markup)
    for name, version in vega_template.VERSIONS.items():
        assert f"/*! {name} {version} |" in page


def test_the_page_keeps_dvc_placeholders_but_not_scripts():
    """With no {scripts} DVC adds no CDN <script>; it fills {plot_divs} and {refresh_tag}, each once."""
    page = vega_template.TEMPLATE.read_text(encoding="utf-8")
    assert "{scripts}" not in page
    assert page.count("{plot_divs}") == 1 and page.count("{refresh_tag}") == 1


def test_a_build_that_would_break_the_page_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(vega_template, "VENDOR", tmp_path)
    monkeypatch.setattr(vega_template, "ROOT", tmp_path.parent)
    pin = vega_template.VERSIONS["vega"]
    cases = {"</script": f'x="</script>";v="{pin}"', "{plot_divs}": f'x="{{plot_divs}}";v="{pin}"', "version": "x=1;"}
    for problem, code in cases.items():
        (tmp_path / "vega.min.js").write_text(code)
        with pytest.raises(ValueError, match=re.escape(problem)):
            vega_template.inline("vega")


def test_dvc_config_points_at_the_template_relative_to_dot_dvc():
    config = ConfigObj(str(REPO / ".dvc/config"))
    assert REPO / ".dvc" / config["plots"]["html_template"] == vega_template.TEMPLATE


def test_every_vendored_library_has_its_licence_and_readme_names_its_version():
    readme = (REPO / "vendor/vega/README.md").read_text()
    for name, version in vega_template.VERSIONS.items():
        assert vega_template.build(name).exists()
        assert "Neither the name of" in vega_template.licence(name).read_text()  # BSD-3-Clause's third clause
        assert f"{name} {version}" in readme
