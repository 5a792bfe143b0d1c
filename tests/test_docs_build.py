"""The documentation site builds offline with ``mkdocs build --strict`` (a broken link, a missing
anchor or a page missing from the navigation is an error), and what it builds works offline:
no page loads a script, a stylesheet, a font or an image from the network, every page links to
the others and the screenshots are in the site."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

import mkdocs  # noqa: E402,F401  (in the testing extra: a missing mkdocs is a broken install, not a skip)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return out


def _nav_pages() -> list[str]:
    # mkdocs.yml holds no Python tags: a plain YAML reader sees everything
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    return [next(iter(entry.values())) for entry in nav]


def test_every_page_is_built_and_linked_from_every_page(site):
    pages = _nav_pages()
    assert pages[0] == "index.md" and len(pages) >= 6
    for md in pages:
        html = (site / md.replace(".md", ".html")).read_text()
        links = set(re.findall(r'href="([^"#]+\.html)', html))
        targets = {(site / md).parent.joinpath(link).resolve().name for link in links}
        missing = {p.replace(".md", ".html") for p in pages} - targets
        assert not missing, f"{md} does not link to {sorted(missing)}"


def test_the_site_needs_no_network(site):
    external = re.compile(r'<(?:script|link|img|source)\b[^>]*\b(?:src|href)="(?:https?:)?//', re.I)
    offenders = {p.name: external.findall(p.read_text()) for p in site.rglob("*.html")}
    assert {k: v for k, v in offenders.items() if v} == {}
    css = [p for p in site.rglob("*.css") if re.search(r"url\((['\"]?)(?:https?:)?//", p.read_text())]
    assert css == []


def test_screenshots_are_in_the_site(site):
    live = (site / "live-zoom.html").read_text()
    shots = re.findall(r'<img[^>]+src="([^"]+\.png)"', live)
    assert "images/widget.png" in shots and len(shots) >= 4
    for src in shots:
        assert (site / src).stat().st_size > 1000, src
    batch = (site / "batch.html").read_text()
    assert 'src="images/upscale-widget.png"' in batch
    assert (site / "images" / "upscale-widget.png").stat().st_size > 1000


def test_the_readme_says_how_to_build_the_docs():
    readme = (ROOT / "README.md").read_text()
    assert 'pip install -c scripts/constraints.txt -e ".[docs]" && .venv/bin/mkdocs build --strict' in readme
