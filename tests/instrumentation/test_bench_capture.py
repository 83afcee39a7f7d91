"""The capture-overhead benchmark keeps working (a tiny in-process run; figures are not judged here)."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import anthropic
import pytest

ROOT = Path(__file__).resolve().parents[2]

# The benchmark compares against anthropic's built-in tracing, which older supported releases lack.
_SDK_TRACING = "open_telemetry" in inspect.signature(anthropic.Anthropic.__init__).parameters


@pytest.mark.skipif(not _SDK_TRACING, reason="the installed anthropic SDK has no built-in tracing to compare against")
def test_bench_capture_prints_its_summary_table_in_a_tiny_run(tmp_path):
    out_json = tmp_path / "figures.json"
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_capture.py"), "--rounds", "2", "--calls", "3", "--transport", "inproc", "--json", str(out_json)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[inproc] summary" in out.stdout
    for row in (
        "openai chat ",
        "openai chat stream",
        "openai responses",
        "anthropic messages (replaced span)",
        "anthropic messages (enriched span)",
        "anthropic stream (replaced span)",
        "anthropic stream (own span)",
    ):
        assert row in out.stdout, row
    figures = json.loads(out_json.read_text())
    assert set(figures["inproc"]["openai chat"]) >= {"bare SDK", "one hand-written span", "wasteaudit"}
    assert "ratio" in figures["inproc"]["anthropic messages"]["wasteaudit + SDK tracing (enriched span)"]
    assert "ratio" in figures["inproc"]["anthropic messages"]["wasteaudit + SDK tracing (replaced span)"]
    # the instrumented configurations really ran instrumented: one record per call (5 warm-up + 3
    # timed per round), 3 OpenAI workloads x 1 configuration + 2 Anthropic workloads x 3 (replaced,
    # enriched, own span)
    per_config = 2 * (5 + 3)
    assert figures["records"]["submitted"] == (3 + 2 * 3) * per_config
    assert figures["records"]["written"] == figures["records"]["submitted"]
