"""The documentation site builds with MkDocs in strict mode (warnings are errors) and lists every page."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def nav_pages(nav: Any) -> set[str]:
    """Every Markdown file named in mkdocs.yml's nav, however deeply nested."""
    if isinstance(nav, str):
        return {nav} if nav.endswith(".md") else set()
    if isinstance(nav, list):
        return set().union(*(nav_pages(item) for item in nav)) if nav else set()
    if isinstance(nav, dict):
        return set().union(*(nav_pages(value) for value in nav.values())) if nav else set()
    return set()


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = nav_pages(config["nav"])
    pages = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}
    assert pages - listed == set(), "pages missing from the nav in mkdocs.yml"
    assert listed - pages == set(), "nav entries without a page"


@pytest.mark.slow
def test_docs_build_strictly_without_warnings(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "WARNING" not in done.stderr, done.stderr[-3000:]
    site = tmp_path / "site"
    for page in ("index.html", "concepts/index.html", "privacy/index.html", "troubleshooting/index.html", "postgresql/index.html"):
        assert (site / page).is_file(), page
    architecture = (site / "architecture" / "index.html").read_text(encoding="utf-8")
    assert "img/data-flow.svg" in architecture and (site / "img" / "data-flow.svg").is_file()
    assert "fonts.googleapis.com" not in (site / "index.html").read_text(encoding="utf-8"), "the site must read offline"
