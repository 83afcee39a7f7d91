"""`wasteaudit demo` runs the demo apps through the real SDKs and stores what real traffic looks like."""

from __future__ import annotations

import sqlite3

import pytest

from wasteaudit import config
from wasteaudit._internal import pipeline
from wasteaudit.cli import main


@pytest.fixture
def restore_settings():
    previous = config.get_settings()
    yield
    pipeline.reset_writer()
    config.set_settings(previous)


def test_demo_captures_the_workload_with_its_waste_patterns(tmp_path, restore_settings, capsys):
    db = tmp_path / "demo.db"
    assert main(["--database-url", f"sqlite:///{db}", "demo", "-o", str(tmp_path / "report.html")]) == 0
    out = capsys.readouterr().out
    assert "captured" in out
    conn = sqlite3.connect(db)
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
    assert {"truncated", "invalid_output", "duplicate_call", "refusal"} <= set(findings)
    output = conn.execute("select sum(output_tokens) from wasteaudit_calls").fetchone()[0]
    assert 0 < sum(findings.values()) < output
    html = (tmp_path / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") or html.lower().startswith("<!doctype html>")
    assert "<title>wasteaudit report" in html
