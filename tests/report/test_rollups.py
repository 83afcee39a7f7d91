"""The report's rollups stay exact: after every kind of write, the report read from the rollups
equals the report read from the base tables (the oracle tests check the latter independently),
on SQLite and PostgreSQL.

Each test changes the database the way the product does (the writer, the scorer's updates,
retention, a repricing), then builds the report both ways.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from builders import PRICES, SCORER_VERSION, Dataset, monday, next_id
from wasteaudit.report import rollups
from wasteaudit.report.build import build
from wasteaudit.report.metrics import Span
from wasteaudit.report.period import resolve_period
from wasteaudit.storage.engine import create_engine_for
from wasteaudit.storage.models import CallRow, FindingRow, RollupDirtyRow, RollupRunRow, RunRow, ScoreRow

W46, W47, W48 = monday("2026-W46"), monday("2026-W47"), monday("2026-W48")
NOW = W48 + timedelta(days=2)
calls_t, findings_t, runs_t, scores_t, dirty_t = (
    CallRow.__table__, FindingRow.__table__, RunRow.__table__, ScoreRow.__table__, RollupDirtyRow.__table__,
)


def _dataset() -> Dataset:
    ds = Dataset()
    for week in (W46, W47):
        for i in range(40):
            at = week + timedelta(hours=4 * i + 1, minutes=7)
            ds.run(
                ("answer", "extract", "plan")[i % 3],
                at=at,
                quality=None if i % 5 == 0 else 0.5 + (i % 7) / 14,
                validation=(i % 4 != 0) if i % 6 == 0 else None,
                status="failed" if i % 11 == 0 else "ok",
                return_value=None if i % 3 == 0 else "result",
                calls=[
                    {"model": ("model-mid", "model-big")[i % 2], "provider": ("openai", "anthropic")[i % 2],
                     "input_tokens": 1500 + i, "output_tokens": 100 + 10 * i,
                     "waste": (("redundant", "repetition", 5 + i),) if i % 2 else (("failed", "truncated", 20),),
                     "possible": (("redundant", "filler", 3),), "scored": i % 9 != 0},
                    {"model": "model-mid", "output_tokens": 50 + i, "waste": (("unused", "not_in_result", 7),)},
                ][: 1 + i % 2],
            )
        for i in range(5):
            ds.call(at=week + timedelta(days=i, hours=3), model="mystery-model", output_tokens=40)
        ds.call(at=week + timedelta(days=1), function="wasteaudit.judge", model="model-mid", output_tokens=60)
    return ds


@pytest.fixture(scope="module")
def url(backend_url: str) -> str:
    _dataset().write(backend_url)
    return backend_url


@pytest.fixture
def engine(url: str) -> Any:
    eng = create_engine_for(url)
    yield eng
    eng.dispose()


def _report(engine: Any, use_rollups: bool, by: str = "function", **period: Any) -> dict[str, Any]:
    chosen = resolve_period(now=NOW, **(period or {"week": "2026-W47"}))
    report = build(engine, chosen, by=by, now=NOW, price_overrides=PRICES, use_rollups=use_rollups)
    report.pop("generated_at")
    return report


def _same(a: Any, b: Any, path: str = "$") -> None:
    """Equal documents; floats to 1e-9 relative (sums of per-day sums add in another order)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert set(a) == set(b), path
        for key in a:
            _same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (path, a, b)
    else:
        assert a == b, (path, a, b)


def _check(engine: Any, by: str = "function") -> dict[str, Any]:
    fast = _report(engine, True, by)
    _same(fast, _report(engine, False, by))
    return fast


def _dirty_days(engine: Any) -> set[str]:
    with engine.connect() as conn:
        return {str(d) for d in conn.execute(sa.select(dirty_t.c.day)).scalars()}


def test_report_from_rollups_equals_the_report_from_the_calls_for_every_breakdown(engine: Any) -> None:
    for by in ("function", "model", "provider"):
        report = _check(engine, by)
    assert report["totals"]["calls"] > 0 and report["totals"]["runs"] > 0 and report["previous"]["runs"] > 0
    # The span's days were re-aggregated and their markers consumed; rollup rows exist.
    assert not {d for d in _dirty_days(engine) if str(W46.date()) <= d < str(W48.date())}
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(RollupRunRow.__table__)).scalar() > 0


def test_the_rollup_passes_return_the_same_cells_and_run_rows_as_the_call_passes(engine: Any) -> None:
    from wasteaudit.report import metrics

    span = Span(W46, W47, W48)
    rollups.refresh(engine, span.start, span.end)
    with engine.connect() as conn:
        key = lambda r: (r.period, r.day, r.key)  # noqa: E731
        fast, slow = sorted(rollups.call_cube(conn, span), key=key), sorted(metrics.call_cube(conn, span), key=key)
        assert [(r.period, str(r.day), r.key, r.calls, r.output_tokens, r.scored_calls, r.cacheable_min_input) for r in fast] == [
            (r.period, str(r.day), r.key, r.calls, r.output_tokens, r.scored_calls, r.cacheable_min_input) for r in slow
        ]
        by_period: dict[Any, list[int]] = {}
        daily: dict[Any, int] = {}
        for r in metrics.waste_cube(conn, span):
            slot = by_period.setdefault((r.period, r.key, r.kind, r.subkind, r.tier), [0, 0])
            slot[0] += r.tokens
            slot[1] += r.findings
            if r.period == 1:
                daily[(str(r.day), r.kind, r.tier)] = daily.get((str(r.day), r.kind, r.tier), 0) + r.tokens
        assert {(r.period, r.key, r.kind, r.subkind, r.tier): [r.tokens, r.findings] for r in rollups.waste_cube(conn, span)} == by_period
        assert {(str(r.day), r.kind, r.tier): r.tokens for r in rollups.daily_waste(conn, span)} == daily
        for limit in (1, 3, 10):
            expected = [tuple(r) for r in conn.execute(metrics.top_ranking(W47, W48, limit))]
            got = rollups.top_ranking(conn, W47, W48, limit)
            assert got is not None and [(r["call_id"], r["tokens"], r["cost_usd"]) for r in got] == expected
        assert rollups.top_ranking(conn, W47, W48, rollups.TOP_PER_DAY + 1) is None

        def rows(chunks: Any) -> list[tuple[Any, ...]]:
            """Rows as the run-level figures read them: run values on primary rows only; NaN = None."""

            def value(v: Any) -> Any:
                return None if v is None or v != v else v

            out = []
            for c in chunks:
                for row in zip(c.period, c.function, c.model, c.provider, c.primary, c.cell_output_tokens, c.observable,
                               c.output_tokens, c.cost_usd, c.waste_tokens, c.q, c.failed):
                    head = (int(row[0]), *row[1:5], value(row[5]), bool(row[6]))
                    run = tuple(value(v) for v in row[7:11]) + (bool(row[11]),) if row[4] else ()
                    out.append((*head, *run))
            return sorted(out, key=repr)

        expected = rows(metrics.run_rows(conn, span))
        assert rows(rollups.run_rows(conn, span)) == expected
        # Runs cut across read chunks, and one period at a time, give the same rows; reads of one
        # row (each run alone: the one-row-per-run path and the grouping path) too.
        assert rows(rollups.run_rows(conn, span, chunk_size=3)) == expected
        assert rows(rollups.run_rows(conn, span, chunk_size=1)) == expected
        assert any(len(set(a.cell_run.tolist())) < len(a.cell_run) for a in rollups.run_arrays(conn, span))  # runs of 2 models
        assert sorted(rows(rollups.run_rows(conn, span, period=0, chunk_size=5)) + rows(rollups.run_rows(conn, span, period=1)), key=repr) == expected


def test_a_late_call_and_run_in_an_aggregated_day_are_counted(engine: Any, url: str) -> None:
    before = _check(engine)
    late = Dataset()
    late.run("answer", at=W47 + timedelta(days=2, hours=5), quality=0.95, model="model-big", provider="anthropic", output_tokens=777)
    late.call(at=W47 + timedelta(days=3), model="model-mid", output_tokens=33)
    late.write(url)
    after = _check(engine)
    assert after["totals"]["calls"] == before["totals"]["calls"] + 2
    assert after["totals"]["runs"] == before["totals"]["runs"] + 1
    assert after["totals"]["output_tokens"] == before["totals"]["output_tokens"] + 810


def test_rescoring_replaces_the_findings_in_the_rollups(engine: Any) -> None:
    before = _check(engine)
    with engine.begin() as conn:
        ids = conn.execute(
            sa.select(calls_t.c.id).where(calls_t.c.started_at >= W47, calls_t.c.scored_version == SCORER_VERSION).order_by(calls_t.c.id).limit(6)
        ).scalars().all()
        conn.execute(sa.update(calls_t).where(calls_t.c.id.in_(ids)).values(scored_version=SCORER_VERSION + 1))
        conn.execute(sa.insert(findings_t), [
            {"call_id": cid, "run_id": None, "scorer_version": SCORER_VERSION + 1, "kind": "failed", "subkind": "refusal",
             "tier": "confirmed", "tokens": 11, "cost_usd": None, "confidence": 1.0, "created_at": NOW}
            for cid in ids
        ])
    after = _check(engine)
    assert after["totals"]["waste"]["by_subkind"]["refusal"]["tokens"] == before["totals"]["waste"]["by_subkind"]["refusal"]["tokens"] + 66


def test_a_new_score_for_an_old_run_changes_its_quality(engine: Any) -> None:
    with engine.connect() as conn:
        run_id = conn.execute(
            sa.select(runs_t.c.id).where(runs_t.c.started_at >= W46, runs_t.c.started_at < W47, runs_t.c.status == "ok")
            .where(~sa.exists().where(scores_t.c.run_id == runs_t.c.id)).order_by(runs_t.c.id).limit(1)
        ).scalar_one()
    before = _check(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(scores_t).values(id=next_id("s"), run_id=run_id, name="quality", value=0.01, source="api", created_at=NOW))
    after = _check(engine)
    assert after["previous"]["quality"]["runs"] == before["previous"]["quality"]["runs"] + 1


def test_a_run_that_ends_failed_after_its_calls_were_aggregated(engine: Any) -> None:
    before = _check(engine)
    with engine.begin() as conn:
        run_id = conn.execute(
            sa.select(runs_t.c.id).where(runs_t.c.started_at >= W47, runs_t.c.status == "ok").order_by(runs_t.c.id).limit(1)
        ).scalar_one()
        conn.execute(sa.update(runs_t).where(runs_t.c.id == run_id).values(status="failed", return_value=None))
    after = _check(engine)
    assert after["totals"]["quality"]["failed_runs"] == before["totals"]["quality"]["failed_runs"] + 1


def test_repricing_changes_the_rolled_up_cost(engine: Any) -> None:
    before = _check(engine)
    with engine.begin() as conn:
        conn.execute(sa.update(calls_t).where(calls_t.c.started_at >= W47, calls_t.c.request_model == "model-big").values(cost_usd=calls_t.c.cost_usd * 2))
    after = _check(engine)
    assert after["totals"]["cost_usd"] > before["totals"]["cost_usd"]


def test_pruning_content_and_deleting_calls_keep_the_rollups_exact(engine: Any) -> None:
    from wasteaudit.storage.retention import prune_content

    _check(engine)
    assert prune_content(engine, W47 + timedelta(days=2)).calls > 0
    before = _check(engine)
    with engine.begin() as conn:
        doomed = conn.execute(sa.select(calls_t.c.id).where(calls_t.c.started_at >= W47, calls_t.c.run_id.is_(None),
                                                            calls_t.c.function.is_(None))).scalars().all()
        conn.execute(sa.delete(findings_t).where(findings_t.c.call_id.in_(doomed)))
        conn.execute(sa.delete(calls_t).where(calls_t.c.id.in_(doomed)))
    after = _check(engine)
    assert after["totals"]["calls"] == before["totals"]["calls"] - len(doomed) and doomed


def test_lease_updates_mark_nothing_and_a_new_call_marks_its_day(engine: Any, url: str) -> None:
    rollups.refresh(engine)
    assert _dirty_days(engine) == set()
    with engine.begin() as conn:
        conn.execute(sa.update(calls_t).where(calls_t.c.started_at >= W47).values(claimed_by="worker-1", lease_until=NOW))
    assert _dirty_days(engine) == set()
    late = Dataset()
    late.call(at=W46 + timedelta(days=4, hours=23, minutes=59), model="model-mid", output_tokens=5, scored=False)
    late.write(url)
    if engine.dialect.name == "postgresql":
        assert _dirty_days(engine) == {str((W46 + timedelta(days=4)).date())}
    else:  # no insert trigger on SQLite: the refresh counts the day's calls
        assert _dirty_days(engine) == set()
    assert rollups.refresh(engine, W46, W48) == 1
    assert rollups.refresh(engine, W46, W48) == 0


def test_a_judge_call_changes_no_rollup(engine: Any, url: str) -> None:
    rollups.refresh(engine)
    late = Dataset()
    late.call(at=W47 + timedelta(days=1), function="wasteaudit.judge", model="model-mid", output_tokens=5, scored=False)
    late.write(url)
    if engine.dialect.name == "sqlite":
        assert rollups.refresh(engine, W46, W48) == 0
    _check(engine)


def test_periods_not_aligned_to_days_read_the_calls(engine: Any) -> None:
    assert not rollups.aligned(Span(W46 + timedelta(hours=1), W47 + timedelta(hours=1), W48 + timedelta(hours=1)))
    assert rollups.aligned(Span(W46, W47, W48))
    fast = _report(engine, True, since=W47 + timedelta(hours=6), until=W48 + timedelta(hours=6))
    _same(fast, _report(engine, False, since=W47 + timedelta(hours=6), until=W48 + timedelta(hours=6)))


def test_a_database_that_cannot_be_written_gives_the_same_report(url: str, tmp_path: Any) -> None:
    if not url.startswith("sqlite"):
        pytest.skip("read-only copy: SQLite")
    import sqlite3

    source = url.split("///", 1)[1]
    copy = tmp_path / "ro.db"
    with sqlite3.connect(source) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    with sqlite3.connect(copy) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("INSERT INTO wasteaudit_rollup_dirty (day) VALUES (?)", (str(W47.date()),))
        conn.execute("DELETE FROM wasteaudit_rollup_calls")  # stale rollups must not be read
    ro = sa.create_engine(f"sqlite:///file:{copy}?mode=ro&uri=true")
    writable = create_engine_for(f"sqlite:///{copy}")
    try:
        _same(_report(ro, True), _report(writable, False))
    finally:
        ro.dispose()
        writable.dispose()
