"""`wasteaudit demo` runs the demo apps through the real SDKs, and its report shows the waste it planted.

The demo runs once per module (it takes a while on two cores); every test reads its database and
its HTML report.
"""

from __future__ import annotations

import contextlib
import io
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from demo_truth import injected_waste
from wasteaudit import config
from wasteaudit._internal import pipeline
from wasteaudit.cli import main


@dataclass
class DemoRun:
    db: Path
    html: Path
    out: str


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """README's first command, `make demo`, is `wasteaudit demo`: run it once into a temporary folder."""
    folder = tmp_path_factory.mktemp("demo")
    db, html = folder / "demo.db", folder / "report.html"
    previous = config.get_settings()
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            code = main(["--database-url", f"sqlite:///{db}", "demo", "-o", str(html)])
    finally:
        pipeline.reset_writer()
        config.set_settings(previous)
    assert code == 0, out.getvalue()[-3000:]
    return DemoRun(db, html, out.getvalue())


def test_demo_captures_the_workload_with_its_waste_patterns(demo: DemoRun) -> None:
    assert "captured" in demo.out
    conn = sqlite3.connect(demo.db)
    rows = conn.execute("select function, provider, attempts, finish_category, stream_state, usage_source, started_at from wasteaudit_calls").fetchall()
    functions = {r[0] for r in rows}
    assert {"support.answer", "extract.ticket", "agent.order_status", "rag.answer", "titles.suggest"} <= functions
    assert {r[1] for r in rows} == {"openai", "anthropic"}
    assert any(r[2] > 1 for r in rows), "retried attempts (429/529) are recorded on their call"
    assert any(r[3] == "length" for r in rows), "truncated generations are recorded"
    assert any(r[4] == "abandoned" for r in rows), "streams the app stopped reading are recorded"
    days = {r[6][:10] for r in rows}
    assert len(days) == 14, "the workload is spread over two weeks"
    runs = conn.execute("select count(*) from wasteaudit_runs").fetchone()[0]
    scores = conn.execute("select count(*) from wasteaudit_scores where source = 'user'").fetchone()[0]
    assert runs > 100 and scores > 50
    findings = dict(conn.execute("select subkind, sum(tokens) from wasteaudit_findings where tier = 'confirmed' group by subkind").fetchall())
    assert {"truncated", "invalid_output", "duplicate_call", "refusal", "extra_choice", "not_in_result", "repetition"} <= set(findings)
    output = conn.execute("select sum(output_tokens) from wasteaudit_calls").fetchone()[0]
    assert 0 < sum(findings.values()) < output
    html = demo.html.read_text()
    assert html.startswith("<!DOCTYPE html>") or html.lower().startswith("<!doctype html>")
    assert "<title>wasteaudit report" in html


def test_calls_of_one_run_keep_their_order_in_simulated_time(demo: DemoRun) -> None:
    """A retry must be stamped after what it retried, or the scorer cannot tell which was discarded."""
    conn = sqlite3.connect(demo.db)
    shared = conn.execute(
        "select count(*) from (select run_id, started_at from wasteaudit_calls where run_id is not null"
        " group by run_id, started_at having count(*) > 1)"
    ).fetchone()[0]
    assert shared == 0


def _row(html: str, label: str) -> tuple[int, int]:
    """This period's and the previous period's figure of one row of the HTML report's summary table."""
    found = re.search(rf'<td>{re.escape(label)}</td><td class="n">([\d,]+)</td><td class="n">([\d,]+)</td>', html)
    assert found, f"no summary row {label!r} in the HTML report"
    return int(found.group(1).replace(",", "")), int(found.group(2).replace(",", ""))


# Stated tolerances between the report and the planted waste. Failed waste is rule-based and
# must match; unused and redundant differ by how a segment's tokens are apportioned (the scorer
# splits billed tokens by segment length, the ground truth by characters), and a repeated
# support request whose compact view hid the filler may be labelled either way.
FAILED_REL, KIND_REL, TOTAL_REL = 0.02, 0.10, 0.05


def test_report_figures_match_the_waste_the_demo_planted(demo: DemoRun) -> None:
    from wasteaudit.report import build_report

    conn = sqlite3.connect(demo.db)
    first = datetime.fromisoformat(conn.execute("select min(started_at) from wasteaudit_calls").fetchone()[0])
    monday = first.replace(hour=0, minute=0, second=0, microsecond=0)
    assert monday.weekday() == 0
    weeks = [(monday, monday + timedelta(days=7)), (monday + timedelta(days=7), monday + timedelta(days=14))]
    truth = [injected_waste(str(demo.db), start, end) for start, end in weeks]

    html = demo.html.read_text()
    year, week, _ = weeks[1][0].isocalendar()
    assert f"{year}-W{week:02d}" in html, "the HTML report covers the demo's second (last full) week"
    assert _row(html, "output tokens") == (truth[1].output_tokens, truth[0].output_tokens)
    shown, previous = _row(html, "confirmed waste, tokens")
    for figure, planted in ((shown, truth[1]), (previous, truth[0])):
        total = planted.failed + planted.unused + planted.redundant
        assert figure == pytest.approx(total, rel=TOTAL_REL), dict(planted.patterns)

    report = build_report(f"sqlite:///{demo.db}", since=weeks[1][0].date(), until=weeks[1][1].date())
    by_kind = report["totals"]["waste"]["by_kind"]
    planted = truth[1]
    assert by_kind["failed"]["tokens"] == pytest.approx(planted.failed, rel=FAILED_REL), dict(planted.patterns)
    assert by_kind["unused"]["tokens"] == pytest.approx(planted.unused, rel=KIND_REL), dict(planted.patterns)
    assert by_kind["redundant"]["tokens"] == pytest.approx(planted.redundant, rel=KIND_REL), dict(planted.patterns)

    rows = {row["name"]: row["waste"]["by_kind"] for row in report["by_function"]}
    for function, kind, rel in (
        ("support.answer", "failed", FAILED_REL),  # refusals
        ("extract.ticket", "failed", FAILED_REL),  # replies that were not JSON, asked again
        ("agent.order_status", "failed", FAILED_REL),  # answers cut at max_tokens, asked again
        ("titles.suggest", "unused", KIND_REL),  # two of three choices
    ):
        expected = getattr(injected_waste(str(demo.db), *weeks[1], function=function), kind)
        assert expected > 0, f"the demo plants {kind} waste in {function}"
        assert rows[function][kind]["tokens"] == pytest.approx(expected, rel=rel), function
