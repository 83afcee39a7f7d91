"""``wasteaudit db prune``: old content goes, rows, tokens, cost and findings stay, reports of old weeks agree."""

from __future__ import annotations

import copy
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from storage.conftest import db_url, pg_database, pg_url  # noqa: F401 - fixtures, re-exported
from worker_support import build_workload, store

from wasteaudit import build_report
from wasteaudit.cli import main
from wasteaudit.exceptions import ConfigError
from wasteaudit.records import CallRecord, RunRecord
from wasteaudit.scoring.engine import Scorer
from wasteaudit.scoring.runner import score_pending
from wasteaudit.storage.engine import create_engine_for
from wasteaudit.storage.models import AttemptRow, CallRow, DropRow, FindingRow, RunRow, ScoreRow
from wasteaudit.storage.retention import PRUNED, parse_age, prune_content, strip_evidence

calls_t, runs_t, findings_t, scores_t, attempts_t = (m.__table__ for m in (CallRow, RunRow, FindingRow, ScoreRow, AttemptRow))

OLD_CALLS, NEW_CALLS = 60, 20


def _old_week() -> tuple[str, float]:
    """An ISO week about 17 weeks ago, and a timestamp on its Tuesday."""
    day = (datetime.now(timezone.utc) - timedelta(days=120)).date()
    monday = day - timedelta(days=day.weekday())
    year, week, _ = monday.isocalendar()
    return f"{year}-W{week:02d}", datetime(monday.year, monday.month, monday.day, 9, tzinfo=timezone.utc).timestamp() + 86400


@pytest.fixture
def audited(db_url: str) -> tuple[str, str, list[Any], list[Any]]:
    """A scored database with 60 calls in an old week and 20 from two days ago."""
    week, at = _old_week()
    old = build_workload(OLD_CALLS, start=at)
    for record in old:  # quality feedback with text, which is content too
        if type(record).__name__ == "ScoreRecord":
            record.raw_value = {"comment": "the user liked the answer about Paris"}
    new = build_workload(NEW_CALLS, start=time.time() - 2 * 86400)
    store(db_url, old + new)
    assert score_pending(db_url, scorer=Scorer(embedder=None)) == OLD_CALLS + NEW_CALLS
    return db_url, week, old, new


def _rows(engine: Any, table: Any) -> dict[Any, dict[str, Any]]:
    key = table.c.id if "id" in table.c else None
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.select(table))]
    return {(r[key.name] if key is not None else (r["call_id"], r["index"])): r for r in rows}


def _comparable(report: dict[str, Any]) -> dict[str, Any]:
    """The report without what is about its own making or needs the deleted text (evidence strings)."""
    out = copy.deepcopy(report)
    out.pop("generated_at", None)
    for finding_call in out.get("top_findings") or []:
        for finding in finding_call.get("findings") or []:
            finding.pop("evidence", None)
    return out


def test_prune_deletes_old_content_and_keeps_figures_and_reports(audited, capsys):
    url, week, old, new = audited
    engine = create_engine_for(url)
    drops_t = DropRow.__table__
    hour = lambda t: datetime.fromtimestamp(t - t % 3600, timezone.utc)  # noqa: E731
    _, at = _old_week()
    with engine.begin() as conn:  # the writers' drop counts are figures: prune keeps them, old or new
        conn.execute(sa.insert(drops_t), [
            {"hour": hour(at), "reason": "queue_full", "writer_id": "a" * 32, "host": "h", "pid": 1, "records": 12},
            {"hour": hour(time.time()), "reason": "db_error", "writer_id": "b" * 32, "host": "h", "pid": 2, "records": 1},
        ])
    with engine.connect() as conn:
        drops0 = sorted(tuple(r) for r in conn.execute(sa.select(drops_t)).all())
    before_report = build_report(url, week=week)
    assert before_report["totals"]["calls"] == OLD_CALLS and before_report["totals"]["waste"]["tokens"] > 0
    assert before_report["dropped_records"] == 12
    calls0, runs0, findings0, scores0, attempts0 = (_rows(engine, t) for t in (calls_t, runs_t, findings_t, scores_t, attempts_t))
    old_ids = {r.id for r in old if isinstance(r, CallRecord)}
    old_runs = {r.id for r in old if isinstance(r, RunRecord)}
    assert any("text" in (f["evidence"] or {}) or f["subkind"] == "truncated" for f in findings0.values())

    # --dry-run counts and changes nothing
    assert main(["--database-url", url, "db", "prune", "--older-than", "90d", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would prune content older than" in out and f": {OLD_CALLS} calls, {len(old_runs)} runs" in out
    assert _rows(engine, calls_t) == calls0

    # small batches: many short transactions
    assert main(["--database-url", url, "db", "prune", "--older-than", "90d", "--batch-size", "7"]) == 0
    out = capsys.readouterr().out
    assert f"pruned content older than" in out and f": {OLD_CALLS} calls" in out
    batches = int(out.split("(")[1].split(" batches")[0])
    assert batches >= OLD_CALLS // 7 + len(old_runs) // 7

    calls1, runs1, findings1, scores1, attempts1 = (_rows(engine, t) for t in (calls_t, runs_t, findings_t, scores_t, attempts_t))
    content = ("input_messages", "system_instructions", "choices", "tool_definitions", "response_format")
    kept = ("input_tokens", "output_tokens", "cost_usd", "finish_reasons", "finish_category", "scored_version", "attempts", "started_at")
    for cid, row in calls1.items():
        if cid in old_ids:
            assert all(row[c] is None for c in content) and row["content_mode"] == PRUNED, row
        else:
            assert row == calls0[cid]  # recent calls untouched
        assert all(row[k] == calls0[cid][k] for k in kept)
    assert attempts1 == attempts0
    assert findings1.keys() == findings0.keys()
    for fid, finding in findings1.items():
        assert {k: v for k, v in finding.items() if k != "evidence"} == {k: v for k, v in findings0[fid].items() if k != "evidence"}
        if finding["call_id"] in old_ids:
            assert finding["evidence"]["content_pruned"] is True and "text" not in finding["evidence"]
        else:
            assert finding["evidence"] == findings0[fid]["evidence"]
    for rid, run in runs1.items():
        if rid in old_runs:
            assert run["return_value"] == "" and run["used_values"] is None  # use stays observable, its text is gone
        else:
            assert run == runs0[rid]
    assert all(s["raw_value"] is None for s in scores1.values() if s["run_id"] in old_runs)
    assert all(s == scores0[i] for i, s in scores1.items() if s["run_id"] not in old_runs)

    # The old week's report gives the same figures; a second prune has nothing left to do.
    assert _comparable(build_report(url, week=week)) == _comparable(before_report)
    with engine.connect() as conn:
        assert sorted(tuple(r) for r in conn.execute(sa.select(drops_t)).all()) == drops0
    assert prune_content(url, timedelta(days=90)).calls == 0


def test_rescore_leaves_pruned_calls_and_their_findings_alone(audited, capsys):
    url, week, old, _ = audited
    engine = create_engine_for(url)
    prune_content(engine, timedelta(days=90), batch_size=50)
    before = _rows(engine, findings_t)
    assert main(["--database-url", url, "score", "--rescore", "--rules-only"]) == 0
    assert f"scored {NEW_CALLS} calls" in capsys.readouterr().out
    after = _rows(engine, findings_t)
    old_ids = {r.id for r in old if isinstance(r, CallRecord)}
    assert {i: f for i, f in after.items() if f["call_id"] in old_ids} == {i: f for i, f in before.items() if f["call_id"] in old_ids}
    assert build_report(url, week=week)["totals"]["calls"] == OLD_CALLS


def test_ages_and_evidence_stripping():
    assert parse_age("90d") == timedelta(days=90) and parse_age("12w") == timedelta(weeks=12) and parse_age("36h") == timedelta(hours=36)
    for bad in ("90", "d", "-3d", "3 months", ""):
        with pytest.raises(ConfigError):
            parse_age(bad)
    stripped = strip_evidence({
        "reason": "boilerplate opener/closer", "rule": "phrase", "text": "I hope this helps!", "cosine": 0.93,
        "matching_call_id": "abc", "lines": [1, 2], "cue": "in summary", "nested": {"text": "secret", "n": 3},
    })
    assert stripped == {"reason": "boilerplate opener/closer", "rule": "phrase", "cosine": 0.93, "matching_call_id": "abc",
                        "lines": [1, 2], "nested": {"n": 3, "content_pruned": True}, "content_pruned": True}
    assert strip_evidence(None) is None


def test_prune_by_run_or_tag_removes_only_those_runs_and_their_child_runs(db_url, capsys):
    """An erasure request: one user's runs (by tag) or one run by id lose their text, with the
    calls of their nested runs; every other row is untouched and the week's figures stay."""
    records = build_workload(60, start=time.time() - 2 * 86400)
    runs = [r for r in records if isinstance(r, RunRecord)]
    assert len(runs) >= 8
    alice, alice_child, alice_staging, bob, other = runs[0], runs[1], runs[2], runs[3], runs[4]
    alice.tags = {"user": "alice"}
    alice_child.parent_id = alice.id  # nested @audit: untagged itself, pruned with its parent
    alice_child.tags = {"step": "summarise"}
    alice_staging.tags = {"user": "alice", "env": "staging"}
    bob.tags = {"user": "bob"}
    other.tags = {"user": "alice-2"}  # a prefix of the value must not match
    store(db_url, records)
    engine = create_engine_for(db_url)
    calls_of = {run.id: {r.id for r in records if isinstance(r, CallRecord) and r.run_id == run.id} for run in runs}
    assert all(calls_of[r.id] for r in (alice, alice_child, alice_staging, bob, other))
    calls0, runs0, scores0 = (_rows(engine, t) for t in (calls_t, runs_t, scores_t))
    since = datetime.fromtimestamp(records[0].started_at - 86400, timezone.utc).date().isoformat()
    until = (datetime.now(timezone.utc).date() + timedelta(days=1)).isoformat()
    report0 = build_report(db_url, since=since, until=until)

    # both tags must match: only the staging run
    assert main(["--database-url", db_url, "db", "prune", "--tag", "user=alice", "--tag", "env=staging", "--dry-run"]) == 0
    assert f"would prune content tagged user=alice, tagged env=staging: {len(calls_of[alice_staging.id])} calls, 1 runs" in capsys.readouterr().out

    assert main(["--database-url", db_url, "db", "prune", "--tag", "user=alice"]) == 0
    expected_runs = {alice.id, alice_child.id, alice_staging.id}
    expected_calls = set().union(*(calls_of[r] for r in expected_runs))
    out = capsys.readouterr().out
    assert f"pruned content tagged user=alice: {len(expected_calls)} calls, {len(expected_runs)} runs" in out

    assert main(["--database-url", db_url, "db", "prune", "--run", bob.id, "--older-than", "30d"]) == 0  # bob's run is 2 days old
    assert ": 0 calls, 0 runs" in capsys.readouterr().out
    assert main(["--database-url", db_url, "db", "prune", "--run", bob.id]) == 0
    assert f": {len(calls_of[bob.id])} calls, 1 runs" in capsys.readouterr().out
    expected_runs.add(bob.id)
    expected_calls |= calls_of[bob.id]

    calls1, runs1, scores1 = (_rows(engine, t) for t in (calls_t, runs_t, scores_t))
    for cid, row in calls1.items():
        if cid in expected_calls:
            assert row["content_mode"] == PRUNED and row["input_messages"] is None and row["choices"] is None
            assert row["output_tokens"] == calls0[cid]["output_tokens"] and row["cost_usd"] == calls0[cid]["cost_usd"]
        else:
            assert row == calls0[cid]
    for rid, run in runs1.items():
        if rid in expected_runs:
            assert run["return_value"] in ("", None) and run["used_values"] is None and run["tags"] == runs0[rid]["tags"]
        else:
            assert run == runs0[rid]
    for sid, score in scores1.items():
        assert score == scores0[sid] if score["run_id"] not in expected_runs else score["raw_value"] is None
    assert _comparable(build_report(db_url, since=since, until=until)) == _comparable(report0)


def test_prune_refuses_to_run_without_a_selector(db_url, capsys):
    assert main(["--database-url", db_url, "db", "prune"]) == 2  # usage
    assert "needs --older-than" in capsys.readouterr().err
    assert main(["--database-url", db_url, "db", "prune", "--tag", "user"]) == 1
    assert "KEY=VALUE" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        prune_content(db_url)
