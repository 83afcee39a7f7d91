"""The HTML report in headless Chromium: charts are drawn, nothing from a model or user runs.

Chromium runs offline (``file://``, background networking off); the page must not need the
network. Hostile strings go into every place user or model text reaches the page: a function
name, a model name, a tag value and finding evidence (what the model wrote). Each payload
tries to change ``document.title``; the title must stay the report's own.
"""

from __future__ import annotations

import re
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from builders import PRICES, Dataset, monday

from wasteaudit.report import build_report, render
from wasteaudit.report.render_html import script_json

W47 = monday("2026-W47")
TITLE = "wasteaudit report 2026-W47"
FN_PAYLOAD = '<script>document.title="pwned-function"</script>'
MODEL_PAYLOAD = "<img src=x onerror=\"document.title='pwned-model'\">"
EVIDENCE_PAYLOAD = "</script><script>document.title='pwned-evidence'</script><!-- [bold]x[/bold]"
TAG_PAYLOAD = "</title><script>document.title='pwned-tag'</script>"


@pytest.fixture(scope="module")
def html_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ds = Dataset()
    prices = {**PRICES, MODEL_PAYLOAD: {"input": 1.0, "output": 4.0}}
    for i in range(40):
        at = W47 + timedelta(hours=4 * i)
        ds.run("support.answer", at=at, quality=0.8, model="model-mid", output_tokens=300, tags={"team": TAG_PAYLOAD},
               waste=(("redundant", "repetition", 40), ("unused", "not_in_result", 30)), possible=(("redundant", "filler", 10),))
        ds.run(FN_PAYLOAD, at=at + timedelta(minutes=5), quality=0.6, model=MODEL_PAYLOAD, output_tokens=200,
               waste=(("failed", "truncated", 200),), evidence={"segment": EVIDENCE_PAYLOAD, "similarity": 0.97})
    url = f"sqlite:///{tmp_path_factory.mktemp('html') / 'audit.db'}"
    ds.write(url, prices=prices)
    report = build_report(url, week="2026-W47", by="tag")
    path = tmp_path_factory.mktemp("html-out") / "report.html"
    path.write_text(render(report, "html"), encoding="utf-8")
    return path


def _command(binary: str, profile: Path, *args: str) -> list[str]:
    return [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
        f"--user-data-dir={profile}", "--virtual-time-budget=15000", *args,
    ]


@pytest.fixture(scope="module")
def browser(html_file: Path, chromium: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One DOM dump and one screenshot of the page, taken by two Chromium processes in parallel."""
    work = tmp_path_factory.mktemp("chromium")
    shot = work / "shot.png"
    dom = subprocess.Popen(_command(chromium, work / "p1", "--dump-dom", html_file.as_uri()),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    png = subprocess.Popen(
        _command(chromium, work / "p2", f"--screenshot={shot}", "--window-size=1400,2400", "--hide-scrollbars", html_file.as_uri()),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        dom_out, dom_err = dom.communicate(timeout=120)
        _, png_err = png.communicate(timeout=120)
    finally:
        for process in (dom, png):
            if process.poll() is None:
                process.kill()
    assert dom.returncode == 0, dom_err[-2000:]
    assert png.returncode == 0 and shot.exists(), png_err[-2000:]
    return {"dom": dom_out, "screenshot": shot}


def test_page_is_self_contained_and_its_json_cannot_close_a_script(html_file: Path) -> None:
    page = html_file.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=", page) and "<link" not in page
    assert page.count("<script") == 4  # plotly.js, report data, chart specs, the drawing code
    for block in re.findall(r'<script type="application/json" id="[^"]+">(.*?)</script>', page, re.S):
        assert "</" not in block and "<!--" not in block and "<" not in block
    # The escapes round-trip.
    assert script_json({"x": "</script><!--&\u2028"}) == '{"x":"\\u003c/script\\u003e\\u003c!--\\u0026\\u2028"}'
    # Payloads appear escaped in the page body, never raw.
    for payload in (FN_PAYLOAD, MODEL_PAYLOAD, TAG_PAYLOAD):
        assert payload not in page
    assert "&lt;script&gt;document.title=&quot;pwned-function&quot;&lt;/script&gt;" in page


def test_charts_are_drawn_and_payloads_are_shown_as_text(browser: dict[str, Any]) -> None:
    dom = browser["dom"]
    assert re.search(r"<title>(.*?)</title>", dom, re.S).group(1) == TITLE
    assert "pwned" not in re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
    marks = [dom.index(f'id="{chart}"') for chart in ("chart-waste-daily", "chart-waste-function", "chart-cost-quality")]
    marks.append(dom.index("<h2>Summary</h2>"))
    for start, end in zip(marks, marks[1:]):
        assert dom[start:end].count('class="main-svg"') >= 2, dom[start : start + 80]  # plotly's two svg layers
    assert dom.count('class="main-svg"') >= 6  # plotly draws two svg layers per chart
    # Shown as text: the escaped payloads are in the DOM, no element was created from them.
    assert "&lt;script&gt;document.title=\"pwned-function\"&lt;/script&gt;" in dom
    assert "&lt;img src=x onerror=" in dom
    assert "<img" not in dom
    assert "pwned-evidence" in dom and "[bold]x[/bold]" in dom


def test_screenshot_has_the_charts_drawn(browser: dict[str, Any]) -> None:
    import numpy as np
    from PIL import Image

    image = Image.open(browser["screenshot"]).convert("RGB")
    assert image.size == (1400, 2400)
    pixels = np.asarray(image, dtype=np.int16)

    def near(color: tuple[int, int, int], tolerance: int = 12) -> int:
        return int((np.abs(pixels - np.array(color, dtype=np.int16)) <= tolerance).all(axis=2).sum())

    # Bars in the kind colours (redundant, unused, failed) cover large areas; text never would.
    assert near((0xE4, 0x57, 0x56)) > 5000
    assert near((0xF5, 0x85, 0x18)) > 5000
    assert near((0x4C, 0x78, 0xA8)) > 5000
    # The cost/quality scatter draws its markers: the reference model in green at 80% opacity on white.
    assert near((86, 179, 86), 20) > 300
