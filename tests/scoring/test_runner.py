"""score_pending / run_worker against real databases (SQLite file, and PostgreSQL when reachable)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any, Iterator

import pytest
import sqlalchemy as sa
from scoring_builders import T0, call, run

from wasteaudit.scoring import SCORER_VERSION
from wasteaudit.scoring.runner import claim, run_worker, score_pending, unscored
from wasteaudit.storage.engine import create_engine_for
from wasteaudit.storage.models import CallRow, FindingRow
from wasteaudit.storage.writer import Writer

PG = os.environ.get("WASTEAUDIT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'wa.db'}"
        return
    try:
        import psycopg

        admin = psycopg.connect(PG.replace("postgresql://", "postgresql://", 1), autocommit=True, connect_timeout=3)
    except Exception as exc:
        if os.environ.get("WASTEAUDIT_REQUIRE_SERVICES") == "1":
            pytest.fail(f"PostgreSQL not reachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    schema = f"s_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    from sqlalchemy.engine import make_url

    yield make_url(PG).set(drivername="postgresql+psycopg").update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
    admin.close()


def store(url: str, records: list[Any]) -> None:
    writer = Writer(url, flush_interval=0.01)
    try:
        for record in records:
            assert writer.submit(record)
        assert writer.flush(timeout=20)
    finally:
        writer.shutdown(timeout=5)


def findings(engine: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(FindingRow.__table__))]


def _now_records() -> tuple[list[Any], Any]:
    para = "Regular exercise strengthens the heart and improves circulation throughout the body."
    r = run(name="app.translate", returned="Bonjour tout le monde.", at=time.time() - T0 - 60)
    a = call("Bonjour tout le monde.\n\nThis is the French for hello everyone, used until the evening.", run=r, at=time.time() - T0 - 50)
    b = call(f"{para} {para} {para}", at=time.time() - T0 - 40, model="gpt-4o")
    return [r, a, b], r


def test_pending_calls_are_scored_once_with_findings_and_cost(db_url, rules_scorer):
    records, _ = _now_records()
    store(db_url, records)
    engine = create_engine_for(db_url)
    assert unscored(engine) == 2
    assert score_pending(engine, scorer=rules_scorer, batch_size=10) == 2
    rows = findings(engine)
    kinds = sorted((r["subkind"], r["tier"]) for r in rows)
    assert ("not_in_result", "confirmed") in kinds and ("repetition", "confirmed") in kinds
    assert all(r["scorer_version"] == SCORER_VERSION for r in rows)
    rep = next(r for r in rows if r["subkind"] == "repetition")
    assert rep["cost_usd"] is not None and rep["cost_usd"] > 0  # gpt-4o is priced
    with engine.connect() as conn:
        states = conn.execute(sa.select(CallRow.__table__.c.scored_version, CallRow.__table__.c.claimed_by)).all()
    assert all(v == SCORER_VERSION and c is None for v, c in states)
    # nothing left: a second pass scores nothing and changes nothing
    assert score_pending(engine, scorer=rules_scorer) == 0
    assert len(findings(engine)) == len(rows)


def test_calls_of_a_running_run_wait_until_it_ends(db_url, rules_scorer):
    r = run(name="app.long", at=time.time() - T0 - 10)
    r.ended_at = None
    r.status = "running"
    c = call("Some answer here that is long enough.", run=r, at=time.time() - T0 - 5)
    store(db_url, [r, c])
    engine = create_engine_for(db_url)
    assert score_pending(engine, scorer=rules_scorer) == 0
    assert score_pending(engine, scorer=rules_scorer, run_timeout_s=1) == 1


def test_leases_are_exclusive_and_expired_leases_are_taken_over(db_url):
    records, _ = _now_records()
    store(db_url, records)
    engine = create_engine_for(db_url)
    first = claim(engine, "w1", 10, lease_s=300)
    assert len(first) == 2
    assert claim(engine, "w2", 10, lease_s=300) == []
    with engine.begin() as conn:
        conn.execute(sa.update(CallRow.__table__).values(lease_until=time.time() - 1))
    assert sorted(claim(engine, "w2", 10, lease_s=300)) == sorted(first)


def test_a_call_that_crashes_the_scorer_is_marked_and_the_batch_carries_on(db_url, rules_scorer, monkeypatch):
    records, _ = _now_records()
    store(db_url, records)
    engine = create_engine_for(db_url)
    bad_id = records[1].id
    from wasteaudit.scoring import engine as engine_module

    real = engine_module.detect_redundant

    def boom(view, *args, **kwargs):
        if view.id == bad_id:
            raise RuntimeError("detector bug")
        return real(view, *args, **kwargs)

    monkeypatch.setattr(engine_module, "detect_redundant", boom)
    assert score_pending(engine, scorer=rules_scorer) == 2
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(CallRow.__table__))}
    assert "detector bug" in rows[bad_id].score_error and rows[bad_id].scored_version is None
    assert rows[records[2].id].scored_version == SCORER_VERSION
    assert {f["call_id"] for f in findings(engine)} == {records[2].id}


def test_duplicates_are_found_against_the_stored_look_back_window(db_url, rules_scorer):
    answer = "The boiling point of water at sea level is 100 °C."
    old = call(answer, prompt="What is the boiling point of water?", at=time.time() - T0 - 3 * 86400)
    store(db_url, [old])
    engine = create_engine_for(db_url)
    assert score_pending(engine, scorer=rules_scorer) == 1
    from wasteaudit.scoring import Scorer

    fresh = Scorer(embedder=None)  # another worker: its window must come from the database
    new = call(answer, prompt="What is the boiling point of water?", at=time.time() - T0 - 10)
    store(db_url, [new])
    assert score_pending(engine, scorer=fresh) == 1
    dup = [f for f in findings(engine) if f["subkind"] == "duplicate_call"]
    assert [f["call_id"] for f in dup] == [new.id] and dup[0]["evidence"]["matching_call_id"] == old.id


def test_run_worker_scores_until_stopped(db_url, rules_scorer, monkeypatch):
    records, _ = _now_records()
    store(db_url, records)
    from wasteaudit.scoring import runner

    monkeypatch.setattr(runner, "_scorers", {})
    engine = create_engine_for(db_url)
    runner._scorers[id(engine)] = rules_scorer
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(run_worker(engine, stop_event=stop, poll_s=0.05)))
    thread.start()
    deadline = time.time() + 20
    while unscored(engine) and time.time() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(10)
    assert result == [2] and unscored(engine) == 0
