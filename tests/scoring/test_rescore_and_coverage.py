"""What a scored call records about its scoring (use coverage, settings), and rescoring after a threshold change."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa
from scoring_builders import T0, call, run
from test_runner import db_url, findings, store  # noqa: F401  (db_url is a fixture)

from wasteaudit.scoring import Scorer, ScorerConfig
from wasteaudit.scoring.runner import score_pending, scored_elsewise
from wasteaudit.storage.engine import create_engine_for
from wasteaudit.storage.models import CallRow

REPEATED = "Keep the cache headers short because every proxy copies them."  # 10 words


def _calls_table(engine: Any) -> dict[str, Any]:
    with engine.connect() as conn:
        return {r.id: r for r in conn.execute(sa.select(CallRow.__table__))}


def _ledger(engine: Any) -> list[tuple[Any, ...]]:
    return sorted((f["call_id"], f["subkind"], f["tier"], f["tokens"], f["segment_start"], f["segment_end"]) for f in findings(engine))


def _records() -> list[Any]:
    now = time.time() - T0
    r = run(name="app.answer", returned="Bonjour tout le monde.", at=now - 60)
    used = call("Bonjour tout le monde.\n\nThis is the French for hello everyone, used until the evening.", run=r, at=now - 50)
    text = f"{REPEATED} Caching works per URL and per method. Validators make revalidation cheap. {REPEATED}"
    unrun = call(text, prompt="How should I set cache headers?", at=now - 40)
    return [r, used, unrun]


def test_each_scored_call_records_whether_use_was_observable_its_coverage_and_the_settings(db_url, rules_scorer):  # noqa: F811
    records = _records()
    store(db_url, records)
    engine = create_engine_for(db_url)
    assert score_pending(engine, scorer=rules_scorer) == 2
    rows = _calls_table(engine)
    used, unrun = rows[records[1].id], rows[records[2].id]
    assert used.use_observed is True and used.use_coverage == pytest.approx(1.0)
    assert unrun.use_observed is False and unrun.use_coverage == 0.0
    assert used.scorer_config == unrun.scorer_config == rules_scorer.fingerprint


def test_the_settings_fingerprint_changes_with_any_threshold_and_the_model():
    base = Scorer(embedder=None)
    assert Scorer(embedder=None).fingerprint == base.fingerprint
    assert Scorer(ScorerConfig(repeat_min_words=20), embedder=None).fingerprint != base.fingerprint
    assert Scorer(ScorerConfig(use_cosine=0.8), embedder=None).fingerprint != base.fingerprint
    assert len(base.fingerprint) == 16


def test_rescore_after_a_threshold_change_replaces_findings_and_is_idempotent(db_url, embedder, monkeypatch):  # noqa: F811
    records = _records()
    store(db_url, records)
    engine = create_engine_for(db_url)
    assert score_pending(engine, scorer=Scorer(embedder=embedder)) == 2
    before = _ledger(engine)
    assert any(row[1] == "repetition" and row[0] == records[2].id for row in before)  # the 10-word sentence repeats

    # Raise the minimum length of a counted repeat, then `wasteaudit score --rescore` twice.
    from wasteaudit.cli import main
    from wasteaudit.scoring import engine as engine_module
    from wasteaudit.scoring import runner

    stricter = ScorerConfig(repeat_min_words=20)
    monkeypatch.setattr(engine_module, "ScorerConfig", lambda: stricter)
    monkeypatch.setattr(runner, "_scorers", {})
    assert main(["--database-url", db_url, "score", "--rescore"]) == 0
    first = _ledger(engine)
    assert not any(row[1] == "repetition" for row in first)
    assert {row[:3] for row in first} == {row[:3] for row in before if row[1] != "repetition"}
    monkeypatch.setattr(runner, "_scorers", {})
    assert main(["--database-url", db_url, "score", "--rescore"]) == 0
    second = _ledger(engine)
    assert second == first and len(set(second)) == len(second)
    expected = Scorer(stricter, embedder=embedder).fingerprint
    assert {row.scorer_config for row in _calls_table(engine).values() if row.scored_version} == {expected}
    # Back on the default thresholds, both calls show up as scored under other settings.
    assert scored_elsewise(engine, expected) == 0
    assert scored_elsewise(engine, Scorer(ScorerConfig(), embedder=embedder).fingerprint) == 2
