"""Write .dvc/plots/offline.html: DVC's plots page with Vega, Vega-Lite and Vega-Embed inlined from
vendor/vega/, so `dvc plots show` and `dvc plots diff` draw with no network (DVC's own page loads them
from cdn.jsdelivr.net) wherever `-o` puts the page.

    python -m tools.vega_template           # the template, from the vendored builds
    python -m tools.vega_template --fetch   # first re-vendor VERSIONS from npm (needs npm and the registry)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from dvc_render.html import PAGE_HTML

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "vendor" / "vega"
TEMPLATE = ROOT / ".dvc" / "plots" / "offline.html"

# Load order: vega-lite needs the global `vega`, vega-embed both. Majors as dvc_render's CDN tags
# (vega 5, vega-lite 5, vega-embed 6); vega 6 and vega-lite 6 ship as ES modules only.
VERSIONS = {"vega": "5.33.1", "vega-lite": "5.23.0", "vega-embed": "6.29.0"}
SOURCE_MAP = "//# sourceMappingURL="  # the last line of each build: a devtools hint to a file not vendored
PLACEHOLDERS = ("{scripts}", "{plot_divs}", "{refresh_tag}")  # DVC str.replaces these anywhere in the page


def build(name: str) -> Path:
    return VENDOR / f"{name}.min.js"


def licence(name: str) -> Path:
    return VENDOR / f"LICENSE.{name}"


def fetch() -> None:
    """Replace the vendored builds and licences with those of VERSIONS' npm packages. The vega
    package ships no LICENSE: its committed one (the vega/vega repository's) stays."""
    VENDOR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, version in VERSIONS.items():
            packed = subprocess.run(["npm", "pack", f"{name}@{version}", "--silent"], cwd=tmp, check=True,
                                    capture_output=True, text=True).stdout.split()[-1]
            with tarfile.open(Path(tmp) / packed) as tar:
                tar.extractall(Path(tmp) / name, filter="data")
            package = Path(tmp) / name / "package"
            shutil.copy(package / "build" / f"{name}.min.js", build(name))
            if (package / "LICENSE").exists():
                shutil.copy(package / "LICENSE", licence(name))
            if not licence(name).exists():
                raise SystemExit(f"{name}@{version} ships no LICENSE: add {licence(name).relative_to(ROOT)} by hand")


def inline(name: str) -> str:
    """One library as an inline <script>, refused where the page would break: a `</script` ends the
    element early, a DVC placeholder would be replaced inside the code, a wrong version is not the pin."""
    code = build(name).read_text(encoding="utf-8").rstrip()
    code = code[: code.rfind(SOURCE_MAP)].rstrip() if SOURCE_MAP in code else code
    problems = [text for text in ("</script", *PLACEHOLDERS) if text in code.lower()]
    if VERSIONS[name] not in code:
        problems.append(f"version {VERSIONS[name]}")
    if problems:
        raise ValueError(f"{build(name).relative_to(ROOT)}: cannot inline ({', '.join(problems)})")
    return f"<script>/*! {name} {VERSIONS[name]} | BSD-3-Clause | vendor/vega/LICENSE.{name} */\n{code}\n</script>"


def page() -> str:
    """DVC's page with the libraries in place of `{scripts}`: with no `{scripts}` left, DVC adds no
    CDN <script>; `{plot_divs}` and `{refresh_tag}` stay for DVC to fill."""
    pins = ", ".join(f"{name} {version}" for name, version in VERSIONS.items())
    header = f"<!-- Written by `python -m tools.vega_template` from vendor/vega/ ({pins}): edit the tool, not this file. -->"
    return PAGE_HTML.replace("{scripts}", "\n".join([header, *map(inline, VERSIONS)])) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fetch", action="store_true", help="re-vendor VERSIONS from npm first")
    if parser.parse_args(argv).fetch:
        fetch()
    TEMPLATE.write_text(page(), encoding="utf-8")
    print(f"wrote {TEMPLATE.relative_to(ROOT)} ({TEMPLATE.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
